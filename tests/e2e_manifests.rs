//! The Argo Workflows manifests in deploy/argo: valid against Argo's own models (deploy/argo/validate.py, which uses
//! the `hera` package), the Kubernetes objects of their resource templates checked too, internally consistent, and
//! every sg2 command line in them accepted by sg2's parser (with the torchrun variables of multi-machine workers).

mod common;
use clap::Parser;
use common::{python, root};
use serde_json::Value;
use sg2::cli::{Cli, Command};
use sg2::dist::DistEnv;
use std::collections::BTreeMap;
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

/// The commands of the manifest whose file name ends with `file`, each with its container's environment (empty for
/// Argo script steps).
fn commands_in(report: &Value, file: &str) -> Vec<(Vec<String>, BTreeMap<String, String>)> {
    report["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["file"].as_str().unwrap().ends_with(file))
        .map(|c| {
            let argv = c["argv"].as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_string()).collect();
            let env = c["env"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect())
                .unwrap_or_default();
            (argv, env)
        })
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
    assert!(files.iter().any(|f| f.ends_with("train-multinode.yaml")), "{files:?}");
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
                assert_eq!(a.metrics.as_deref(), Some("fid50k_full,ppl2_wend"));
                assert_eq!(a.detector_dir, Some(PathBuf::from("/data/detectors")));
            }
            _ => {}
        }
    }
    // train-compare trains with and without --resume (generate and metrics are templates shared by both networks),
    // and so do train-multinode's workers.
    assert_eq!((trains, generates, metrics), (4, 1, 1), "{cmds:?}");
    let resumes = |a: &Vec<String>| a.windows(2).any(|w| w[0] == "--resume" && w[1] == "latest");
    for file in ["train-compare.yaml", "train-multinode.yaml"] {
        let trains: Vec<_> =
            commands_in(&report, file).into_iter().map(|(a, _)| a).filter(|a| a[1] == "train").collect();
        assert_eq!(trains.len(), 2, "{file}: {trains:?}");
        assert_eq!(trains.iter().filter(|a| resumes(a)).count(), 1, "{file}: {trains:?}");
    }
}

/// The indexed Job's workers: their environment, with RANK as the Job sets it for pod 0 and the last pod, is what
/// sg2's torchrun reader accepts, one worker per machine, all meeting at pod 0's name; the per-machine multi-GPU
/// variant in the manifest's comment parses too.
#[test]
fn multinode_workers_get_torchrun_variables() {
    let (ok, report) = validate(&[&root().join("deploy/argo/train-multinode.yaml")]);
    assert!(ok, "{:#?}", problems(&report));
    let cmds = commands_in(&report, "train-multinode.yaml");
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    for (argv, env) in &cmds {
        let Command::Train(a) = parse(argv).unwrap().command else { panic!("{argv:?}: not sg2 train") };
        assert!(!a.launch.launches(), "{argv:?}: one worker per pod, no launcher");
        assert!(a.outdir.starts_with("$e/runs"), "{argv:?}");
        assert_eq!(
            env.get("RANK").map(String::as_str),
            Some("fieldRef:metadata.annotations['batch.kubernetes.io/job-completion-index']")
        );
        let world: usize = env["WORLD_SIZE"].parse().unwrap();
        assert_eq!(world, 2, "the `nodes` default");
        for rank in [0, world - 1] {
            let get = |k: &str| if k == "RANK" { Some(rank.to_string()) } else { env.get(k).cloned() };
            let d = DistEnv::from_vars(get).unwrap_or_else(|e| panic!("rank {rank}: {e:#}")).unwrap();
            assert_eq!((d.rank, d.local_rank, d.world, d.master_port), (rank, 0, world, 29500));
            // <job>-0.<headless service>: the Job and the Service are named after the workflow.
            let (pod0, svc) = d.master_addr.split_once('.').unwrap();
            assert_eq!(pod0, "sg2-train-multinode-x7k2q-0");
            assert_eq!(svc, "sg2-train-multinode-x7k2q-ranks");
        }
        assert_eq!(env.get("SG2_DIST_TIMEOUT").map(String::as_str), Some("1800"));
    }

    let text = std::fs::read_to_string(root().join("deploy/argo/train-multinode.yaml")).unwrap();
    let line = text.lines().find(|l| l.contains("sg2 train --nproc-per-node")).expect("the multi-GPU variant");
    let line = line.trim_start_matches(['#', ' ']).replace("$JOB_COMPLETION_INDEX", "1");
    let line = line.replace("$MASTER_ADDR", "pod-0.ranks").replace("$MASTER_PORT", "29500");
    let argv: Vec<String> = line
        .split_whitespace()
        .map(|w| {
            match w {
                "G" => "8",
                "N" => "2",
                w => w,
            }
            .to_string()
        })
        .collect();
    let Command::Train(a) = parse(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}")).command else { panic!() };
    assert_eq!((a.launch.nproc_per_node, a.launch.nnodes, a.launch.node_rank), (8, 2, 1));
    assert_eq!((a.launch.master_addr.as_deref(), a.launch.master_port), (Some("pod-0.ranks"), Some(29500)));
}

