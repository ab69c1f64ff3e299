//! Result lines and the JSONL log, as the official tools write them.

use super::MetricResult;
use crate::util::format_time;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `network-final time 45m 18s fid50k_full 386.3678`.
pub fn result_line(network: &str, r: &MetricResult) -> String {
    format!("{network} time {} {} {:.4}", format_time(r.seconds), r.name, r.value)
}

/// `metric-<metric>.jsonl` in `dir`.
pub fn jsonl_path(dir: &Path, metric: &str) -> PathBuf {
    dir.join(format!("metric-{metric}.jsonl"))
}

/// Appends one JSON line per metric (its results together, as the official `report_metric`) to
/// `metric-<metric>.jsonl` in `dir`. `snapshot` names the evaluated file.
pub fn append_jsonl(dir: &Path, snapshot: &str, results: &[MetricResult]) -> Result<Vec<PathBuf>> {
    append_jsonl_ranks(dir, snapshot, results, 1)
}

/// [`append_jsonl`] for results computed by `num_gpus` processes (the official field of that name).
pub fn append_jsonl_ranks(
    dir: &Path,
    snapshot: &str,
    results: &[MetricResult],
    num_gpus: usize,
) -> Result<Vec<PathBuf>> {
    // Consecutive results of one metric form one line (a metric listed twice is evaluated, and logged, twice).
    let mut groups: Vec<Vec<&MetricResult>> = vec![];
    for r in results {
        match groups.last_mut() {
            Some(g) if g[0].metric == r.metric => g.push(r),
            _ => groups.push(vec![r]),
        }
    }
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    let mut written = vec![];
    for rs in groups {
        let m = rs[0].metric.as_str();
        let values: serde_json::Map<String, serde_json::Value> =
            rs.iter().map(|r| (r.name.clone(), serde_json::json!(r.value))).collect();
        let line = serde_json::json!({
            "results": values,
            "metric": m,
            "total_time": rs[0].seconds,
            "total_time_str": format_time(rs[0].seconds),
            "num_gpus": num_gpus,
            "snapshot_pkl": snapshot,
            "timestamp": now,
        });
        let path = jsonl_path(dir, m);
        // One short append per line: a reader never sees a partial line.
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("{}: cannot open for appending", path.display()))?;
        f.write_all(format!("{line}\n").as_bytes()).with_context(|| format!("{}: write failed", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_line_and_jsonl() {
        let r = MetricResult {
            name: "fid50k_full".into(),
            value: 386.36781,
            seconds: 2718.0,
            metric: "fid50k_full".into(),
            higher_is_better: false,
        };
        assert_eq!(result_line("network-final", &r), "network-final time 45m 18s fid50k_full 386.3678");
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str, v| MetricResult {
            name: n.into(),
            value: v,
            seconds: 3.0,
            metric: "pr5k3_full".into(),
            higher_is_better: true,
        };
        append_jsonl(dir.path(), "net.safetensors", &[p("pr5k3_full_precision", 0.5), p("pr5k3_full_recall", 0.25)])
            .unwrap();
        append_jsonl(dir.path(), "net.safetensors", &[r]).unwrap();
        append_jsonl(dir.path(), "net2.safetensors", &[p("pr5k3_full_precision", 0.75)]).unwrap();
        let text = std::fs::read_to_string(dir.path().join("metric-pr5k3_full.jsonl")).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["results"]["pr5k3_full_recall"], 0.25);
        assert_eq!(lines[1]["snapshot_pkl"], "net2.safetensors");
        assert!(dir.path().join("metric-fid50k_full.jsonl").is_file());
    }
}
