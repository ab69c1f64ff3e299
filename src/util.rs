//! Small process-wide helpers: allocator tuning, progress bars and atomic file writes.

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Threshold, slack and floor of the large-tensor allocator (`ffi::cpu_alloc`): tensors of 1 MiB and more, kept
/// blocks within max(1.2 x, + 256 MiB) of the most tensor memory ever alive. At config-f 256x256 the peak resident
/// size fell from 6.5-7.3 GiB (glibc's heap) to 5.2 GiB at the same speed; a slack of 0.1 gave 4.8 GiB but twice
/// the page faults in a replay of the allocations.
const LARGE_TENSOR: usize = 1 << 20;
const KEEP_SLACK: f64 = 0.2;
const KEEP_FLOOR: usize = 256 << 20;

/// libtorch allocates through glibc malloc, which by default returns freed buffers to the OS and maps them afresh,
/// so every op pays page faults (measured ~4x slower CPU training of small networks). Small buffers stay in the
/// heap, in one arena (buffers freed by libtorch's worker threads would otherwise sit in arenas the main thread
/// never reuses); glibc's `MALLOC_MMAP_THRESHOLD_` / `MALLOC_TRIM_THRESHOLD_` / `MALLOC_ARENA_MAX`, when set, win.
/// Large tensors go to the caching allocator of `ffi::cpu_alloc`, which keeps the heap from fragmenting (the heap
/// alone peaked 1.6-1.8x above the tensor memory alive); `SG2_CPU_ALLOCATOR=system` keeps libtorch's own.
pub fn tune_allocators() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        // M_TRIM_THRESHOLD = -1, M_MMAP_THRESHOLD = -3, M_ARENA_MAX = -8 in glibc's malloc.h.
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            libc::mallopt(-3, 1 << 30);
        }
        if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
            libc::mallopt(-1, 1 << 30);
        }
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            libc::mallopt(-8, 1);
        }
    }
    if std::env::var("SG2_CPU_ALLOCATOR").as_deref() != Ok("system") {
        crate::ffi::cpu_alloc::install(LARGE_TENSOR, KEEP_SLACK, KEEP_FLOOR);
    }
}

/// What a progress bar counts, which decides what its line shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Items (images, records, samples): count, rate and time left.
    Count,
    /// Bytes read or written: amount, rate and time left.
    Bytes,
    /// Frames being encoded: count and time so far.
    Frames,
    /// Training images; the message holds the kimg done: time left.
    Kimg,
}

/// The line of a progress bar of `kind`, led by its message (what is being done) except for `Kimg`.
pub fn progress_style(kind: Progress) -> ProgressStyle {
    let template = match kind {
        Progress::Count => "{msg} {bar:40} {pos}/{len} {per_sec} ETA {eta}",
        Progress::Bytes => "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        Progress::Frames => "{msg} {bar:40} {pos}/{len} frames {elapsed}",
        Progress::Kimg => "{bar:40} {msg} kimg, ETA {eta}",
    };
    ProgressStyle::with_template(template).expect("valid template").progress_chars("=> ")
}

