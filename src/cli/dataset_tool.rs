//! `sg2 dataset-tool`: create multi-resolution datasets and look into them.

use super::Global;
use crate::data::create::{check_dest, create, CreateOptions, Crop};
use crate::data::inspect;
use crate::data::sources::{cifar::Cifar10, images::Images, lsun, mnist::Mnist, Source};
use crate::data::Dataset;
use crate::train::augment::preview;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: DatasetCommand,
}

/// Options every create command takes.
#[derive(clap::Args, Debug, Clone)]
pub struct CreateArgs {
    /// Where the images come from (see the command's description).
    #[arg(long)]
    pub source: PathBuf,
    /// Output dataset folder; built in DEST.partial and renamed when complete.
    #[arg(long)]
    pub dest: PathBuf,
    /// Stop after writing this many images (>= 1).
    #[arg(long)]
    pub max_images: Option<u64>,
    /// Visit the source in a random order (from --seed) instead of its own order.
    #[arg(long)]
    pub shuffle: bool,
    /// Seed of --shuffle.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Make an undecodable, unreadable (or too large) image a fatal error instead of skipping and counting it.
    #[arg(long)]
    pub strict: bool,
    /// Replace an existing dataset at --dest (only once the new one is complete), or discard an interrupted run.
    #[arg(long)]
    pub force: bool,
    /// Continue an interrupted run in DEST.partial (same options) instead of refusing.
    #[arg(long)]
    pub resume: bool,
    /// Decode threads (default: --threads, else all cores; at most 4 per core and one per image).
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Upper bound of one full-resolution shard file in MiB (1 to 65536).
    #[arg(long, default_value_t = 1024)]
    pub shard_size_mb: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Options of the commands that take photographs (crop and resize).
#[derive(clap::Args, Debug, Clone)]
pub struct PhotoArgs {
    /// Output resolution (a power of two from 4 to 8192); images are center-cropped to a square and resized with
    /// Lanczos.
    #[arg(long, default_value_t = 256)]
    pub resolution: usize,
    /// Skip (and count) images whose square crop is smaller than this; those between it and --resolution are
    /// upsampled. Default: the resolution (never upsample); 0 upsamples everything as the official tool.
    #[arg(long)]
    pub min_size: Option<usize>,
}

#[derive(clap::Subcommand, Debug)]
pub enum DatasetCommand {
    /// LSUN: an LMDB folder (data.mdb) or the original .zip (its data.mdb is extracted once to DEST.lmdb/,
    /// resumably). Values are WebP or JPEG, walked in key order; RGB.
    #[command(name = "create_lsun")]
    CreateLsun {
        #[command(flatten)]
        common: CreateArgs,
        #[command(flatten)]
        photo: PhotoArgs,
    },
    /// LSUN cars as the official wide set: rows cropped to the 4:3 aspect, resized to WIDTHxHEIGHT and centred on
    /// a black WIDTHxWIDTH canvas; images narrower than WIDTH are skipped.
    #[command(name = "create_lsun_wide")]
    CreateLsunWide {
        #[command(flatten)]
        common: CreateArgs,
        /// Canvas width (= resolution).
        #[arg(long, default_value_t = 512)]
        width: usize,
        /// Height of the image band.
        #[arg(long, default_value_t = 384)]
        height: usize,
    },
    /// A folder (recursive) or a .zip of PNG, JPEG, WebP or GIF images, in sorted path order. Links are followed
    /// once: a file or folder reached twice (a link cycle) is skipped and counted. Grayscale when the first image is
    /// grayscale, unless --rgb.
    #[command(name = "create_from_images")]
    CreateFromImages {
        #[command(flatten)]
        common: CreateArgs,
        #[command(flatten)]
        photo: PhotoArgs,
        /// Always store 3 channels.
        #[arg(long)]
        rgb: bool,
    },
    /// MNIST or Fashion-MNIST: a folder with train-images-idx3-ubyte and train-labels-idx1-ubyte (gz or raw).
    /// Padded to 32x32 with black as the official tool; labels kept; grayscale unless --rgb.
    #[command(name = "create_mnist")]
    CreateMnist {
        #[command(flatten)]
        common: CreateArgs,
        /// Output resolution (32 keeps the padded images as they are).
        #[arg(long, default_value_t = 32)]
        resolution: usize,
        /// Store 3 channels.
        #[arg(long)]
        rgb: bool,
    },
    /// CIFAR-10: cifar-10-python.tar.gz or its extracted folder; the 50,000 training images with labels.
    #[command(name = "create_cifar10")]
    CreateCifar10 {
        #[command(flatten)]
        common: CreateArgs,
        /// Output resolution (32 keeps the images as they are).
        #[arg(long, default_value_t = 32)]
        resolution: usize,
    },
    /// Counts, levels, sizes and label classes of a dataset.
    Info {
        /// Dataset folder.
        dataset: PathBuf,
    },
    /// Check every shard's size and SHA-256 and read every record.
    Verify {
        /// Dataset folder.
        dataset: PathBuf,
    },
    /// Write records as PNGs named by record index (00000042.png).
    Extract {
        /// Dataset folder.
        dataset: PathBuf,
        /// Output folder.
        #[arg(long)]
        dest: PathBuf,
        /// Level to extract (default: full resolution).
        #[arg(long)]
        resolution: Option<usize>,
        /// Only the first N records (>= 1).
        #[arg(long)]
        max_images: Option<u64>,
    },
    /// A contact sheet of the first records (PNG, or JPEG for a .jpg name).
    Grid {
        /// Dataset folder.
        dataset: PathBuf,
        /// Output image: .png, or .jpg for JPEG.
        #[arg(long)]
        out: PathBuf,
        /// Level to show (default: full resolution).
        #[arg(long)]
        resolution: Option<usize>,
        /// Number of images (>= 1; all of them when the dataset holds fewer; the sheet may hold at most 1 GiB of
        /// pixels).
        #[arg(long, default_value_t = 64)]
        count: u64,
    },
    /// The ADA augmentation pipeline applied once to the first records (full resolution, dataset order), as a PNG
    /// grid: what the discriminator sees in training. Runs on the CPU with libtorch's generator seeded with --seed
    /// right before the pipe, so a seed always gives the same pictures.
    Augment {
        /// Dataset folder.
        dataset: PathBuf,
        /// Augmentation preset: blit, geom, color, filter, noise, cutout, bg, bgc, bgcf, bgcfn or bgcfnc.
        #[arg(long, default_value = "bgc")]
        pipe: String,
        /// Overall augmentation probability in [0, 1]: each kind of the preset is applied to an image with
        /// probability p.
        #[arg(long, default_value_t = 1.0)]
        p: f64,
        /// Seed of the random augmentation parameters.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Number of images, the first ones of the dataset (>= 1; all of them when the dataset holds fewer).
        #[arg(long, default_value_t = 16)]
        count: u64,
        /// Output image (.png, or .jpg for JPEG): the augmented images in a near-square grid.
        #[arg(long)]
        out: PathBuf,
        /// Also save the augmented batch as safetensors: key `images`, NCHW float32 (values may leave [-1, 1]).
        #[arg(long)]
        tensor_out: Option<PathBuf>,
    },
}

fn options(c: &CreateArgs, resolution: usize) -> CreateOptions {
    let mut o = CreateOptions::new(&c.dest, resolution);
    o.max_images = c.max_images;
    o.shuffle = c.shuffle;
    o.seed = c.seed;
    o.strict = c.strict;
    o.force = c.force;
    o.resume = c.resume;
    o.workers = c.workers;
    o.shard_size_mb = c.shard_size_mb;
    o.progress = !c.quiet;
    o.command = std::env::args().collect::<Vec<_>>().join(" ");
    o
}

fn run_create(source: &mut dyn Source, o: &CreateOptions) -> Result<()> {
    let summary = create(source, o)?;
    println!("{summary}");
    Ok(())
}

pub fn run(args: Args, g: &Global) -> Result<()> {
    let threads = g.threads()?;
    if let Some(n) = threads {
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
    let default_workers = |c: &CreateArgs| {
        if c.workers == 0 {
            threads.unwrap_or(0)
        } else {
            super::bounded_threads("--workers", c.workers)
        }
    };
    match args.command {
        DatasetCommand::CreateLsun { common, photo } => {
            let mut o = options(&common, photo.resolution);
            o.workers = default_workers(&common);
            o.channels = Some(3);
            o.min_size = photo.min_size.unwrap_or(photo.resolution);
            o.validate()?;
            check_dest(&common.dest, common.force)?;
            let mut src = lsun::open_source(&common.source, &common.dest, o.progress)?;
            run_create(&mut src, &o)
        }
        DatasetCommand::CreateLsunWide { common, width, height } => {
            let mut o = options(&common, width);
            o.workers = default_workers(&common);
            o.channels = Some(3);
            o.crop = Crop::Wide { width, height };
            o.validate()?;
            check_dest(&common.dest, common.force)?;
            let mut src = lsun::open_source(&common.source, &common.dest, o.progress)?;
            run_create(&mut src, &o)
        }
        DatasetCommand::CreateFromImages { common, photo, rgb } => {
            let mut o = options(&common, photo.resolution);
            o.workers = default_workers(&common);
            o.channels = rgb.then_some(3);
            o.min_size = photo.min_size.unwrap_or(photo.resolution);
            run_create(&mut Images::open(&common.source)?, &o)
        }
        DatasetCommand::CreateMnist { common, resolution, rgb } => {
            let mut o = options(&common, resolution);
            o.workers = default_workers(&common);
            o.channels = Some(if rgb { 3 } else { 1 });
            o.min_size = 0;
            run_create(&mut Mnist::open(&common.source)?, &o)
        }
        DatasetCommand::CreateCifar10 { common, resolution } => {
            let mut o = options(&common, resolution);
            o.workers = default_workers(&common);
            o.channels = Some(3);
            o.min_size = 0;
            run_create(&mut Cifar10::open(&common.source)?, &o)
        }
        DatasetCommand::Info { dataset } => {
            print!("{}", inspect::info(&Dataset::open(&dataset)?));
            Ok(())
        }
        DatasetCommand::Verify { dataset } => {
            println!("{}", inspect::verify(&dataset, true)?);
            Ok(())
        }
        DatasetCommand::Extract { dataset, dest, resolution, max_images } => {
            crate::util::ensure_apart(&dest, "--dest", &[&dataset])?;
            let ds = Dataset::open(&dataset)?;
            let n = inspect::extract(&ds, &dest, resolution, max_images, true)?;
            println!("wrote {n} PNGs to {}", dest.display());
            Ok(())
        }
        DatasetCommand::Grid { dataset, out, resolution, count } => {
            crate::util::check_output_file(&out, "--out", &[&dataset])?;
            crate::image_io::check_extension(&out, "--out", crate::image_io::STILL)?;
            let ds = Dataset::open(&dataset)?;
            inspect::grid(&ds, &out, resolution, count)?;
            println!("wrote {}", out.display());
            Ok(())
        }
        DatasetCommand::Augment { dataset, pipe, p, seed, count, out, tensor_out } => {
            if let Some(n) = g.threads {
                tch::set_num_threads(n as i32);
            }
            let opts = preview::PreviewOptions { pipe, p, seed, count };
            opts.pipe()?;
            crate::util::check_output_file(&out, "--out", &[&dataset])?;
            crate::image_io::check_extension(&out, "--out", crate::image_io::STILL)?;
            if let Some(t) = &tensor_out {
                crate::util::check_output_file(t, "--tensor-out", &[&dataset, &out])?;
            }
            let written = preview::write_preview(&Dataset::open(&dataset)?, &opts, &out, tensor_out.as_deref())?;
            for path in written {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}
