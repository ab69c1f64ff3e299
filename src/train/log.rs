//! What a run reports: the console (tick lines, a progress bar on a terminal), `log.txt` (everything printed),
//! `stats.jsonl` (one record per tick) and TensorBoard scalars (step = images shown).

use super::tensorboard::EventWriter;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use tch::{Kind, Tensor};

/// Per-tick sums of per-sample statistics, kept on the device so the hot loop never waits for it.
#[derive(Default)]
pub struct StatSums {
    sums: BTreeMap<&'static str, (Tensor, i64)>,
}

impl StatSums {
    pub fn add(&mut self, name: &'static str, values: &Tensor) {
        let s = values.detach().sum(Kind::Double);
        let n = values.numel() as i64;
        match self.sums.get_mut(name) {
            Some((acc, count)) => {
                let _ = acc.g_add_(&s);
                *count += n;
            }
            None => {
                self.sums.insert(name, (s, n));
            }
        }
    }

    /// Means since the last call (one host sync), then starts over.
    pub fn take_means(&mut self) -> BTreeMap<String, f64> {
        let out = self.sums.iter().map(|(k, (s, n))| (k.to_string(), s.double_value(&[]) / *n as f64)).collect();
        self.sums.clear();
        out
    }

    /// [`StatSums::take_means`] over the samples of every rank of `dist` (a collective: every rank calls it with
    /// the same names, which the same phases give).
    pub fn take_means_across(&mut self, dist: &crate::dist::Dist) -> anyhow::Result<BTreeMap<String, f64>> {
        if dist.world == 1 || self.sums.is_empty() {
            return Ok(self.take_means());
        }
        let sums: Vec<Tensor> = self.sums.values().map(|(s, _)| s.to_device(tch::Device::Cpu)).collect();
        let counts: Vec<f64> = self.sums.values().map(|(_, n)| *n as f64).collect();
        let all = Tensor::cat(&[Tensor::stack(&sums, 0), Tensor::from_slice(&counts)], 0);
        dist.sum_(&[&all])?;
        let v = Vec::<f64>::try_from(&all)?;
        let k = counts.len();
        let out = self.sums.keys().enumerate().map(|(i, name)| (name.to_string(), v[i] / v[k + i])).collect();
        self.sums.clear();
        Ok(out)
    }
}

/// The official tick line: `tick 12  kimg 48.0  time 1h 02m  sec/tick 310.2  sec/kimg 6.46  maintenance 0.3
/// cpumem 4.1` (and `gpumem` on CUDA). Small kimg values get three decimals so tiny runs still read.
pub struct TickLine {
    pub tick: u64,
    pub cur_nimg: u64,
    pub total_sec: f64,
    pub sec_per_tick: f64,
    pub sec_per_kimg: f64,
    pub maintenance: f64,
    pub cpumem: f64,
    pub gpumem: Option<f64>,
    /// The augmentation probability, when augmenting.
    pub augment: Option<f64>,
}

impl std::fmt::Display for TickLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kimg = self.cur_nimg as f64 / 1000.0;
        let kimg_s = if kimg < 10.0 { format!("{kimg:.3}") } else { format!("{kimg:.1}") };
        write!(
            f,
            "tick {}  kimg {kimg_s}  time {}  sec/tick {:.1}  sec/kimg {:.2}  maintenance {:.1}  cpumem {:.2}",
            self.tick,
            crate::util::format_time(self.total_sec),
            self.sec_per_tick,
            self.sec_per_kimg,
            self.maintenance,
            self.cpumem
        )?;
        if let Some(g) = self.gpumem {
            write!(f, "  gpumem {g:.2}")?;
        }
        if let Some(p) = self.augment {
            write!(f, "  augment {p:.3}")?;
        }
        Ok(())
    }
}

/// Resident memory of this process in GiB (Linux; 0 elsewhere).
pub fn cpu_mem_gib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    pages * 4096.0 / (1u64 << 30) as f64
}

/// The peak resident memory of this process in GiB (`VmHWM`; Linux, 0 elsewhere).
pub fn peak_cpu_mem_gib() -> f64 {
    parse_vm_hwm(&std::fs::read_to_string("/proc/self/status").unwrap_or_default())
}

