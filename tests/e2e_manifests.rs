//! The Argo Workflows manifests in deploy/argo: valid against Argo's own models (deploy/argo/validate.py, which uses
//! the `hera` package), internally consistent, and every sg2 command line in them accepted by sg2's parser.

mod common;
use clap::Parser;
use common::{python, root};
use serde_json::Value;
use sg2::cli::{Cli, Command};
use std::path::{Path, PathBuf};

/// Runs the validator on `files` (none: every manifest); returns (exit ok, its JSON report).
fn validate(files: &[&Path]) -> (bool, Value) {
    let out = std::process::Command::new(python())
        .arg(root().join("deploy/argo/validate.py"))
        .arg("--json")
        .args(files)
        .output()
        .expect("run python3 deploy/argo/validate.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("validator output is not JSON ({e}); stderr: {stderr} (run scripts/setup.sh)"));
    (out.status.success(), report)
}

fn problems(report: &Value) -> Vec<String> {
    report["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect()
}

fn commands(report: &Value) -> Vec<Vec<String>> {
    report["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["argv"].as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_string()).collect())
        .collect()
}

fn parse(argv: &[String]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(argv)
}

#[test]
fn manifests_validate_and_cover_both_workflows() {
    let (ok, report) = validate(&[]);
    assert!(ok && problems(&report).is_empty(), "{:#?}", problems(&report));
    let files: Vec<&str> = report["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert!(files.iter().any(|f| f.ends_with("prepare-data.yaml")), "{files:?}");
    assert!(files.iter().any(|f| f.ends_with("train-compare.yaml")), "{files:?}");
    let cmds = commands(&report);
    let subcommands: std::collections::BTreeSet<String> =
        cmds.iter().map(|a| a.iter().skip(1).find(|w| !w.starts_with('-') && *w != "cpu").unwrap().clone()).collect();
    for s in ["dataset-tool", "train", "generate", "metrics", "import"] {
        assert!(subcommands.contains(s), "no `sg2 {s}` in the manifests: {subcommands:?}");
    }
}

#[test]
fn every_sg2_command_in_the_manifests_parses() {
    let (_, report) = validate(&[]);
    let cmds = commands(&report);
    assert!(cmds.len() >= 8, "{cmds:?}");
    let (mut trains, mut generates, mut metrics) = (0, 0, 0);
    for argv in &cmds {
        let cli = parse(argv).unwrap_or_else(|e| panic!("sg2 rejects `{}`:\n{e}", argv.join(" ")));
        // The workflow parameters' defaults reach the commands.
        match cli.command {
            Command::Train(a) => {
                trains += 1;
                assert_eq!(a.kimg, Some(1000.0));
                assert_eq!(a.seed, Some(0));
                assert_eq!(a.config, PathBuf::from("/opt/sg2/configs/config-f.toml"));
                assert_eq!(a.data, PathBuf::from("/data/datasets/cat"));
            }
            Command::Generate(a) => {
                generates += 1;
                assert_eq!(a.seeds.as_deref(), Some("6600-6605"));
                assert_eq!(a.truncation_psi, 0.5);
                assert!(a.grid.is_some());
            }
            Command::Metrics(a) => {
                metrics += 1;
                assert_eq!(a.metrics, "fid50k_full,ppl2_wend");
                assert_eq!(a.detector_dir, Some(PathBuf::from("/data/detectors")));
            }
            _ => {}
        }
    }
    // Train with and without --resume; generate and metrics are templates shared by both networks.
    assert_eq!((trains, generates, metrics), (2, 1, 1), "{cmds:?}");
    let resumed = cmds.iter().filter(|a| a.windows(2).any(|w| w[0] == "--resume" && w[1] == "latest")).count();
    assert_eq!(resumed, 1);
}

/// Writes `text` with `from` replaced by `to` into `dir`, returning the path.
fn mutated(dir: &Path, name: &str, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join("deploy/argo/train-compare.yaml")).unwrap();
    assert!(text.contains(from), "{from:?} not in the manifest");
    let p = dir.join(name);
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    p
}

#[test]
fn validator_reports_broken_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        // (file, expected problem)
        (mutated(d, "key.yaml", "volumeMounts:", "volumeMount:"), "volumeMount: unknown field"),
        (mutated(d, "type.yaml", "limit: \"2\"", "limit: [2]"), "retryStrategy.limit"),
        (mutated(d, "dep.yaml", "depends: train\n", "depends: trian\n"), "unknown task 'trian'"),
        (mutated(d, "param.yaml", "parameters.seeds}}", "parameters.seedz}}"), "{{workflow.parameters.seedz}}"),
        (mutated(d, "entry.yaml", "entrypoint: compare-dag", "entrypoint: main"), "spec.entrypoint 'main'"),
        (mutated(d, "kind.yaml", "kind: Workflow", "kind: Workflw"), "kind 'Workflw'"),
        (mutated(d, "gpu.yaml", "nvidia.com/gpu: \"1\"", "example.com/fpga: \"1\""), "without a GPU limit"),
        (
            mutated(
                d,
                "vol.yaml",
                "- name: data\n      persistentVolumeClaim",
                "- name: store\n      persistentVolumeClaim",
            ),
            "mounts unknown volume 'data'",
        ),
        (
            mutated(
                d,
                "input.yaml",
                "              parameters:\n                - name: dir",
                "              parameters:\n                - name: folder",
            ),
            "does not pass input 'dir'",
        ),
    ];
    for (file, expected) in &cases {
        let (ok, report) = validate(&[file]);
        let p = problems(&report);
        assert!(!ok, "{}: accepted", file.display());
        assert!(p.iter().any(|x| x.contains(expected)), "{}: expected {expected:?} in {p:#?}", file.display());
    }
}

#[test]
fn a_misspelt_sg2_option_passes_the_schema_but_not_the_parser() {
    let dir = tempfile::tempdir().unwrap();
    let file = mutated(dir.path(), "opt.yaml", "--trunc {{workflow", "--truncation {{workflow");
    let (ok, report) = validate(&[&file]);
    assert!(ok, "{:#?}", problems(&report));
    let bad: Vec<_> = commands(&report).into_iter().filter(|a| parse(a).is_err()).collect();
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains(&"--truncation".to_string()));
}