/// A progress bar on stderr of `len` units of `kind`, labelled `what` (hidden when `show` is false: tests, quiet
/// runs).
pub fn progress_bar(kind: Progress, len: u64, what: &str, show: bool) -> ProgressBar {
    let target = if show { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let pb = ProgressBar::with_draw_target(Some(len), target);
    pb.set_style(progress_style(kind));
    pb.set_message(what.to_string());
    pb
}

/// A sibling temp path in the same folder (so the final rename is atomic).
pub fn temp_path_for(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// The nearest of `path` and its ancestors that exists ("." for a relative path with none).
fn nearest_existing(path: &Path) -> PathBuf {
    path.ancestors()
        .find(|a| !a.as_os_str().is_empty() && std::fs::symlink_metadata(a).is_ok())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Creates the folder `dir` and its parents; a file standing in the way is named in the error.
pub fn create_dir(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let blocker = nearest_existing(dir);
    anyhow::ensure!(blocker != dir, "{}: is a file, not a folder", dir.display());
    anyhow::ensure!(
        blocker.is_dir(),
        "{}: cannot create folder: {} is a file, not a folder",
        dir.display(),
        blocker.display()
    );
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))
}

/// Checks, before any work, that the file `path` (given as `option`) can be written: not a folder, no file where
/// a folder of its path should be, a folder that takes new files, and none of the command's `inputs` (see
/// [`ensure_apart`]). Nothing is left behind.
pub fn check_output_file(path: &Path, option: &str, inputs: &[&Path]) -> Result<()> {
    ensure_apart(path, option, inputs)?;
    let shown = || format!("{option} {}", path.display());
    anyhow::ensure!(!path.is_dir(), "{}: is a folder; give a file name", shown());
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let existing = nearest_existing(parent);
    anyhow::ensure!(existing.is_dir(), "{}: {} is a file, not a folder", shown(), existing.display());
    if existing == parent {
        let probe = temp_path_for(path);
        std::fs::File::create(&probe).with_context(|| format!("{}: cannot write in {}", shown(), parent.display()))?;
        let _ = std::fs::remove_file(&probe);
    }
    Ok(())
}

/// Creates an output folder ([`create_dir`]) and clears the temp files a killed earlier run left in it.
pub fn create_out_dir(dir: &Path) -> Result<()> {
    create_dir(dir)?;
    let removed = remove_dead_temps(dir);
    if !removed.is_empty() {
        eprintln!("{}: removed {} temporary file(s) left by an interrupted run", dir.display(), removed.len());
    }
    Ok(())
}

/// Whether process `pid` still runs.
pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    // Signal 0 only checks: 0 = exists, EPERM = exists but not ours.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether process `pid` still runs and is this program (by its command name), so that a pid reused by an
/// unrelated process since a kill does not look like a live sg2 holding its files.
pub fn sg2_process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let comm = |p: &str| std::fs::read_to_string(format!("/proc/{p}/comm")).ok().map(|c| c.trim().to_string());
    match (comm(&pid.to_string()), comm("self")) {
        (Some(theirs), Some(ours)) => theirs == ours,
        // Without /proc (another system): alive is as much as can be told.
        _ => process_alive(pid),
    }
}

/// Removes the temp files of [`write_atomic`] (`.<name>.<pid>.tmp`) in `dir` whose writer is gone (a kill left
/// them); a running writer's are kept. Returns what was removed.
pub fn remove_dead_temps(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    let mut removed = vec![];
    for p in entries.flatten().map(|e| e.path()) {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let Some(stem) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else { continue };
        let pid = stem.rsplit_once('.').and_then(|(_, pid)| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !process_alive(pid)) && p.is_file() && std::fs::remove_file(&p).is_ok() {
            removed.push(p);
        }
    }
    removed
}

/// `path` made absolute with its existing part resolved (links, `..`), for comparing paths that may not exist yet.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    match (path.parent().filter(|p| !p.as_os_str().is_empty()), path.file_name()) {
        (Some(parent), Some(name)) => resolved(parent).join(name),
        (None, Some(name)) => std::env::current_dir().unwrap_or_default().join(name),
        _ => path.to_path_buf(),
    }
}

/// Refuses an output (`option` `out`) that is one of the `inputs` files or lies inside one of them (a dataset
/// folder): writing it would destroy what is being read.
pub fn ensure_apart(out: &Path, option: &str, inputs: &[&Path]) -> Result<()> {
    let o = resolved(out);
    for input in inputs {
        let i = resolved(input);
        anyhow::ensure!(
            o != i && !o.starts_with(&i),
            "{option} {}: would overwrite {}, which this command uses",
            out.display(),
            input.display()
        );
    }
    Ok(())
}

/// Whether every value of `t` is finite (no NaN, no infinity).
pub fn all_finite(t: &Tensor) -> bool {
    t.isfinite().all().int64_value(&[]) != 0
}

/// Writes `path` atomically: the bytes go to a temp file that is synced and then renamed over `path`.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    let tmp = temp_path_for(path);
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        write(&mut f)?;
        f.flush()?;
        f.sync_all().with_context(|| format!("{}: cannot sync", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot rename into place", path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes bytes atomically.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |f| {
        f.write_all(bytes).with_context(|| format!("{}: write failed", path.display()))?;
        Ok(())
    })
}

