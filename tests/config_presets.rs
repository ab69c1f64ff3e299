//! Every preset parses and validates; bad configs give file, key and reason; CLI exit codes and help.

mod common;
use common::*;
use std::path::PathBuf;

fn configs() -> Vec<PathBuf> {
    let dir = root().join("configs");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn every_preset_validates() {
    let names: Vec<String> = configs().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for want in ["config-e.toml", "config-f.toml", "paper256.toml", "cifar.toml", "fmnist32.toml"] {
        assert!(names.contains(&want.to_string()), "missing preset {want}");
    }
    for p in configs() {
        sg2::config::load(&p, &[]).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}

#[test]
fn presets_carry_the_official_values() {
    let load = |n: &str| sg2::config::load(&root().join("configs").join(n), &[]).unwrap();
    let f = load("config-f.toml");
    assert_eq!((f.model.fmap_base, f.model.fmap_max, f.model.mapping_layers), (16384, 512, 8));
    assert_eq!((f.training.r1_gamma, f.training.pl_weight, f.training.style_mixing_prob), (10.0, 2.0, 0.9));
    assert_eq!((f.training.g_lr, f.training.batch, f.training.ema_kimg), (0.002, 32, 10.0));
    let e = load("config-e.toml");
    assert_eq!((e.model.fmap_base, e.training.r1_gamma), (8192, 100.0));
    let c = load("cifar.toml");
    assert_eq!((c.model.mapping_layers, c.training.pl_weight, c.training.style_mixing_prob), (2, 0.0, 0.0));
    assert_eq!(c.model.d_architecture, sg2::config::Architecture::Orig);
    let p = load("paper256.toml");
    assert_eq!((p.model.fmap_base, p.training.r1_gamma, p.training.batch, p.model.mbstd_group), (8192, 1.0, 64, 8));
    use sg2::config::AugmentMode;
    assert_eq!((p.augment.mode, p.augment.pipe.as_str(), p.augment.target), (AugmentMode::Ada, "bgc", 0.6));
    assert_eq!((c.augment.mode, f.augment.mode), (AugmentMode::Ada, AugmentMode::Noaug));
    // --cfg=auto at 256x256 on one GPU, with ADA.
    let s = load("small-data.toml");
    assert_eq!((s.training.batch, s.model.mapping_layers, s.model.fmap_base, s.training.ema_kimg), (16, 2, 8192, 5.0));
    assert!((s.training.r1_gamma - 0.0002 * 256.0 * 256.0 / 16.0).abs() < 1e-12);
    assert_eq!((s.augment.mode, s.augment.interval, s.augment.kimg), (AugmentMode::Ada, 4, 500.0));
}

fn bad(text: &str, overrides: &[&str]) -> String {
    let ov: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    sg2::config::parse(text, "configs/x.toml", &ov).unwrap_err().to_string()
}

#[test]
fn each_kind_of_bad_config_names_file_key_and_reason() {
    assert_eq!(bad("", &["training.r1_gamma=-1"]), "--set training.r1_gamma=-1: training.r1_gamma = -1: must be >= 0");
    assert_eq!(
        bad("[model]\nresolution = 48\n", &[]),
        "configs/x.toml: model.resolution = 48: must be a power of two from 8 to 8192"
    );
    assert!(bad("[model]\nfmap_bas = 1\n", &[]).contains("fmap_bas"));
    assert!(bad("[trainin]\n", &[]).contains("trainin"));
    assert!(bad("[training]\nbatch = \"big\"\n", &[]).contains("batch"));
    assert!(bad("[model\n", &[]).starts_with("configs/x.toml: "));
    assert!(bad("", &["training.g_lr_schedule=[[10, 0.1], [5, 0.2]]"]).contains("sorted by kimg"));
    assert!(bad("", &["model.g_architecture=\"fancy\""]).contains("g_architecture"));
    assert!(bad("", &["model.resolution"]).contains("section.key=value"));
    assert_eq!(
        bad("", &["training.pl_decay=2"]),
        "--set training.pl_decay=2: training.pl_decay = 2: must be in [0, 1]"
    );
    assert_eq!(bad("[training]\npl_decay = 2\n", &[]), "configs/x.toml: training.pl_decay = 2: must be in [0, 1]");
    assert!(bad("[logging]\ncollapse_factor = 0.5\n", &[]).contains("must be above 1, or 0 (off)"));
}

#[test]
fn info_prints_resolved_config_with_overrides() {
    let cfg = root().join("configs/fmnist32.toml");
    let (ok, out, err) =
        run_sg2(&["info", "--config", cfg.to_str().unwrap(), "--set", "training.r1_gamma=5", "--config-only"]);
    assert!(ok, "{err}");
    assert!(out.contains("r1_gamma = 5.0"), "{out}");
    let (ok, _, err) = run_sg2(&["info", "--config", cfg.to_str().unwrap(), "--set", "training.r1_gamma=-2"]);
    assert!(!ok);
    assert_eq!(err.trim(), "error: --set training.r1_gamma=-2: training.r1_gamma = -2: must be >= 0");
    let (ok, _, err) = run_sg2(&["info", "--config", "/no/such.toml"]);
    assert!(!ok && err.contains("/no/such.toml: cannot read"), "{err}");
}

#[test]
fn cli_help_and_exit_codes() {
    let (ok, out, _) = run_sg2(&["--help"]);
    assert!(ok);
    for cmd in ["dataset-tool", "train", "generate", "style-mix", "interpolate", "metrics", "import", "info", "bench"] {
        assert!(out.contains(cmd), "help lists {cmd}");
        let (ok, sub, err) = run_sg2(&[cmd, "--help"]);
        assert!(ok, "{cmd} --help: {err}");
        assert!(sub.contains("Usage"), "{cmd}");
    }
    let (ok, _, err) = run_sg2(&["no-such-command"]);
    assert!(!ok && err.contains("no-such-command"));
    let (ok, _, err) = run_sg2(&["--device", "tpu", "info", "--config", "configs/fmnist32.toml"]);
    assert!(!ok && err.contains("--device tpu"), "{err}");
}

#[test]
fn libtorch_runs_a_convolution_on_cpu() {
    let x = tch::Tensor::ones([1, 2, 5, 5], (tch::Kind::Float, tch::Device::Cpu));
    let w = tch::Tensor::ones([3, 2, 3, 3], (tch::Kind::Float, tch::Device::Cpu));
    let y = x.conv2d(&w, None::<tch::Tensor>, [1, 1], [1, 1], [1, 1], 1);
    assert_eq!(y.size(), vec![1, 3, 5, 5]);
    assert_eq!(y.double_value(&[0, 0, 2, 2]), 18.0); // 2 channels x 9 taps
    assert_eq!(y.double_value(&[0, 0, 0, 0]), 8.0); // corner: 2 x 4 taps
}

/// D's minibatch-std needs the batch split into groups of min(mbstd_group, batch); a batch that does not split
/// would fail deep in libtorch after the run folder exists.
#[test]
fn batch_must_split_into_minibatch_std_groups() {
    assert_eq!(
        bad("", &["training.batch=6"]),
        "--set training.batch=6: training.batch = 6: must be a multiple of model.mbstd_group = 4 (D's minibatch-std groups)"
    );
    for ok in [["training.batch=8", "model.mbstd_group=4"], ["training.batch=3", "model.mbstd_group=4"]] {
        let ov: Vec<String> = ok.iter().map(|s| s.to_string()).collect();
        sg2::config::parse("", "x.toml", &ov).unwrap();
    }
    // Without minibatch-std any batch works.
    sg2::config::parse("", "x", &["training.batch=6".into(), "model.mbstd_features=0".into()]).unwrap();

    let cfg = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/fmnist32.toml");
    let (ok, _, err) = run_sg2(&["info", "--config", cfg.to_str().unwrap(), "--set", "training.batch=10"]);
    assert!(!ok && err.trim().lines().count() == 1, "{err}");
    assert!(
        err.contains("--set training.batch=10: training.batch = 10: must be a multiple of model.mbstd_group = 4"),
        "{err}"
    );
    let t = tempfile::tempdir().unwrap();
    let runs = t.path().join("runs");
    let (ok, _, err) = run_sg2(&[
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--set",
        "training.batch=10",
        "--data",
        t.path().to_str().unwrap(),
        "--outdir",
        runs.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("training.batch = 10"), "{err}");
    assert!(!runs.exists(), "a run folder was created");

    // Official kwargs with groups of 3: the imported config gets a batch that splits.
    let kw = serde_json::json!({"G": {"z_dim": 8, "w_dim": 8, "img_resolution": 8, "img_channels": 3},
        "D": {"epilogue_kwargs": {"mbstd_group_size": 3}}});
    let m = sg2::model::import::config_from_kwargs(&kw).unwrap();
    assert_eq!(m.mbstd_group, 3);
    // Integers beyond 32 bits are refused with their value, not wrapped.
    let kw = serde_json::json!({"G": {"z_dim": 4294967360u64, "w_dim": 8, "img_resolution": 8, "img_channels": 3}});
    let e = sg2::model::import::config_from_kwargs(&kw).unwrap_err().to_string();
    assert!(e.contains("z_dim = 4294967360: too large"), "{e}");
    let kw = serde_json::json!({"G": {"z_dim": 8, "w_dim": 8, "img_resolution": 8, "img_channels": 3},
        "D": {"epilogue_kwargs": {"mbstd_group_size": 0}}});
    let err = sg2::model::import::config_from_kwargs(&kw).unwrap_err().to_string();
    assert!(err.contains("model.mbstd_group = 0: must be >= 1"), "{err}");
    // A kwarg of the wrong type is refused by its path, never replaced by the default (which would build another
    // network); null is Python's None, the official default of the optional ones.
    let with = |path: &[&str], v: serde_json::Value| {
        let mut kw = serde_json::json!({"G": {"z_dim": 8, "w_dim": 8, "img_resolution": 8, "img_channels": 3,
            "mapping_kwargs": {}, "synthesis_kwargs": {}}, "D": {}});
        let (last, parents) = path.split_last().unwrap();
        let mut node = &mut kw;
        for p in parents {
            node = node.get_mut(*p).unwrap();
        }
        node[*last] = v;
        sg2::model::import::config_from_kwargs(&kw).map_err(|e| e.to_string())
    };
    for (path, v, want) in [
        (
            &["G", "synthesis_kwargs", "conv_clamp"][..],
            serde_json::json!("256"),
            "G.synthesis_kwargs.conv_clamp = \"256\": must be a number",
        ),
        (&["G", "synthesis_kwargs", "conv_clamp"], serde_json::json!(true), "conv_clamp = true: must be a number"),
        (
            &["G", "synthesis_kwargs", "architecture"],
            serde_json::json!(3),
            "G.synthesis_kwargs.architecture = 3: must be a string",
        ),
        (
            &["G", "mapping_kwargs", "lr_multiplier"],
            serde_json::json!("0.5"),
            "G.mapping_kwargs.lr_multiplier = \"0.5\": must be a number",
        ),
        (&["D", "architecture"], serde_json::json!(["resnet"]), "D.architecture = [\"resnet\"]: must be a string"),
        (
            &["G", "synthesis_kwargs", "resample_filter"],
            serde_json::json!("1,3,3,1"),
            "resample_filter = \"1,3,3,1\": must be a list",
        ),
        (&["G", "z_dim"], serde_json::json!(8.5), "G.z_dim = 8.5: must be a non-negative integer"),
    ] {
        let err = with(path, v).unwrap_err();
        assert!(err.contains(want), "{path:?}: {err}");
    }
    let m = with(&["G", "synthesis_kwargs", "conv_clamp"], serde_json::Value::Null).unwrap();
    assert_eq!(m.conv_clamp, None);
    let m = with(&["G", "synthesis_kwargs", "conv_clamp"], serde_json::json!(256)).unwrap();
    assert_eq!(m.conv_clamp, Some(256.0));
    assert_eq!(with(&["G", "mapping_kwargs", "lr_multiplier"], serde_json::json!(0.5)).unwrap().mapping_lr_mul, 0.5);
}
