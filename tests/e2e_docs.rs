//! The walkthroughs (docs/LSUN_CATS.md, docs/CUSTOM_DATA.md, docs/DISTRIBUTED.md) use only real options: every
//! `sg2` line parses, every `--set` and TOML snippet is a valid config, and every make variable and Argo parameter
//! exists. The README's official-network commands run as written on the golden pickles.

mod common;
use clap::Parser;
use common::root;
use sg2::cli::{Cli, Command};
use std::path::PathBuf;

const DOCS: [&str; 3] = ["docs/LSUN_CATS.md", "docs/CUSTOM_DATA.md", "docs/DISTRIBUTED.md"];

/// Fenced blocks of the given language, as text.
fn blocks(doc: &str, lang: &str) -> Vec<String> {
    let mut out = Vec::new();
    // None: outside a block; Some(None): in a block of another language; Some(Some(text)): collecting.
    let mut cur: Option<Option<String>> = None;
    for line in doc.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("```") {
            match cur.take() {
                Some(Some(b)) => out.push(b),
                Some(None) => {}
                None => cur = Some((rest.trim() == lang).then(String::new)),
            }
            continue;
        }
        if let Some(Some(b)) = cur.as_mut() {
            b.push_str(t);
            b.push('\n');
        }
    }
    out
}

/// Shell words of a command line, quotes removed, up to the first operator or comment.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quote, mut any) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true
            }
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, '|' | ';' | '>' | '&' | '#') if cur.is_empty() => break,
            (None, c) => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Command lines of the bash blocks of every walkthrough (continuations joined).
fn command_lines() -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for doc in DOCS {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        for b in blocks(&text, "bash") {
            for line in b.replace("\\\n", " ").lines() {
                let w = words(line);
                if !w.is_empty() {
                    out.push((doc.to_string(), w));
                }
            }
        }
    }
    out
}

#[test]
fn every_sg2_line_parses_and_its_config_overrides_are_valid() {
    let lines: Vec<_> = command_lines().into_iter().filter(|(_, w)| w[0] == "sg2").collect();
    assert!(lines.len() >= 20, "{}", lines.len());
    let mut seen = std::collections::BTreeSet::new();
    for (doc, argv) in &lines {
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{doc}: sg2 rejects `{}`:\n{e}", argv.join(" ")));
        seen.insert(argv[1].clone());
        let (config, sets) = match &cli.command {
            Command::Train(a) => (Some(a.config.clone()), a.set.clone()),
            _ => {
                let sets: Vec<String> = argv.windows(2).filter(|w| w[0] == "--set").map(|w| w[1].clone()).collect();
                let config = argv.windows(2).find(|w| w[0] == "--config").map(|w| PathBuf::from(&w[1]));
                (config, sets)
            }
        };
        if let Some(config) = config {
            sg2::config::load(&root().join(&config), &sets)
                .unwrap_or_else(|e| panic!("{doc}: `{}`: {e}", argv.join(" ")));
        }
    }
    for s in ["dataset-tool", "train", "generate", "metrics", "import", "info", "style-mix", "interpolate"] {
        assert!(seen.contains(s), "no `sg2 {s}` in the walkthroughs");
    }
}

#[test]
fn toml_snippets_are_valid_configs() {
    let mut n = 0;
    for doc in DOCS {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        for b in blocks(&text, "toml") {
            sg2::config::parse(&b, doc, &[]).unwrap_or_else(|e| panic!("{doc}: {e}\n{b}"));
            n += 1;
        }
    }
    assert!(n >= 2, "{n}");
}

#[test]
fn make_variables_and_argo_parameters_exist() {
    let makefile = std::fs::read_to_string(root().join("Makefile")).unwrap();
    let declared = |v: &str| makefile.lines().any(|l| l.starts_with(v) && l[v.len()..].trim_start().starts_with("?="));
    let (mut makes, mut argos) = (0, 0);
    for (doc, w) in command_lines() {
        if w[0] == "make" {
            makes += 1;
            for a in &w[1..] {
                if let Some((var, _)) = a.split_once('=') {
                    assert!(declared(var), "{doc}: make variable {var} is not in the Makefile");
                }
            }
        }
        if w[0] == "argo" && w[1] == "submit" {
            argos += 1;
            let manifest = std::fs::read_to_string(root().join(&w[2])).unwrap();
            for p in w.windows(2).filter(|p| p[0] == "-p").map(|p| p[1].split_once('=').unwrap().0) {
                assert!(manifest.contains(&format!("- name: {p}\n")), "{doc}: {} has no parameter {p}", w[2]);
            }
        }
    }
    assert!(makes >= 2 && argos >= 2, "{makes} {argos}");
}