/// `VmHWM:  123456 kB` of /proc/<pid>/status, in GiB.
pub fn parse_vm_hwm(status: &str) -> f64 {
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kb / (1u64 << 20) as f64
}

/// This process's GPU memory in GiB as `nvidia-smi` reports it (what the caching allocator holds; libtorch's C API
/// offers Rust no `max_memory_allocated`, the official figure). None off CUDA or without nvidia-smi. Called once a
/// tick, so the subprocess costs nothing that matters.
pub fn gpu_mem_gib(device: tch::Device) -> Option<f64> {
    if !device.is_cuda() {
        return None;
    }
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
        .output()
        .ok()?;
    parse_compute_apps(&String::from_utf8_lossy(&out.stdout), std::process::id())
}

/// Sums the MiB of `pid`'s rows in `nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits`.
pub fn parse_compute_apps(text: &str, pid: u32) -> Option<f64> {
    let mib: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            let (p, m) = l.split_once(',')?;
            (p.trim().parse::<u32>().ok()? == pid).then(|| m.trim().parse::<f64>().ok())?
        })
        .collect();
    (!mib.is_empty()).then(|| mib.iter().sum::<f64>() / 1024.0)
}

pub struct RunLog {
    log: std::fs::File,
    stats: std::fs::File,
    stats_path: std::path::PathBuf,
    pub tb: EventWriter,
    bar: ProgressBar,
    /// Also print to stdout (false in tests that only want the files).
    pub echo: bool,
}

fn append(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("{}: cannot open", path.display()))
}

impl RunLog {
    /// Opens (appending) `log.txt` and `stats.jsonl` in `run_dir` and a new TensorBoard event file.
    pub fn open(run_dir: &Path, total_nimg: u64, echo: bool) -> Result<RunLog> {
        let bar = if echo && std::io::stderr().is_terminal() {
            let b = ProgressBar::with_draw_target(Some(total_nimg), ProgressDrawTarget::stderr());
            b.set_style(crate::util::progress_style(crate::util::Progress::Kimg));
            b
        } else {
            ProgressBar::hidden()
        };
        Ok(RunLog {
            log: append(&run_dir.join("log.txt"))?,
            stats: append(&run_dir.join("stats.jsonl"))?,
            stats_path: run_dir.join("stats.jsonl"),
            tb: EventWriter::create(run_dir)?,
            bar,
            echo,
        })
    }

    /// Prints a line and appends it to log.txt.
    pub fn line(&mut self, text: &str) -> Result<()> {
        if self.echo {
            self.bar.suspend(|| println!("{text}"));
        }
        writeln!(self.log, "{text}").context("log.txt: write failed")?;
        self.log.flush().context("log.txt: write failed")
    }

    pub fn progress(&self, cur_nimg: u64) {
        self.bar.set_position(cur_nimg);
        self.bar.set_message(format!("{:.3}", cur_nimg as f64 / 1000.0));
    }

    pub fn finish_progress(&self) {
        self.bar.finish_and_clear();
    }

    /// One stats.jsonl record and the same values as TensorBoard scalars at step `cur_nimg`.
    pub fn record(&mut self, cur_nimg: u64, values: &BTreeMap<String, f64>) -> Result<()> {
        let mut obj = serde_json::Map::new();
        for (k, v) in values {
            obj.insert(k.clone(), serde_json::json!(v));
            self.tb.scalar(k, *v, cur_nimg as i64)?;
        }
        obj.insert("cur_nimg".into(), serde_json::json!(cur_nimg));
        let ts =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        obj.insert("timestamp".into(), serde_json::json!(ts));
        writeln!(self.stats, "{}", serde_json::Value::Object(obj)).context("stats.jsonl: write failed")?;
        self.stats.flush().context("stats.jsonl: write failed")?;
        self.tb.flush()
    }
}

