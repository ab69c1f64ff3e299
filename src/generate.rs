//! Seeds to images, exactly as the official tools map them: z = RandomState(seed).randn(1, z_dim) as float32.
//!
//! Also the style-mixing figure and latent walks. The CLI (`cli::generate`) only parses options and writes files.

use crate::image_io::{to_uint8_nhwc, ImageU8};
use crate::model::{slerp, Generator, NoiseMode, Space};
use crate::rng::{randn_tensor, RandomState};
use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// Noise for generation: one of the official modes, or the TensorFlow tool's rule (`Tf`): after z, every noise
/// input is drawn from the same RandomState, in creation order, and used as constant noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noise {
    Mode(NoiseMode),
    Tf,
}

/// `--noise-mode`: the official modes' names, plus `tf`.
impl clap::ValueEnum for Noise {
    fn value_variants<'a>() -> &'a [Self] {
        &[Noise::Mode(NoiseMode::Const), Noise::Mode(NoiseMode::Random), Noise::Mode(NoiseMode::None), Noise::Tf]
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        match self {
            Noise::Mode(m) => m.to_possible_value(),
            Noise::Tf => {
                Some(clap::builder::PossibleValue::new("tf").help("Drawn from the seed's RandomState after z"))
            }
        }
    }
}

/// z of the official tools for a seed: RandomState(seed).randn(1, z_dim), as float32.
pub fn z_for_seed(seed: u32, z_dim: i64) -> Tensor {
    randn_tensor(&mut RandomState::new(seed), &[1, z_dim])
}

/// The one-hot label tensor for `class_idx`, checked against the network (None for unconditional networks).
pub fn class_tensor(g: &Generator, class_idx: Option<usize>, n: i64, device: Device) -> Result<Option<Tensor>> {
    let c_dim = g.c_dim();
    match (c_dim, class_idx) {
        (0, None) => Ok(None),
        (0, Some(_)) => bail!("--class given, but the network is unconditional"),
        (_, None) => bail!("the network is conditional ({c_dim} classes): pass --class N"),
        (_, Some(i)) if i as i64 >= c_dim => bail!("--class {i}: the network has classes 0..{}", c_dim - 1),
        (_, Some(i)) => {
            let c = Tensor::zeros([n, c_dim], (Kind::Float, device));
            let _ = c.narrow(1, i as i64, 1).fill_(1.0);
            Ok(Some(c))
        }
    }
}

/// Options shared by the generation commands.
#[derive(Debug, Clone)]
pub struct GenOptions {
    pub truncation_psi: f64,
    pub noise: Noise,
    pub class_idx: Option<usize>,
    pub batch: usize,
}

/// Generates one image per seed, batched on the device; `emit` receives (seed, image) in seed order.
pub fn generate_seeds(
    g: &Generator,
    seeds: &[u32],
    opts: &GenOptions,
    device: Device,
    mut emit: impl FnMut(u32, ImageU8) -> Result<()>,
) -> Result<()> {
    let z_dim = g.z_dim();
    for chunk in seeds.chunks(opts.batch.max(1)) {
        let n = chunk.len() as i64;
        let mut zs = vec![];
        let mut noise: Vec<Vec<Tensor>> = vec![];
        for &seed in chunk {
            let mut rs = RandomState::new(seed);
            zs.push(randn_tensor(&mut rs, &[1, z_dim]));
            if opts.noise == Noise::Tf {
                let res = g.synthesis.noise_resolutions();
                noise.push(res.iter().map(|&r| randn_tensor(&mut rs, &[1, 1, r, r])).collect());
            }
        }
        let z = Tensor::cat(&zs, 0).to_device(device);
        let c = class_tensor(g, opts.class_idx, n, device)?;
        let img = tch::no_grad(|| {
            let ws = g.mapping(&z, c.as_ref(), opts.truncation_psi, None);
            match opts.noise {
                Noise::Mode(m) => g.synthesis(&ws, m),
                Noise::Tf => {
                    let per_layer: Vec<Tensor> = (0..noise[0].len())
                        .map(|l| {
                            Tensor::cat(&noise.iter().map(|v| v[l].shallow_clone()).collect::<Vec<_>>(), 0)
                                .to_device(device)
                        })
                        .collect();
                    g.synthesis_with_noise(&ws, per_layer, false)
                }
            }
        });
        let u8s = to_uint8_nhwc(&img);
        for (i, &seed) in chunk.iter().enumerate() {
            emit(seed, ImageU8::from_nhwc(&u8s, i as i64))?;
        }
    }
    Ok(())
}

/// Images of projected ws (the official `generate.py --projected-w`): `ws` [N, num_ws, w_dim], one image per row,
/// converted as generate.py converts; `emit` receives (row, image).
/// Checks projected ws for `g`: [N > 0, num_ws, w_dim], finite.
pub fn check_ws(g: &Generator, ws: &Tensor) -> Result<()> {
    let want = [g.num_ws(), g.w_dim()];
    if ws.dim() != 3 || ws.size()[1..] != want {
        bail!("w has shape {:?}, the network takes [N, {}, {}]", ws.size(), want[0], want[1]);
    }
    if ws.size()[0] == 0 {
        bail!("w holds no vectors (shape {:?})", ws.size());
    }
    if !crate::util::all_finite(ws) {
        bail!("w holds NaN or infinite values");
    }
    Ok(())
}