#[test]
fn the_word_splitter_follows_the_shell() {
    assert_eq!(
        words(r#"sg2 generate --network "$NET" --seeds 1-3 | tee x"#),
        ["sg2", "generate", "--network", "$NET", "--seeds", "1-3"]
    );
    assert_eq!(words("make -j A='x y' B= # note"), ["make", "-j", "A=x y", "B="]);
    assert_eq!(words("a && b"), ["a"]);
}

/// The README's official-network section runs as written, on the golden pickles in place of the cat network: the
/// pickle download is replaced by a copy, every `sg2` line but the projection runs with the built binary, and the
/// TF-noise pictures are the reference ones.
#[test]
fn readme_official_network_commands_run_on_the_golden_pickles() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = blocks(&readme, "bash").into_iter().find(|b| b.contains("sg2 import ")).expect("no sg2 import block");
    let lines: Vec<Vec<String>> = block.lines().map(words).filter(|w| !w.is_empty()).collect();
    let io = sg2::model::checkpoint::read_safetensors(&root().join("tests/golden/tiny32-io.safetensors")).unwrap().0;
    for kind in ["tf", "ada"] {
        let dir = tempfile::tempdir().unwrap();
        let mut ran = vec![];
        for w in &lines {
            match w[0].as_str() {
                "export" => assert!(w[1].contains("target/release"), "{w:?}"),
                // A download (tests/metrics_* cover the detectors).
                s if s.starts_with("scripts/") => assert!(root().join(s).is_file(), "README runs a missing {s}"),
                // 1000 projection steps are too slow for a test: these lines must parse; tests/cli_project.rs runs
                // the projector and renders its w.
                "sg2" if w[1] == "project" || w.iter().any(|a| a == "--projected-w") => {
                    Cli::try_parse_from(w).unwrap_or_else(|e| panic!("sg2 rejects `{}`:\n{e}", w.join(" ")));
                }
                "curl" => {
                    let url = w.iter().find(|a| a.starts_with("https://")).expect("curl without a URL");
                    let name = url.rsplit('/').next().unwrap();
                    let pkl = root().join(format!("tests/golden/tiny32-{kind}.pkl"));
                    std::fs::copy(pkl, dir.path().join(name)).unwrap();
                }
                // The ada network is the TF one: the slow GIF and grid lines run once, on the TF pickle.
                "sg2" if kind == "ada" && ["style-mix", "interpolate"].contains(&w[1].as_str()) => {}
                "sg2" => {
                    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sg2"))
                        .args(&w[1..])
                        .current_dir(dir.path())
                        .output()
                        .unwrap();
                    let err = String::from_utf8_lossy(&out.stderr);
                    assert!(out.status.success(), "{kind}: `{}` failed: {err}", w.join(" "));
                    ran.push(w[1].clone());
                }
                other => panic!("README: unexpected command {other}"),
            }
        }
        let expected: &[&str] = if kind == "tf" {
            &["import", "info", "generate", "style-mix", "interpolate"]
        } else {
            &["import", "info", "generate"]
        };
        for s in expected {
            assert!(ran.contains(&s.to_string()), "README does not run sg2 {s}");
        }
        // The generate line's pictures: seeds 6600-6605 with TF noise at psi 0.5.
        let gen = lines.iter().find(|w| w.get(1).map(String::as_str) == Some("generate")).unwrap();
        let outdir = dir.path().join(&gen[gen.iter().position(|a| a == "--outdir").unwrap() + 1]);
        let imgs: Vec<tch::Tensor> = (6600..=6605)
            .map(|s| {
                let img = image::open(outdir.join(format!("seed{s:04}.png"))).unwrap().to_rgb8();
                tch::Tensor::from_slice(img.as_raw()).reshape([1, 32, 32, 3])
            })
            .collect();
        let got = tch::Tensor::cat(&imgs, 0).to_kind(tch::Kind::Int);
        let want = io["uint8_tfnoise_psi0.5"].narrow(0, 2, 6).to_kind(tch::Kind::Int);
        let off = (got - want).abs().gt(1).sum(tch::Kind::Int64).int64_value(&[]);
        assert_eq!(off, 0, "{kind}: the README's generate line does not give the reference pictures");
    }
}
