//! Transfer learning: `--init` starts a new run from another network's weights (an sg2 snapshot or an imported
//! official network) and refuses one that does not fit; Freeze-D keeps the first D layers untouched.

mod common;
use common::training::*;
use common::*;
use sg2::model::checkpoint;
use sg2::model::NoiseMode;
use sg2::train::{train, TrainOptions, Trainer};
use tch::{Device, Kind, Tensor};

#[test]
fn init_from_an_imported_official_network_reproduces_its_images() {
    let dir = tempfile::tempdir().unwrap();
    let net = import_golden("tiny32", dir.path());
    let cfg = sg2::config::Config { model: golden_config("tiny32"), ..Default::default() };
    let mut tr = Trainer::new(&cfg, Device::Cpu).unwrap();
    tr.init_from(&checkpoint::load(&net).unwrap()).unwrap();
    let io = golden_io("tiny32");
    let img = tch::no_grad(|| tr.g_ema.forward(&io["z"], None, 1.0, NoiseMode::Const));
    assert_close("G_ema after --init", &img, &io["img_const_psi1.0"]);
    let logits = tch::no_grad(|| tr.d.forward(&io["reals"], None));
    assert_close("D after --init", &logits, &io["d_logits_real"]);
    assert_eq!((tr.opt_g.step, tr.opt_d.step, tr.state.cur_nimg), (0, 0, 0));
}

#[test]
fn init_starts_a_new_run_and_refuses_a_network_that_does_not_fit() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 12);
    let out = dir.path().join("runs");
    let first = train(TrainOptions::new(tiny_config(&[]), "tiny", &data, &out)).unwrap();
    let snap = first.snapshot.unwrap();

    let mut o = TrainOptions::new(tiny_config(&[]), "tiny", &data, &out);
    o.init = Some(snap.clone());
    let rep = train(o).unwrap();
    let run = rep.run_dir.unwrap();
    assert_ne!(Some(&run), first.run_dir.as_ref(), "a new run folder");
    assert_eq!(rep.cur_nimg, 16, "from kimg 0 to total_kimg");
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("initialised G, D and G_ema from"), "{log}");

    let before = std::fs::read_dir(&out).unwrap().count();
    // A diverged network (NaN in D) is refused by name.
    let (mut tensors, meta) = sg2::model::checkpoint::read_safetensors(&snap).unwrap();
    let key = tensors.keys().find(|k| k.starts_with("D.")).unwrap().clone();
    let _ = tensors.get_mut(&key).unwrap().fill_(f64::NAN);
    let nan = dir.path().join("nan.safetensors");
    sg2::model::checkpoint::write_safetensors(&nan, &tensors.into_iter().collect::<Vec<_>>(), &meta).unwrap();
    let mut o = TrainOptions::new(tiny_config(&[]), "tiny", &data, &out);
    o.init = Some(nan);
    let err = format!("{:#}", train(o).unwrap_err());
    assert!(err.starts_with("--init ") && err.contains(&format!("{key} holds NaN")), "{err}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), before, "no run folder made");

    let mut o = TrainOptions::new(tiny_config(&["model.fmap_max=8"]), "tiny", &data, &out);
    o.init = Some(snap);
    let err = format!("{:#}", train(o).unwrap_err());
    assert!(err.starts_with("--init ") && err.contains("does not fit"), "{err}");
    assert!(err.contains("has shape [") && err.contains("expected ["), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), before, "no run folder made");
}

#[test]
fn freeze_d_keeps_the_first_layers_bit_identical_while_the_rest_trains() {
    // tiny_config is 8x8 resnet: b8.fromrgb, b8.conv0, b8.conv1, b8.skip; freeze the first three.
    let cfg = tiny_config(&["training.freeze_d=3"]);
    let mut tr = Trainer::new(&cfg, Device::Cpu).unwrap();
    let snapshot = |tr: &Trainer| -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = tr.d_vs.variables().into_iter().map(|(k, t)| (k, t.copy())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let before = snapshot(&tr);
    let reals = Tensor::randint(256, [4, 1, 8, 8], (Kind::Uint8, Device::Cpu));
    for _ in 0..5 {
        tr.step(&reals, None).unwrap();
    }
    let after = snapshot(&tr);
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        let same = a.equal(b);
        let frozen = ["b8.fromrgb.", "b8.conv0.", "b8.conv1."].iter().any(|p| name.starts_with(p));
        if name.ends_with("resample_filter") {
            continue;
        }
        assert_eq!(same, frozen, "{name}: unchanged = {same}");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.safetensors");
    tr.save(&path, "x").unwrap();
    let (t, _) = checkpoint::read_safetensors(&path).unwrap();
    assert!(!t.keys().any(|k| k.starts_with("opt_D.b8.conv0.")), "no optimizer state for frozen layers");
    assert!(t.keys().any(|k| k.starts_with("opt_D.b8.skip.")));
    let err = sg2::config::parse("", "x.toml", &["model.resolution=8".into(), "training.freeze_d=30".into()]);
    assert!(err.unwrap_err().to_string().contains("training.freeze_d = 30: D has"));
}