pub fn generate_projected(
    g: &Generator,
    ws: &Tensor,
    mode: NoiseMode,
    device: Device,
    mut emit: impl FnMut(usize, ImageU8) -> Result<()>,
) -> Result<()> {
    check_ws(g, ws)?;
    for i in 0..ws.size()[0] {
        let w = ws.narrow(0, i, 1).to_device(device);
        let img = tch::no_grad(|| g.synthesis(&w, mode));
        // A finite w far outside what the mapping makes can still overflow: that would save a black picture.
        anyhow::ensure!(
            crate::util::all_finite(&img),
            "w {i} drives the network to non-finite values (largest |w| {:.3e}): not a w this network maps to",
            w.abs().max().double_value(&[])
        );
        emit(i as usize, ImageU8::from_nhwc(&to_uint8_nhwc(&img), 0))?;
    }
    Ok(())
}

/// Truncated, broadcast ws for seeds, as the official figure scripts compute them:
/// w_avg + (w - w_avg) * psi on every layer.
pub fn ws_for_seeds(
    g: &Generator,
    seeds: &[u32],
    psi: f64,
    class_idx: Option<usize>,
    device: Device,
) -> Result<Tensor> {
    let zs: Vec<Tensor> = seeds.iter().map(|&s| z_for_seed(s, g.z_dim())).collect();
    let z = Tensor::cat(&zs, 0).to_device(device);
    let c = class_tensor(g, class_idx, seeds.len() as i64, device)?;
    Ok(tch::no_grad(|| g.mapping(&z, c.as_ref(), psi, None)))
}

/// The official style-mixing figure: a black corner, column seeds along the top, row seeds down the left, and in
/// each cell the row seed's ws with the layers in `styles` taken from the column seed.
pub fn style_mix_grid(
    g: &Generator,
    rows: &[u32],
    cols: &[u32],
    styles: &[usize],
    opts: &GenOptions,
    device: Device,
) -> Result<ImageU8> {
    let num_ws = g.num_ws() as usize;
    if let Some(&bad) = styles.iter().find(|&&s| s >= num_ws) {
        bail!("--styles {bad}: the network has layers 0..{}", num_ws - 1);
    }
    let Noise::Mode(mode) = opts.noise else { bail!("style mixing takes --noise-mode const, random or none") };
    let row_ws = ws_for_seeds(g, rows, opts.truncation_psi, opts.class_idx, device)?;
    let col_ws = ws_for_seeds(g, cols, opts.truncation_psi, opts.class_idx, device)?;
    // A few images per pass: a whole row or column of a large figure at once would need far more memory than the
    // figure itself.
    let synth = |ws: &Tensor| -> Vec<ImageU8> {
        let mut out = vec![];
        for chunk in ws.split(8, 0) {
            let u8s = to_uint8_nhwc(&tch::no_grad(|| g.synthesis(&chunk, mode)));
            out.extend((0..chunk.size()[0]).map(|i| ImageU8::from_nhwc(&u8s, i)));
        }
        out
    };
    let row_imgs = synth(&row_ws);
    let col_imgs = synth(&col_ws);
    let mask: Vec<f32> = (0..num_ws).map(|l| if styles.contains(&l) { 1.0 } else { 0.0 }).collect();
    let mask = Tensor::from_slice(&mask).reshape([1, -1, 1]).to_device(device);
    let mut tiles = vec![];
    let t = &row_imgs[0];
    tiles.push(ImageU8::black(t.width, t.height, t.channels));
    tiles.extend(col_imgs.iter().cloned());
    for (r, row_img) in row_imgs.iter().enumerate() {
        tiles.push(row_img.clone());
        let w_row = row_ws.narrow(0, r as i64, 1).expand([cols.len() as i64, -1, -1], false);
        let mixed = &w_row * (1.0 - &mask) + &col_ws * &mask;
        tiles.extend(synth(&mixed));
    }
    crate::image_io::grid(&tiles, cols.len() + 1)
}

/// Frames of a looping walk through the key seeds: `frames` per segment, lerp in w or slerp in z.
pub fn interpolation_frames(
    g: &Generator,
    seeds: &[u32],
    frames: usize,
    space: Space,
    opts: &GenOptions,
    device: Device,
    mut on_frame: impl FnMut(usize, usize),
) -> Result<Vec<ImageU8>> {
    if seeds.len() < 2 {
        bail!("--seeds: interpolation needs at least two seeds");
    }
    if frames == 0 {
        bail!("--frames must be >= 1");
    }
    let Noise::Mode(mode) = opts.noise else { bail!("interpolation takes --noise-mode const or none") };
    let zs: Vec<Tensor> = seeds.iter().map(|&s| z_for_seed(s, g.z_dim()).to_device(device)).collect();
    let c = class_tensor(g, opts.class_idx, 1, device)?;
    let ws: Vec<Tensor> =
        zs.iter().map(|z| tch::no_grad(|| g.mapping(z, c.as_ref(), opts.truncation_psi, None))).collect();
    let total = seeds.len() * frames;
    let mut out = Vec::with_capacity(total);
    for k in 0..total {
        let (seg, i) = (k / frames, k % frames);
        let t = i as f64 / frames as f64;
        let (a, b) = (seg, (seg + 1) % seeds.len());
        let w = match space {
            Space::Z => {
                let z = slerp(&zs[a], &zs[b], &Tensor::from(t));
                tch::no_grad(|| g.mapping(&z, c.as_ref(), opts.truncation_psi, None))
            }
            Space::W => ws[a].lerp(&ws[b], t),
        };
        let img = tch::no_grad(|| g.synthesis(&w, mode));
        out.push(ImageU8::from_nhwc(&to_uint8_nhwc(&img), 0));
        on_frame(k + 1, total);
    }
    Ok(out)
}