/// Writes train-compare.yaml with `from` replaced by `to` into `dir`, returning the path.
fn mutated(dir: &Path, name: &str, from: &str, to: &str) -> PathBuf {
    mutated_file("train-compare.yaml", dir, name, from, to)
}

/// Writes deploy/argo/`file` with the first `from` replaced by `to` into `dir`, returning the path.
fn mutated_file(file: &str, dir: &Path, name: &str, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join("deploy/argo").join(file)).unwrap();
    assert!(text.contains(from), "{from:?} not in {file}");
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

/// The checks of the Service and the indexed Job that train-multinode.yaml's resource templates create.
#[test]
fn validator_reports_broken_multinode_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = |name: &str, from: &str, to: &str| mutated_file("train-multinode.yaml", d, name, from, to);
    let cases = [
        (m("mode.yaml", "completionMode: Indexed", "completionMode: NonIndexed"), "expected 'Indexed'"),
        (m("addr.yaml", "- name: MASTER_ADDR", "- name: MASTER_HOST"), "MASTER_ADDR is not set"),
        (
            m("sub.yaml", "subdomain: \"{{workflow.name}}-ranks\"", "subdomain: \"{{workflow.name}}-workers\""),
            "subdomain 'sg2-train-multinode-x7k2q-workers' is not a Service the workflow creates",
        ),
        (m("headless.yaml", "clusterIP: None", "clusterIP: \"\""), "is not headless"),
        (m("par.yaml", "parallelism: {{workflow", "parallelism: 1 #{{workflow"), "parallelism 1 != spec.completions 2"),
        (m("backoff.yaml", "backoffLimit: 0", "backoffLimit: 4"), "spec.backoffLimit is 4, expected 0"),
        (m("rank.yaml", "fieldPath: metadata.annotations", "fieldPath: metadata.name #"), "not the pod's completion"),
        (m("world.yaml", "value: \"{{workflow.parameters.nodes}}\"", "value: \"4\""), "WORLD_SIZE is '4'"),
        (m("field.yaml", "completionMode:", "completionMod:"), "spec.completionMod: unknown field"),
        (m("gpu.yaml", "nvidia.com/gpu: \"1\"", "example.com/fpga: \"1\""), "without a GPU limit"),
        (m("param.yaml", "parameters.port}}\n", "parameters.prot}}\n"), "{{workflow.parameters.prot}}"),
        (m("cond.yaml", "status.succeeded == {{", "status.succeeded > 0 #{{"), "is not 'status.succeeded == 2'"),
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
    for f in ["prepare-data.yaml", "train-compare.yaml", "train-multinode.yaml"] {
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
