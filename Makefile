# sg2 end to end on one machine, as file targets:
#   dataset -> train -> {generate, metrics}                      our network   (OUT/ours)
#   PRETRAINED=net.pkl: import -> {generate, metrics}            an official one (OUT/pretrained)
# `make -j` runs independent steps in parallel; `make compare` prints both networks' metrics side by side.
#
#   make -j2                      Fashion-MNIST at 32x32 with configs/fmnist32.toml (a short CPU run)
#   make -j CREATE=create_lsun SOURCE=cat.zip RESOLUTION=256 MAX_IMAGES=1000 CONFIG=configs/config-f.toml \
#        KIMG=1000 PRETRAINED=stylegan2-cat-config-f.pkl
#   make help                     the variables and targets

SG2          ?= target/release/sg2
SG2_FLAGS    ?=
CREATE       ?= create_mnist
SOURCE       ?= /usr/share/datasets/fashion-mnist
RESOLUTION   ?= 32
MAX_IMAGES   ?=
DATA         ?= data/$(basename $(notdir $(SOURCE)))-$(RESOLUTION)
CONFIG       ?= configs/fmnist32.toml
KIMG         ?=
SEED         ?= 0
TRAIN_ARGS   ?=
SEEDS        ?= 6600-6605
TRUNC        ?= 0.5
METRICS      ?= fid50k_full,ppl2_wend
SG2_HOME     ?= $(HOME)/.cache/sg2
DETECTOR_DIR ?= $(SG2_HOME)/detectors
PRETRAINED   ?=
OUT          ?= out/e2e

OURS := $(OUT)/ours
PRE  := $(OUT)/pretrained
RUNS := $(OUT)/runs
# The binary is built by setup only when it is the default one (SG2=/path/to/sg2 is used as it is).
SG2_DEP := $(filter target/release/sg2,$(SG2))
# A re-run continues the newest snapshot instead of starting over.
RESUME := $(if $(wildcard $(RUNS)/*/network-snapshot-*.safetensors),--resume latest)
# Metrics need the detector files; without them the networks are still trained and sampled.
HAVE_DETECTORS := $(wildcard $(DETECTOR_DIR)/*)
NETS := ours $(if $(PRETRAINED),pretrained)

.PHONY: all ours pretrained dataset train import generate metrics compare clean help
.DELETE_ON_ERROR:

all: $(NETS)
ifeq ($(HAVE_DETECTORS),)
	@echo "metrics skipped ($(METRICS)): no detector files in $(DETECTOR_DIR); put them there or pass DETECTOR_DIR=DIR"
endif
	@$(MAKE) --no-print-directory compare

ours: $(OURS)/grid.png $(if $(HAVE_DETECTORS),$(OURS)/metrics.txt)
pretrained: $(PRE)/grid.png $(if $(HAVE_DETECTORS),$(PRE)/metrics.txt)
dataset: $(DATA)/manifest.json
train: $(OURS)/network-final.safetensors
import: $(PRE)/network-final.safetensors
generate: $(addprefix $(OUT)/,$(addsuffix /grid.png,$(NETS)))
metrics: $(if $(HAVE_DETECTORS),$(addprefix $(OUT)/,$(addsuffix /metrics.txt,$(NETS))))

target/release/sg2:
	bash scripts/setup.sh

# The manifest is written last, so its presence means a complete dataset; --resume continues an interrupted build.
$(DATA)/manifest.json: | $(SG2_DEP)
	$(SG2) $(SG2_FLAGS) dataset-tool $(CREATE) --source $(SOURCE) --dest $(DATA) --resolution $(RESOLUTION) $(if $(MAX_IMAGES),--max-images $(MAX_IMAGES)) --resume

$(OURS)/network-final.safetensors: $(DATA)/manifest.json $(CONFIG) | $(SG2_DEP)
	@mkdir -p $(OURS)
	$(SG2) $(SG2_FLAGS) train --config $(CONFIG) --data $(DATA) --outdir $(RUNS) $(if $(KIMG),--kimg $(KIMG)) --seed $(SEED) $(TRAIN_ARGS) $(RESUME)
	cp "$$(ls $(RUNS)/*/network-snapshot-*.safetensors | sort | tail -n 1)" $@.tmp
	mv $@.tmp $@

# sg2 reads the official pickle itself (TensorFlow or ada), no Python needed.
$(PRE)/network-final.safetensors: $(PRETRAINED) | $(SG2_DEP)
	$(SG2) $(SG2_FLAGS) import $(PRETRAINED) --out $@

# The grid is written after the per-seed PNGs, so it marks a complete generation.
$(OUT)/%/grid.png: $(OUT)/%/network-final.safetensors | $(SG2_DEP)
	$(SG2) $(SG2_FLAGS) generate --network $< --seeds $(SEEDS) --trunc $(TRUNC) --outdir $(OUT)/$*/images --grid $@

$(OUT)/%/metrics.txt: $(OUT)/%/network-final.safetensors $(DATA)/manifest.json | $(SG2_DEP)
	$(SG2) $(SG2_FLAGS) metrics --network $< --data $(DATA) --metrics $(METRICS) --detector-dir $(DETECTOR_DIR) > $@.tmp
	mv $@.tmp $@
	@cat $@

# Metric lines read "<network> time <t> <metric> <value>"; one row per metric, one column per network.
compare:
	@for n in ours pretrained; do f=$(OUT)/$$n/metrics.txt; if [ -f $$f ]; then sed "s/^/$$n /" $$f; fi; done | \
	awk '$$3 == "time" { k = $$(NF-1); if (!(k in seen)) { seen[k] = 1; order[++n] = k }; v[$$1, k] = $$NF } \
	     END { printf "%-16s %12s %12s\n", "metric", "ours", "pretrained"; \
	           for (i = 1; i <= n; i++) { k = order[i]; a = v["ours", k]; b = v["pretrained", k]; \
	             printf "%-16s %12s %12s\n", k, (a == "" ? "-" : a), (b == "" ? "-" : b) } \
	           if (n == 0) print "(no metrics yet)" }'

clean:
	rm -rf $(OUT)

help:
	@echo "targets: all (default) ours pretrained dataset train import generate metrics compare clean"
	@echo "variables (now):"
	@echo "  SG2=$(SG2)  SG2_FLAGS=$(SG2_FLAGS)"
	@echo "  CREATE=$(CREATE)  SOURCE=$(SOURCE)  RESOLUTION=$(RESOLUTION)  MAX_IMAGES=$(MAX_IMAGES)  DATA=$(DATA)"
	@echo "  CONFIG=$(CONFIG)  KIMG=$(KIMG) (empty: the config's total_kimg)  SEED=$(SEED)  TRAIN_ARGS=$(TRAIN_ARGS)"
	@echo "  SEEDS=$(SEEDS)  TRUNC=$(TRUNC)  METRICS=$(METRICS)  DETECTOR_DIR=$(DETECTOR_DIR)"
	@echo "  PRETRAINED=$(PRETRAINED) (an official .pkl; empty: our network only)  OUT=$(OUT)"