/// "1h 02m", "5m 03s", "12s" as the official tick lines print durations.
pub fn format_time(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 86400 {
        format!("{}d {:02}h {:02}m", s / 86400, (s / 3600) % 24, (s / 60) % 60)
    } else if s >= 3600 {
        format!("{}h {:02}m", s / 3600, (s / 60) % 60)
    } else if s >= 60 {
        format!("{}m {:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// "156 MB", "8.0 MB", "40.0 KB", "512 bytes" (decimal units, as file managers show sizes).
pub fn human_bytes(n: u64) -> String {
    let f = n as f64;
    if n >= 1_000_000_000 {
        format!("{:.1} GB", f / 1e9)
    } else if n >= 1_000_000 {
        format!("{:.1} MB", f / 1e6)
    } else if n >= 1_000 {
        format!("{:.1} KB", f / 1e3)
    } else {
        format!("{n} bytes")
    }
}

/// libtorch's message without the C++ part: its errors carry "Exception raised from ..." and a stack of frames
/// after the first line, which say nothing to a user.
pub fn torch_message(e: &tch::TchError) -> String {
    let text = e.to_string();
    let text = text.strip_prefix("Internal torch error: ").unwrap_or(&text);
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    // A TorchScript module's exception comes after its traceback, as `<Kind>Error: <message>`.
    if lines.first().is_some_and(|l| l.starts_with("The following operation failed in the TorchScript interpreter")) {
        let is_error = |l: &&&str| l.split_once(": ").is_some_and(|(k, _)| k.ends_with("Error") && !k.contains(' '));
        if let Some(cause) = lines.iter().rev().find(is_error) {
            return format!("TorchScript: {cause}");
        }
    }
    lines.first().copied().unwrap_or("libtorch error").to_string()
}

/// One line for a panic's message: a libtorch error unwrapped by tch (`... Torch("<message>\nException raised
/// from ...")`, newlines escaped) becomes `libtorch: <message>`; anything else keeps its first line.
pub fn panic_line(msg: &str) -> String {
    if let Some(at) = msg.find("Torch(\"") {
        let rest = &msg[at + "Torch(\"".len()..];
        let end = [rest.find("\\n"), rest.find("\")")].into_iter().flatten().min().unwrap_or(rest.len());
        return format!("libtorch: {}", rest[..end].replace("\\\"", "\"").trim());
    }
    msg.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("panic").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torchscript_exception_keeps_its_cause() {
        let ts = "The following operation failed in the TorchScript interpreter.\nTraceback of TorchScript (most \
                  recent call last):\n  File \"x.py\", line 5, in forward\n    raise RuntimeError(\"boom\")\n\
                  builtins.RuntimeError: boom from detector\n";
        assert_eq!(
            torch_message(&tch::TchError::Torch(ts.into())),
            "TorchScript: builtins.RuntimeError: boom from detector"
        );
        let plain = "shape mismatch\nException raised from foo at bar.cpp:1";
        assert_eq!(torch_message(&tch::TchError::Torch(plain.into())), "shape mismatch");
    }

    #[test]
    fn only_temps_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        let dead = dir.path().join(format!(".seed0042.png.{}.tmp", child.id()));
        let live = temp_path_for(&dir.path().join("seed0043.png"));
        let other = dir.path().join(".notes.tmp");
        for p in [&dead, &live, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        assert_eq!(remove_dead_temps(dir.path()), vec![dead.clone()]);
        assert!(!dead.exists() && live.exists() && other.exists());
    }

    #[test]
    fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_bytes_atomic(&p, b"first").unwrap();
        write_bytes_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        let failed = write_atomic(&p, |_| anyhow::bail!("boom"));
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn every_progress_kind_has_a_valid_line() {
        for kind in [Progress::Count, Progress::Bytes, Progress::Frames, Progress::Kimg] {
            let pb = progress_bar(kind, 10, "x", false);
            pb.inc(3);
            assert_eq!((pb.position(), pb.length()), (3, Some(10)));
        }
    }

    #[test]
    fn panics_become_one_line() {
        let torch = "called `Result::unwrap()` on an `Err` value: Torch(\"DefaultCPUAllocator: can't allocate memory: \
                     you tried to allocate 137438953472 bytes.\\nException raised from allocate at alloc.cpp:9 \
                     (most recent call first):\\nframe #0: c10::Error::Error()\")";
        assert_eq!(
            panic_line(torch),
            "libtorch: DefaultCPUAllocator: can't allocate memory: you tried to allocate 137438953472 bytes."
        );
        assert_eq!(panic_line("index out of bounds\nmore"), "index out of bounds");
    }

    #[test]
    fn time_format_like_official() {
        assert_eq!(format_time(12.4), "12s");
        assert_eq!(format_time(303.0), "5m 03s");
        assert_eq!(format_time(3720.0), "1h 02m");
        assert_eq!(format_time(90000.0), "1d 01h 00m");
    }
}
