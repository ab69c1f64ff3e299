//! Image transforms of the official dataset tool: center crop, the `wide` car crop, Pillow's Lanczos resize
//! (`PIL.Image.ANTIALIAS`) reproduced bit for bit, and the 2x2 box-average levels of detail.
//!
//! Images here are interleaved HWC [`ImageU8`]s; records are CHW (see [`to_chw`]).

use crate::image_io::ImageU8;
use anyhow::{bail, Result};

/// The official square crop: the centered `min(h, w)` square, offsets rounded down
/// (`img[(h - crop) // 2 : (h + crop) // 2, (w - crop) // 2 : (w + crop) // 2]`).
pub fn center_crop_square(img: &ImageU8) -> ImageU8 {
    let (w, h, _) = img.dims();
    let crop = w.min(h);
    img.crop((w - crop) / 2, (h - crop) / 2, crop, crop)
}

/// The official `create_lsun_wide` transform: rows cropped to `ch = round(width * h / w)`, resized to
/// `width x height` and centered vertically on a black `width x width` canvas. `None` when the image is narrower
/// than `width` or `ch < height` (the official tool skips those).
pub fn wide_crop(img: &ImageU8, width: usize, height: usize) -> Option<ImageU8> {
    let (w, h, c) = img.dims();
    let ch = (width as f64 * h as f64 / w as f64).round_ties_even() as usize;
    if w < width || ch < height {
        return None;
    }
    // numpy slicing clamps to the array, so ch > h keeps every row.
    let y0 = h.saturating_sub(ch) / 2;
    let y1 = ((h + ch) / 2).min(h);
    let cropped = img.crop(0, y0, w, y1 - y0);
    let resized = resize_lanczos(&cropped, width, height);
    let mut canvas = vec![0u8; width * width * c];
    let top = (width - height) / 2;
    canvas[top * width * c..(top + height) * width * c].copy_from_slice(&resized.data);
    Some(ImageU8::new(width, width, c, canvas))
}

// Pillow's Resample.c: coefficients in double, normalised, then quantised to 22-bit fixed point.
const PRECISION_BITS: u32 = 32 - 8 - 2;
const LANCZOS_SUPPORT: f64 = 3.0;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Per output pixel: first input index and fixed-point weights (Pillow's `precompute_coeffs` +
/// `normalize_coeffs_8bpc`).
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    weights: Vec<i32>,
}

