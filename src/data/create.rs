//! The create pipeline: source items in a fixed order -> parallel decode, crop, resize and levels of detail ->
//! shards. Memory stays bounded (one batch in flight per stage); the output appears under `--dest` only when
//! complete, built meanwhile in `<dest>.partial`, which a re-run with `--resume` continues.

pub use super::dest::{check_dest, partial_path};
use super::dest::{check_ours, install};
use super::shards::{records_per_shard, ShardWriter, JOURNAL, MAX_RESOLUTION};
use super::sources::{decode, is_grayscale, Item, Payload, Source, TooLarge};
use super::transform::{center_crop_square, levels_of_detail, resize_lanczos, to_chw, wide_crop};
use crate::image_io::ImageU8;
use crate::rng::splitmix64;
use crate::util::{progress_bar, Progress};
use anyhow::{bail, ensure, Context, Result};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

/// How a decoded image becomes square.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Crop {
    /// Center square of side min(h, w) (the official rule).
    Square,
    /// The official `create_lsun_wide` crop onto a `width x width` canvas.
    Wide { width: usize, height: usize },
}

#[derive(Clone, Debug)]
pub struct CreateOptions {
    pub dest: PathBuf,
    pub resolution: usize,
    pub max_images: Option<u64>,
    pub shuffle: bool,
    pub seed: u64,
    /// Output channels; `None` decides from the first image (1 for grayscale, else 3).
    pub channels: Option<usize>,
    pub crop: Crop,
    /// Images whose crop is smaller than this are skipped; smaller sizes in between are upsampled.
    pub min_size: usize,
    pub strict: bool,
    pub force: bool,
    pub resume: bool,
    /// Decode threads; 0 means all cores.
    pub workers: usize,
    pub shard_size_mb: u64,
    /// Records per shard, overriding what `shard_size_mb` gives (small values exercise many shards).
    pub records_per_shard: Option<u64>,
    /// The command line, kept in the manifest.
    pub command: String,
    pub progress: bool,
}

/// Largest `--shard-size-mb` (64 GiB files).
pub const MAX_SHARD_MB: u64 = 1 << 16;

/// Decode threads for `requested` (0: all cores) on `items` source items: at most 4 per core (more only adds memory
/// and switching) and never more than the items.
pub fn bounded_workers(requested: usize, items: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let w = if requested == 0 { cores } else { requested.min(4 * cores) };
    w.min(usize::try_from(items).unwrap_or(usize::MAX)).max(1)
}

impl CreateOptions {
    /// Checks every option's range before any work is done (an LSUN zip is extracted only after this).
    pub fn validate(&self) -> Result<()> {
        let r = self.resolution;
        // The wide sets take their resolution from --width.
        let option = if matches!(self.crop, Crop::Wide { .. }) { "--width" } else { "--resolution" };
        ensure!(
            r.is_power_of_two() && (4..=MAX_RESOLUTION).contains(&r),
            "{option} {r}: must be a power of two from 4 to {MAX_RESOLUTION}"
        );
        if let Crop::Wide { width, height } = self.crop {
            ensure!(width == r, "--width {width}: must equal the resolution {r}");
            ensure!((1..=width).contains(&height), "--height {height}: must be from 1 to --width {width}");
        }
        ensure!(self.max_images != Some(0), "--max-images 0: must be >= 1");
        ensure!(
            (1..=MAX_SHARD_MB).contains(&self.shard_size_mb),
            "--shard-size-mb {}: must be from 1 to {MAX_SHARD_MB}",
            self.shard_size_mb
        );
        ensure!(self.records_per_shard != Some(0), "records per shard must be >= 1");
        ensure!(matches!(self.channels, None | Some(1) | Some(3)), "channels must be 1 or 3");
        Ok(())
    }

    pub fn new(dest: impl Into<PathBuf>, resolution: usize) -> CreateOptions {
        CreateOptions {
            dest: dest.into(),
            resolution,
            max_images: None,
            shuffle: false,
            seed: 0,
            channels: None,
            crop: Crop::Square,
            min_size: resolution,
            strict: false,
            force: false,
            resume: false,
            workers: 0,
            shard_size_mb: 1024,
            records_per_shard: None,
            command: String::new(),
            progress: true,
        }
    }
}

/// What a run did.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub dest: PathBuf,
    pub written: u64,
    pub skipped: BTreeMap<String, u64>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub seconds: f64,
    pub resolution: usize,
    pub channels: usize,
    pub levels: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.resolution;
        writeln!(
            f,
            "wrote {} images ({r}x{r}, {} channel{}, {} levels) to {}",
            self.written,
            self.channels,
            if self.channels == 1 { "" } else { "s" },
            self.levels,
            self.dest.display()
        )?;
        let total: u64 = self.skipped.values().sum();
        if total > 0 {
            let why: Vec<String> = self.skipped.iter().map(|(k, v)| format!("{k} {v}")).collect();
            writeln!(f, "skipped {total}: {}", why.join(", "))?;
        } else {
            writeln!(f, "skipped 0")?;
        }
        let rate = self.written as f64 / self.seconds.max(1e-9);
        write!(
            f,
            "read {:.1} MB, wrote {:.1} MB in {:.1} s ({rate:.1} images/s)",
            self.bytes_read as f64 / 1e6,
            self.bytes_written as f64 / 1e6,
            self.seconds
        )
    }
}