/// Paths under /opt/sg2 used by the manifests come from COPY lines of the image's final stage, from files that exist.
#[test]
fn image_provides_the_paths_the_manifests_use() {
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let final_stage = dockerfile.rsplit("\nFROM ").next().unwrap();
    let copies: Vec<(String, String)> = final_stage
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(w.len(), 3, "{l}");
            (w[1].to_string(), w[2].to_string())
        })
        .collect();
    assert!(!copies.is_empty());
    for (src, _) in &copies {
        assert!(root().join(src).exists(), "Dockerfile copies missing {src}");
    }
    // The build context excludes everything but what the COPY lines of every stage name.
    let ignore = std::fs::read_to_string(root().join("deploy/Dockerfile.dockerignore")).unwrap();
    let allowed: Vec<&str> =
        ignore.lines().filter_map(|l| l.strip_prefix('!')).map(|l| l.trim_end_matches('/')).collect();
    for l in dockerfile.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        let w: Vec<&str> = l.split_whitespace().collect();
        for src in &w[1..w.len() - 1] {
            assert!(allowed.contains(&src.trim_end_matches('/')), "{src} is not in the build context: {allowed:?}");
        }
    }
    let mut used = Vec::new();
    for f in ["prepare-data.yaml", "train-compare.yaml"] {
        let text = std::fs::read_to_string(root().join("deploy/argo").join(f)).unwrap();
        for w in text.split(|c: char| c.is_whitespace() || c == '"') {
            if w.starts_with("/opt/sg2/") {
                used.push(w.to_string());
            }
        }
    }
    assert!(used.iter().any(|u| u.ends_with("configs/config-f.toml")), "{used:?}");
    for u in &used {
        let from = copies.iter().find_map(|(src, dest)| {
            let dest = dest.trim_end_matches('/');
            let rest = u.strip_prefix(dest)?.trim_start_matches('/');
            Some(if rest.is_empty() { root().join(src) } else { root().join(src).join(rest) })
        });
        let from = from.unwrap_or_else(|| panic!("{u}: no COPY in the final stage provides it"));
        assert!(from.exists(), "{u}: {} does not exist", from.display());
    }
}