fn precompute(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = LANCZOS_SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C truncation toward zero of (center -/+ support + 0.5), then clamped.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(xmax) {
            let w = lanczos((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for x in 0..xmax {
            let v = if ww != 0.0 { k[x] / ww } else { k[x] };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            weights[xx * ksize + x] = if v < 0.0 { (f - 0.5) as i32 } else { (f + 0.5) as i32 };
        }
        bounds.push((xmin, xmax));
    }
    Coeffs { bounds, ksize, weights }
}

#[inline]
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resizes with Pillow's Lanczos filter (`Image.resize(size, Image.LANCZOS)`, formerly `ANTIALIAS`), the filter
/// the official tools use: support 3 scaled by the reduction factor (so downsampling is antialiased), 8-bit
/// fixed-point arithmetic, horizontal pass then vertical pass with an 8-bit intermediate. Output is identical to
/// Pillow's for 1- and 3-channel images.
pub fn resize_lanczos(img: &ImageU8, out_w: usize, out_h: usize) -> ImageU8 {
    let (w, h, c) = img.dims();
    if out_w == w && out_h == h {
        return img.clone();
    }
    let horiz = precompute(w, out_w);
    let vert = precompute(h, out_h);
    // Only the rows the vertical pass reads go through the horizontal pass.
    let first = vert.bounds[0].0;
    let last = vert.bounds[out_h - 1].0 + vert.bounds[out_h - 1].1;
    let tmp = if out_w != w {
        let rows = last - first;
        let mut tmp = vec![0u8; out_w * rows * c];
        for (ty, y) in (first..last).enumerate() {
            let src = &img.data[y * w * c..(y + 1) * w * c];
            let dst = &mut tmp[ty * out_w * c..(ty + 1) * out_w * c];
            for xx in 0..out_w {
                let (xmin, n) = horiz.bounds[xx];
                let k = &horiz.weights[xx * horiz.ksize..xx * horiz.ksize + n];
                for ch in 0..c {
                    let mut ss = 1i32 << (PRECISION_BITS - 1);
                    for (x, &kx) in k.iter().enumerate() {
                        ss = ss.wrapping_add(src[(xmin + x) * c + ch] as i32 * kx);
                    }
                    dst[xx * c + ch] = clip8(ss);
                }
            }
        }
        ImageU8::new(out_w, rows, c, tmp)
    } else {
        img.crop(0, first, w, last - first)
    };
    if out_h == h {
        return tmp;
    }
    let row = out_w * c;
    let mut out = vec![0u8; out_h * row];
    let mut acc = vec![0i32; row];
    for yy in 0..out_h {
        let (ymin, n) = vert.bounds[yy];
        let k = &vert.weights[yy * vert.ksize..yy * vert.ksize + n];
        acc.fill(1 << (PRECISION_BITS - 1));
        for (y, &ky) in k.iter().enumerate() {
            let src = &tmp.data[(ymin - first + y) * row..(ymin - first + y + 1) * row];
            for (a, &s) in acc.iter_mut().zip(src) {
                *a = a.wrapping_add(s as i32 * ky);
            }
        }
        for (o, &a) in out[yy * row..(yy + 1) * row].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    ImageU8::new(out_w, out_h, c, out)
}

/// HWC to CHW.
pub fn to_chw(img: &ImageU8) -> Vec<u8> {
    let (w, h, c) = img.dims();
    let n = w * h;
    let mut out = vec![0u8; c * n];
    for (i, px) in img.data.chunks_exact(c).enumerate() {
        for (ch, &v) in px.iter().enumerate() {
            out[ch * n + i] = v;
        }
    }
    out
}

/// CHW to HWC.
pub fn from_chw(chw: &[u8], channels: usize, width: usize, height: usize) -> ImageU8 {
    let n = width * height;
    let mut data = vec![0u8; chw.len()];
    for ch in 0..channels {
        for i in 0..n {
            data[i * channels + ch] = chw[ch * n + i];
        }
    }
    ImageU8::new(width, height, channels, data)
}

/// Every level of detail of a square CHW record, full resolution first, down to 4x4, exactly as the official
/// TFRecordExporter: the float32 box average `(a + b + c + d) * 0.25` is carried across levels and each level is
/// quantised with round-half-to-even and clipped (`np.rint(img).clip(0, 255)`).
pub fn levels_of_detail(chw: &[u8], channels: usize, resolution: usize) -> Result<Vec<Vec<u8>>> {
    if resolution < 4 || !resolution.is_power_of_two() {
        bail!("resolution {resolution} is not a power of two >= 4");
    }
    // After k halvings a float32 value is an integer sum of 4^k pixels over 4^k, exact while 255 * 4^k < 2^24,
    // i.e. for k <= 8: there integer sums give the same values and roundings, several times faster.
    if resolution > 1024 {
        return Ok(levels_float(chw, channels, resolution));
    }
    let mut out = vec![chw.to_vec()];
    let mut cur: Vec<u32> = chw.iter().map(|&v| v as u32).collect();
    let (mut r, mut shift) = (resolution, 0u32);
    while r > 4 {
        let h = r / 2;
        shift += 2;
        let mut next = vec![0u32; channels * h * h];
        for (src, dst) in cur.chunks_exact(r * r).zip(next.chunks_exact_mut(h * h)) {
            for (rows, drow) in src.chunks_exact(2 * r).zip(dst.chunks_exact_mut(h)) {
                let (r0, r1) = rows.split_at(r);
                for (x, d) in drow.iter_mut().enumerate() {
                    *d = r0[2 * x] + r0[2 * x + 1] + r1[2 * x] + r1[2 * x + 1];
                }
            }
        }
        let (half, mask) = (1u32 << (shift - 1), (1u32 << shift) - 1);
        out.push(
            next.iter()
                .map(|&s| {
                    let (q, rem) = (s >> shift, s & mask);
                    (q + (rem > half || (rem == half && q & 1 == 1)) as u32) as u8
                })
                .collect(),
        );
        cur = next;
        r = h;
    }
    Ok(out)
}

/// [`levels_of_detail`] in float32 as the official computes it (resolutions over 1024, where float32 rounds).
fn levels_float(chw: &[u8], channels: usize, resolution: usize) -> Vec<Vec<u8>> {
    let mut out = vec![chw.to_vec()];
    let mut cur: Vec<f32> = chw.iter().map(|&v| v as f32).collect();
    let mut r = resolution;
    while r > 4 {
        let h = r / 2;
        let mut next = vec![0f32; channels * h * h];
        for ch in 0..channels {
            let src = &cur[ch * r * r..(ch + 1) * r * r];
            let dst = &mut next[ch * h * h..(ch + 1) * h * h];
            for y in 0..h {
                let (r0, r1) = (&src[2 * y * r..2 * y * r + r], &src[(2 * y + 1) * r..(2 * y + 2) * r]);
                for x in 0..h {
                    dst[y * h + x] = (r0[2 * x] + r0[2 * x + 1] + r1[2 * x] + r1[2 * x + 1]) * 0.25;
                }
            }
        }
        out.push(next.iter().map(|&v| v.round_ties_even().clamp(0.0, 255.0) as u8).collect());
        cur = next;
        r = h;
    }
    out
}

/// The resolutions of the levels of detail: `resolution, resolution / 2, ..., 4`.
pub fn level_resolutions(resolution: usize) -> Vec<usize> {
    let mut v = vec![];
    let mut r = resolution;
    while r >= 4 {
        v.push(r);
        r /= 2;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(w: usize, h: usize, c: usize) -> ImageU8 {
        let mut d = vec![];
        for y in 0..h {
            for x in 0..w {
                for k in 0..c {
                    d.push(((x * 37 + y * 101 + k * 53 + (x * y) % 7 * 19) % 256) as u8);
                }
            }
        }
        ImageU8::new(w, h, c, d)
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Reference outputs of Pillow 12 `Image.fromarray(pattern).resize((ow, oh), Image.LANCZOS)` (the filter
    /// `ANTIALIAS` names), recorded once from Python; `pattern` is the same formula there.
    #[test]
    fn resize_matches_pillow_lanczos_exactly() {
        let cases = [
            (13, 11, 3, 5, 5, "5a746b7095a2888e6e5e66797cb07f7f8a909a946e75866f8b797e9c9f778d6bab7b70a4bf765d7e74aa3b72948870663a568b7baaa3785f643b6ba98d77898188868c948b8a8086888c90"),
            (7, 6, 1, 16, 12, "000004101d2e4d748c9aa2b0c3d1dbe009112746636c6457576e8695a9c5dce534446193c7c98a340e2d5b6e86adccd99790828ab7cb973e1327526c7d86868aeabb6b26326a87847767729aa5703221c19b5c23275da0cab8796bb2d8881f004950607e9ebadee8ac4c3fa8fabd541a242d447ecfffffd8781e208dedd388547c551e1e90feffa8481b327fc4c4a085d9a3461362c6c57c516288a9c6cdc8c3f9db965c688f887080b8e2e9efeef1f1fff7c88e716e666ea0ebffffffffffff"),
            (40, 30, 3, 8, 8, "798d837f86778289757c8d787d8872808a768389777e867c8372908778846a7a8a687a8b6472885d778b5f6f8c597493758384798b8b7b7f8d7e818b817e8783818a80818f7c7b7d8c8e6c847c6e887e6e8a82708b7c728b81758364788d67727c70897b728d7f748a82778d7d7a917a7c817981868181807d8b8e8488837e8e86818c8a848a7c85857988857b8993787d87757e86737984757d7b787f79757f7b766e7e797d857a759a847e9e81819985838a8785858a88888c88818f868390"),
        ];
        for (w, h, c, ow, oh, want) in cases {
            let got = resize_lanczos(&pattern(w, h, c), ow, oh);
            assert_eq!(got.dims(), (ow, oh, c));
            assert_eq!(got.data, unhex(want), "{w}x{h}x{c} -> {ow}x{oh}");
        }
    }

    #[test]
    fn center_crop_takes_the_middle_square_rounding_down() {
        // 5 wide, 2 high: crop 2, x offset (5-2)//2 = 1.
        let img = ImageU8::new(5, 2, 1, (0..10).collect());
        let c = center_crop_square(&img);
        assert_eq!((c.width, c.height), (2, 2));
        assert_eq!(c.data, vec![1, 2, 6, 7]);
        // 2 wide, 5 high: y offset 1.
        let img = ImageU8::new(2, 5, 1, (0..10).collect());
        assert_eq!(center_crop_square(&img).data, vec![2, 3, 4, 5]);
    }

    #[test]
    fn lods_match_float_box_average_with_round_half_even() {
        // 8x8, one channel; hand-derived values for a few 2x2 blocks.
        let mut chw = vec![0u8; 64];
        chw[0] = 1; // block (0,0): (1+0+0+0)/4 = 0.25 -> 0
        chw[2] = 2; // block (0,1): 2/4 = 0.5 -> 0 (half to even)
        chw[4] = 6; // block (0,2): 6/4 = 1.5 -> 2 (half to even)
        chw[6] = 255;
        chw[7] = 255;
        chw[14] = 255;
        chw[15] = 254; // block (0,3): 1019/4 = 254.75 -> 255
        let lods = levels_of_detail(&chw, 1, 8).unwrap();
        assert_eq!(lods.len(), 2);
        assert_eq!(&lods[1][..4], &[0, 0, 2, 255]);
    }

    #[test]
    fn lods_from_float_differ_from_requantised() {
        // 8x8 blocks of 0.5 (three of each four) and 2.5: the float 4x4 average is 1.0 -> 1, whereas averaging the
        // quantised 8x8 level (0, 0, 0, 2) would give 0.5 -> 0.
        let mut chw = vec![0u8; 256];
        for by in 0..8 {
            for bx in 0..8 {
                let sum = if by % 2 == 1 && bx % 2 == 1 { 10 } else { 2 };
                chw[(2 * by) * 16 + 2 * bx] = sum;
            }
        }
        let lods = levels_of_detail(&chw, 1, 16).unwrap();
        assert_eq!(lods[1][0], 0); // 0.5 -> 0
        assert_eq!(lods[1][9], 2); // 2.5 -> 2
        assert!(lods[2].iter().all(|&v| v == 1), "{:?}", lods[2]);
    }

    /// The integer sums give the float32 path's bytes at every level (random images, every resolution they serve).
    #[test]
    fn integer_levels_equal_the_float32_levels() {
        let mut state = 7u64;
        for res in [4usize, 8, 32, 256, 1024] {
            for channels in [1, 3] {
                let chw: Vec<u8> =
                    (0..channels * res * res).map(|_| (crate::rng::splitmix64(&mut state) % 256) as u8).collect();
                assert_eq!(levels_of_detail(&chw, channels, res).unwrap(), levels_float(&chw, channels, res), "{res}");
            }
        }
        // Halves on every level: a checkerboard of 0 and 1 averages to 0.5, 0.5, ... and rounds to even.
        let board: Vec<u8> = (0..64 * 64).map(|i| ((i / 64 + i % 64) % 2) as u8).collect();
        assert_eq!(levels_of_detail(&board, 1, 64).unwrap(), levels_float(&board, 1, 64));
    }

    #[test]
    fn chw_roundtrip() {
        let img = ImageU8::new(3, 2, 3, (0..18).collect());
        let chw = to_chw(&img);
        assert_eq!(&chw[..6], &[0, 3, 6, 9, 12, 15]);
        assert_eq!(from_chw(&chw, 3, 3, 2), img);
    }

    #[test]
    fn resize_to_same_size_is_identity_and_constant_stays_constant() {
        let img = ImageU8::new(7, 5, 3, (0..105).map(|i| (i * 7 % 256) as u8).collect());
        assert_eq!(resize_lanczos(&img, 7, 5), img);
        let flat = ImageU8::new(37, 23, 3, vec![77; 37 * 23 * 3]);
        for (w, h) in [(8, 8), (64, 64), (5, 30)] {
            let r = resize_lanczos(&flat, w, h);
            assert!(r.data.iter().all(|&v| v == 77), "{w}x{h}");
        }
    }
}