/// Skip reasons, as counted in the summary.
pub const SKIP_UNDECODABLE: &str = "undecodable";
pub const SKIP_TOO_LARGE: &str = "too large to decode";
pub const SKIP_UNREADABLE: &str = "unreadable";
pub const SKIP_SMALL: &str = "smaller than --min-size";
pub const SKIP_NARROW: &str = "too narrow for the wide crop";

enum Outcome {
    Record(Vec<Vec<u8>>, Option<u32>),
    Skip(&'static str, String),
}

struct Spec {
    resolution: usize,
    channels: usize,
    crop: Crop,
    min_size: usize,
}

fn process(item: Item, spec: &Spec) -> Outcome {
    let img = match item.payload {
        Payload::Raw(p) => p.with_channels(spec.channels),
        Payload::TooLarge(why) => return Outcome::Skip(SKIP_TOO_LARGE, format!("{}: {why}", item.key)),
        Payload::Unreadable(why) => return Outcome::Skip(SKIP_UNREADABLE, format!("{}: {why}", item.key)),
        Payload::Encoded(bytes) => match decode(&bytes, spec.channels) {
            Ok(p) => p,
            Err(e) => {
                let reason = if e.is::<TooLarge>() { SKIP_TOO_LARGE } else { SKIP_UNDECODABLE };
                return Outcome::Skip(reason, format!("{}: {e:#}", item.key));
            }
        },
    };
    let square: ImageU8 = match spec.crop {
        Crop::Square => {
            let sq = center_crop_square(&img);
            if (sq.width as usize) < spec.min_size {
                return Outcome::Skip(SKIP_SMALL, format!("{}: {}x{}", item.key, img.width, img.height));
            }
            resize_lanczos(&sq, spec.resolution, spec.resolution)
        }
        Crop::Wide { width, height } => match wide_crop(&img, width, height) {
            Some(p) => p,
            None => return Outcome::Skip(SKIP_NARROW, format!("{}: {}x{}", item.key, img.width, img.height)),
        },
    };
    let chw = to_chw(&square);
    match levels_of_detail(&chw, spec.channels, spec.resolution) {
        Ok(l) => Outcome::Record(l, item.label),
        Err(e) => Outcome::Skip(SKIP_UNDECODABLE, format!("{}: {e:#}", item.key)),
    }
}

/// A deterministic permutation of `0..n` from a seed (Fisher-Yates over SplitMix64).
pub fn permutation(n: u64, seed: u64) -> Vec<u64> {
    let mut v: Vec<u64> = (0..n).collect();
    let mut s = seed;
    for i in (1..n as usize).rev() {
        let j = (splitmix64(&mut s) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
    v
}

enum Msg {
    Record(Vec<Vec<u8>>, Option<u32>, u64),
    Skip(&'static str),
}

/// Converts `source` to a dataset at `opts.dest`.
pub fn create(source: &mut dyn Source, opts: &CreateOptions) -> Result<Summary> {
    let start = Instant::now();
    let dest = &opts.dest;
    opts.validate()?;
    check_dest(dest, opts.force)?;
    let n = source.len();
    ensure!(n > 0, "{}: the source holds no images", source.describe()["path"].as_str().unwrap_or("source"));
    let order: Option<Vec<u64>> = opts.shuffle.then(|| permutation(n, opts.seed));
    let at = |p: u64| order.as_ref().map_or(p, |o| o[p as usize]);

    // Decided by the first image that decodes (an undecodable one is skipped later, by the usual rules).
    let mut first_channels = || {
        (0..n).find_map(|p| match source.get(at(p)).ok()?.payload {
            Payload::Raw(p) => Some(p.channels as usize),
            Payload::Encoded(b) => is_grayscale(&b).ok().map(|gray| if gray { 1 } else { 3 }),
            Payload::TooLarge(_) | Payload::Unreadable(_) => None,
        })
    };
    let channels = match opts.channels {
        Some(c) => c,
        None => first_channels().unwrap_or(3),
    };
    ensure!(channels == 1 || channels == 3, "channels must be 1 or 3");
    let per_shard = opts
        .records_per_shard
        .unwrap_or_else(|| records_per_shard(opts.shard_size_mb << 20, channels, opts.resolution));
    let plan = serde_json::json!({
        "source": source.describe(),
        "resolution": opts.resolution,
        "channels": channels,
        "crop": opts.crop,
        "min_size": opts.min_size,
        "shuffle": opts.shuffle,
        "seed": opts.seed,
        "max_images": opts.max_images,
        "records_per_shard": per_shard,
    });

    let partial = partial_path(dest);
    let mut writer = if partial.exists() && opts.resume && partial.join(JOURNAL).exists() {
        ShardWriter::resume(&partial, &plan)?
    } else {
        if partial.exists() {
            ensure!(
                opts.force,
                "{}: holds an interrupted run; use --resume to continue it or --force to start over",
                partial.display()
            );
            check_ours(&partial)?;
            std::fs::remove_dir_all(&partial).with_context(|| format!("{}: cannot remove", partial.display()))?;
        }
        let mut w = ShardWriter::create(&partial, channels, opts.resolution, per_shard, plan)?;
        for (reason, n) in source.listing_skips() {
            *w.journal.skipped.entry(reason.to_string()).or_default() += n;
        }
        w
    };
    let resumed_from = writer.journal.consumed;
    let max = opts.max_images.unwrap_or(u64::MAX);

    let workers = bounded_workers(opts.workers, n);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(workers).build()?;
    let pb = progress_bar(Progress::Count, n.min(max), "images", opts.progress);
    pb.set_position(writer.written());

    let spec = Spec { resolution: opts.resolution, channels, crop: opts.crop, min_size: opts.min_size };
    let (tx, rx) = mpsc::sync_channel::<Vec<Msg>>(2);
    let pbw = pb.clone();
    let handle = std::thread::spawn(move || -> Result<ShardWriter> {
        for batch in rx {
            for m in batch {
                match m {
                    Msg::Record(lods, label, consumed) => {
                        writer.push(&lods, label, consumed)?;
                        pbw.inc(1);
                    }
                    Msg::Skip(reason) => writer.note_skip(reason),
                }
            }
        }
        Ok(writer)
    });

    // Bounded memory: at most ~128 MB of finished records per batch, whatever the resolution.
    let record_bytes = channels * opts.resolution * opts.resolution * 4 / 3;
    let batch = (workers * 8).clamp(16, 256).min(((128 << 20) / record_bytes).max(workers)) as u64;
    let mut written = pb.position();
    let mut pos = resumed_from;
    let mut shown_skips = 0;
    let mut bytes_read = 0u64;
    let mut failure: Option<anyhow::Error> = None;
    while pos < n && written < max {
        let take = batch.min(n - pos);
        let items = if order.is_none() {
            source.read_range(pos, take)
        } else {
            (pos..pos + take).map(|p| source.get(at(p))).collect()
        };
        let items = match items {
            Ok(i) => i,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        bytes_read +=
            items.iter().map(|i| if let Payload::Encoded(b) = &i.payload { b.len() as u64 } else { 0 }).sum::<u64>();
        let results: Vec<Outcome> = pool.install(|| items.into_par_iter().map(|it| process(it, &spec)).collect());
        let mut msgs = Vec::with_capacity(results.len());
        for (j, r) in results.into_iter().enumerate() {
            if written >= max {
                break;
            }
            match r {
                Outcome::Record(l, label) => {
                    written += 1;
                    msgs.push(Msg::Record(l, label, pos + j as u64 + 1));
                }
                Outcome::Skip(reason, detail) => {
                    if [SKIP_UNDECODABLE, SKIP_TOO_LARGE, SKIP_UNREADABLE].contains(&reason) && opts.strict {
                        failure = Some(anyhow::anyhow!("{detail} (--strict)"));
                        break;
                    }
                    if shown_skips < 10 {
                        pb.println(format!("skipped {detail}"));
                        shown_skips += 1;
                    }
                    msgs.push(Msg::Skip(reason));
                }
            }
        }
        if failure.is_some() || tx.send(msgs).is_err() {
            break;
        }
        pos += take;
    }
    drop(tx);
    let writer = handle.join().map_err(|_| anyhow::anyhow!("shard writer thread panicked"))?;
    pb.finish_and_clear();
    let mut writer = match (writer, failure) {
        (Err(e), _) | (Ok(_), Some(e)) => {
            return Err(e.context(format!(
                "stopped; the complete part is kept in {} (re-run with --resume)",
                partial.display()
            )))
        }
        (Ok(w), None) => w,
    };
    writer.journal.bytes_read += bytes_read;
    let skipped = writer.journal.skipped.clone();
    let bytes_read = writer.journal.bytes_read;
    let written = writer.written();
    if written == 0 {
        let why: Vec<String> = skipped.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = std::fs::remove_dir_all(&partial);
        if why.is_empty() {
            bail!("no image was written");
        }
        bail!("no image was written (skipped: {})", why.join(", "));
    }
    let levels = super::transform::level_resolutions(opts.resolution).len();
    let mut summary = Summary {
        dest: dest.clone(),
        written,
        skipped,
        bytes_read,
        bytes_written: 0,
        seconds: 0.0,
        resolution: opts.resolution,
        channels,
        levels,
    };
    summary.seconds = start.elapsed().as_secs_f64();
    let manifest = writer.finish(
        source.num_classes(),
        source.describe(),
        opts.command.clone(),
        serde_json::to_value(&summary)?,
    )?;
    summary.bytes_written = manifest.shards.iter().map(|s| s.bytes).sum();
    install(&partial, dest)?;
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}
