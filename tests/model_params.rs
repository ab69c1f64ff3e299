//! Parameter and buffer names, shapes and counts equal the official networks'.

mod common;
use common::*;
use sg2::model::{Discriminator, Generator};
use tch::nn::VarStore;
use tch::Device;

fn counts(vs: &VarStore, prefix: &str) -> (i64, i64) {
    let trainable: std::collections::HashSet<String> =
        vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).map(|(n, _)| n).collect();
    let (mut p, mut b) = (0, 0);
    for (name, t) in vs.variables() {
        if !name.starts_with(prefix) {
            continue;
        }
        if trainable.contains(&name) {
            p += t.numel() as i64;
        } else {
            b += t.numel() as i64;
        }
    }
    (p, b)
}

#[test]
fn counts_match_official_presets() {
    let params: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden("params.json")).unwrap()).unwrap();
    for (name, entry) in params.as_object().unwrap() {
        let kw = serde_json::json!({"G": entry["G_kwargs"], "D": entry["D_kwargs"]});
        let cfg = sg2::model::import::config_from_kwargs(&kw).unwrap();
        let gvs = VarStore::new(Device::Cpu);
        let g = Generator::new(&gvs.root(), &cfg);
        let dvs = VarStore::new(Device::Cpu);
        let _d = Discriminator::new(&dvs.root(), &cfg);
        let (gp, gb) = counts(&gvs, "");
        let (dp, db) = counts(&dvs, "");
        assert_eq!(gp, entry["G"].as_i64().unwrap(), "{name}: G parameters");
        assert_eq!(dp, entry["D"].as_i64().unwrap(), "{name}: D parameters");
        assert_eq!(counts(&gvs, "mapping.").0, entry["G_mapping"].as_i64().unwrap(), "{name}: G mapping");
        assert_eq!(counts(&gvs, "synthesis.").0, entry["G_synthesis"].as_i64().unwrap(), "{name}: G synthesis");
        assert_eq!(counts(&dvs, "mapping.").0, entry["D_mapping"].as_i64().unwrap(), "{name}: D mapping");
        assert_eq!(gb, entry["G_buffers"].as_i64().unwrap(), "{name}: G buffers");
        assert_eq!(db, entry["D_buffers"].as_i64().unwrap(), "{name}: D buffers");
        assert_eq!(g.num_ws(), entry["num_ws"].as_i64().unwrap(), "{name}: num_ws");
        assert_eq!(cfg.num_ws(), g.num_ws(), "{name}: config num_ws");
    }
}

#[test]
fn names_and_shapes_equal_the_official_state_dicts() {
    for net in ["tiny32", "tiny64"] {
        let cfg = golden_config(net);
        for (which, file) in [("G", "G"), ("D", "D")] {
            let vs = VarStore::new(Device::Cpu);
            if which == "G" {
                let _ = Generator::new(&vs.root(), &cfg);
            } else {
                let _ = Discriminator::new(&vs.root(), &cfg);
            }
            let (reference, _) =
                sg2::model::checkpoint::read_safetensors(&golden(&format!("{net}-{file}.safetensors"))).unwrap();
            let ours: std::collections::BTreeMap<String, Vec<i64>> =
                vs.variables().into_iter().map(|(n, t)| (n, t.size())).collect();
            let theirs: std::collections::BTreeMap<String, Vec<i64>> =
                reference.iter().map(|(n, t)| (n.clone(), t.size())).collect();
            assert_eq!(ours, theirs, "{net} {which}");
        }
    }
}

#[test]
fn config_f_32_totals_as_published() {
    let cfg: sg2::config::Config =
        sg2::config::load(&root().join("configs/config-f.toml"), &["model.resolution=32".into()]).unwrap();
    let gvs = VarStore::new(Device::Cpu);
    let _g = Generator::new(&gvs.root(), &cfg.model);
    let dvs = VarStore::new(Device::Cpu);
    let _d = Discriminator::new(&dvs.root(), &cfg.model);
    assert_eq!(counts(&gvs, "").0, 21_523_475);
    assert_eq!(counts(&dvs, "").0, 21_507_073);
}