impl RunLog {
    /// Makes the run read as if it had continued from `cur_nimg`: stats.jsonl keeps only records up to it (a torn
    /// last line goes too), and a TensorBoard SessionLog START just after it makes TensorBoard drop the later
    /// events. Returns how many records were dropped.
    pub fn rewind(&mut self, cur_nimg: u64) -> Result<usize> {
        let text = std::fs::read_to_string(&self.stats_path).unwrap_or_default();
        let mut kept = String::new();
        let mut dropped = 0;
        for line in text.lines() {
            let nimg = serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| v["cur_nimg"].as_u64());
            match nimg {
                Some(n) if n <= cur_nimg => {
                    kept.push_str(line);
                    kept.push('\n');
                }
                _ => dropped += 1,
            }
        }
        if dropped > 0 {
            crate::util::write_bytes_atomic(&self.stats_path, kept.as_bytes())?;
            // The old handle points at the replaced file.
            self.stats = append(&self.stats_path)?;
        }
        self.tb.session_start(cur_nimg as i64 + 1)?;
        Ok(dropped)
    }
}

/// Flags a sharp change of a tick's mean loss against the previous tick's: a ratio above `factor` either way
/// (losses are positive). 0 turns it off.
pub fn is_jump(prev: f64, now: f64, factor: f64) -> bool {
    if factor <= 0.0 || !prev.is_finite() || !now.is_finite() {
        return false;
    }
    let (a, b) = (prev.max(1e-3), now.max(1e-3));
    a / b > factor || b / a > factor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_memory_is_this_process_rows_of_nvidia_smi() {
        let text = "4242, 10240\n17, 512\n4242, 1024\n";
        assert_eq!(parse_compute_apps(text, 4242), Some(11.0));
        assert_eq!(parse_compute_apps(text, 18), None);
        assert_eq!(parse_compute_apps("[N/A]\n", 4242), None);
        assert_eq!(gpu_mem_gib(tch::Device::Cpu), None);
    }

    #[test]
    fn tick_line_reads_like_the_official() {
        let line = |tick, cur_nimg, total_sec, sec_per_tick, sec_per_kimg, maintenance, cpumem, gpumem| {
            let augment = None;
            TickLine { tick, cur_nimg, total_sec, sec_per_tick, sec_per_kimg, maintenance, cpumem, gpumem, augment }
                .to_string()
        };
        let s = line(12, 48_000, 3720.0, 310.2, 6.46, 0.3, 4.1, None);
        assert_eq!(s, "tick 12  kimg 48.0  time 1h 02m  sec/tick 310.2  sec/kimg 6.46  maintenance 0.3  cpumem 4.10");
        let s = line(0, 64, 5.0, 5.0, 78.0, 0.0, 0.5, Some(1.5));
        assert!(s.contains("kimg 0.064  time 5s") && s.ends_with("gpumem 1.50"), "{s}");
        let mut l = TickLine {
            tick: 1,
            cur_nimg: 64,
            total_sec: 1.0,
            sec_per_tick: 1.0,
            sec_per_kimg: 1.0,
            maintenance: 0.0,
            cpumem: 0.5,
            gpumem: None,
            augment: Some(0.1234),
        };
        assert!(l.to_string().ends_with("cpumem 0.50  augment 0.123"), "{l}");
        l.gpumem = Some(2.0);
        assert!(l.to_string().ends_with("gpumem 2.00  augment 0.123"), "{l}");
    }

    #[test]
    fn peak_memory_is_vm_hwm() {
        assert_eq!(parse_vm_hwm("Name:\tsg2\nVmPeak:\t 9 kB\nVmHWM:\t 2097152 kB\nVmRSS:\t 1 kB\n"), 2.0);
        assert_eq!(parse_vm_hwm(""), 0.0);
        assert!(peak_cpu_mem_gib() >= cpu_mem_gib() * 0.99);
    }

    #[test]
    fn stat_sums_average_per_sample() {
        let mut s = StatSums::default();
        s.add("a", &Tensor::from_slice(&[1.0f32, 2.0]));
        s.add("a", &Tensor::from_slice(&[6.0f32]));
        s.add("b", &Tensor::from_slice(&[-1.0f32]));
        let m = s.take_means();
        assert_eq!(m["a"], 3.0);
        assert_eq!(m["b"], -1.0);
        assert!(s.take_means().is_empty());
    }

    #[test]
    fn jumps() {
        assert!(!is_jump(1.3, 1.5, 3.0));
        assert!(is_jump(0.7, 4.0, 3.0));
        assert!(is_jump(1.4, 0.1, 3.0));
        assert!(!is_jump(0.7, 40.0, 0.0));
    }
}
