//! Filters of the pipe: the sym6 low-pass of the geometric resampling, the four-band filter bank of `imgfilter`,
//! a separable upfirdn2d and reflection padding that works for any pad width.

use super::{AugmentSpec, Draw};
use tch::{Device, Kind, Tensor};

/// Daubechies symlet low-pass coefficients (PyWavelets' `sym2`, `sym6`), as the official pipe lists them.
pub(super) const SYM2: [f64; 4] = [-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025];
pub(super) const SYM6: [f64; 12] = [
    0.015404109327027373,
    0.0034907120842174702,
    -0.11799011114819057,
    -0.048311742585633,
    0.4910559419267466,
    0.787641141030194,
    0.3379294217276218,
    -0.07263752278646252,
    -0.021060292512300564,
    0.04472490177066578,
    0.0017677118642428036,
    -0.007800708325034148,
];

/// Expected power of the four bands (a 1/f spectrum); each band's gain is normalised against it.
const EXPECTED_POWER: [f64; 4] = [10.0 / 13.0, 1.0 / 13.0, 1.0 / 13.0, 1.0 / 13.0];

/// A separable float32 filter normalised to unit DC gain (`upfirdn2d.setup_filter` for >= 8 taps).
pub(super) fn wavelet_filter(taps: &[f64], device: Device) -> Tensor {
    let f = Tensor::from_slice(taps).to_kind(Kind::Float);
    (&f / f.sum(Kind::Float)).to_device(device)
}

fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; a.len() + b.len() - 1];
    for (i, x) in a.iter().enumerate() {
        for (j, y) in b.iter().enumerate() {
            out[i + j] += x * y;
        }
    }
    out
}

/// The official filter bank [4, 43]: row i passes band i of an octave decomposition built from sym2 (row 0 the
/// lowest frequencies); the rows sum to a unit impulse, so equal gains leave the image unchanged.
pub(super) fn filter_bank() -> Vec<Vec<f64>> {
    let lo = SYM2;
    let hi: Vec<f64> = lo.iter().enumerate().map(|(k, v)| if k % 2 == 0 { *v } else { -v }).collect();
    let rev = |v: &[f64]| v.iter().rev().copied().collect::<Vec<_>>();
    let lo2: Vec<f64> = convolve(&lo, &rev(&lo)).iter().map(|v| v / 2.0).collect();
    let hi2: Vec<f64> = convolve(&hi, &rev(&hi)).iter().map(|v| v / 2.0).collect();
    let mut bank = vec![vec![1.0], vec![0.0], vec![0.0], vec![0.0]];
    for i in 1..bank.len() {
        for row in bank.iter_mut() {
            // Zero-insert upsampling (one octave down), then the half-band low-pass.
            let mut up = vec![0.0; row.len() * 2 - 1];
            for (k, v) in row.iter().enumerate() {
                up[2 * k] = *v;
            }
            *row = convolve(&up, &lo2);
        }
        let start = (bank[i].len() - hi2.len()) / 2;
        for (k, v) in hi2.iter().enumerate() {
            bank[i][start + k] += v;
        }
    }
    bank
}

/// Source index of each padded position under reflection without repeating the edge (PyTorch's 'reflect'),
/// folded as often as needed so that any pad width works.
fn reflect_index(n: i64, before: i64, after: i64) -> Vec<i64> {
    (-before..n + after)
        .map(|j| {
            if n == 1 {
                return 0;
            }
            let period = 2 * (n - 1);
            let m = j.rem_euclid(period);
            if m < n {
                m
            } else {
                period - m
            }
        })
        .collect()
}

/// Reflection padding of NCHW images by `[left, right, top, bottom]`; equals `F.pad(mode='reflect')` where that
/// is defined (pad < size). Index selection keeps it twice differentiable.
pub(super) fn reflect_pad(x: &Tensor, pad: [i64; 4]) -> Tensor {
    let (_, _, h, w) = x.size4().expect("NCHW");
    let [l, r, t, b] = pad;
    let dev = x.device();
    let mut x = x.shallow_clone();
    if l > 0 || r > 0 {
        x = x.index_select(3, &Tensor::from_slice(&reflect_index(w, l, r)).to_device(dev));
    }
    if t > 0 || b > 0 {
        x = x.index_select(2, &Tensor::from_slice(&reflect_index(h, t, b)).to_device(dev));
    }
    x
}

/// `upfirdn2d` with a separable filter `f` [taps]: zero-insert by `up`, pad `[x0, x1, y0, y1]` with zeros
/// (negative crops), filter rows then columns (true convolution unless `flip_filter`), keep every `down`-th
/// pixel. `gain` is the 2-D gain (each pass gets its square root).
pub(super) fn upfirdn2d_sep(
    x: &Tensor,
    f: &Tensor,
    up: i64,
    down: i64,
    pad: [i64; 4],
    flip_filter: bool,
    gain: f64,
) -> Tensor {
    let (n, c, h, w) = x.size4().expect("NCHW");
    let mut x = if up > 1 {
        x.reshape([n, c, h, 1, w, 1]).constant_pad_nd([0, up - 1, 0, 0, 0, up - 1]).reshape([n, c, h * up, w * up])
    } else {
        x.shallow_clone()
    };
    let [px0, px1, py0, py1] = pad;
    if px0 > 0 || px1 > 0 || py0 > 0 || py1 > 0 {
        x = x.constant_pad_nd([px0.max(0), px1.max(0), py0.max(0), py1.max(0)]);
    }
    if px0 < 0 || px1 < 0 || py0 < 0 || py1 < 0 {
        let (hh, ww) = (x.size()[2], x.size()[3]);
        x = x.slice(2, (-py0).max(0), hh - (-py1).max(0), 1).slice(3, (-px0).max(0), ww - (-px1).max(0), 1);
    }
    let f = f * gain.sqrt();
    // conv2d correlates, so a convolution needs the filter reversed.
    let f = if flip_filter { f } else { f.flip([0]) };
    let taps = f.size()[0];
    let f = f.to_kind(x.kind()).reshape([1, 1, 1, taps]).expand([c, 1, 1, taps], false);
    x = x.conv2d(&f, None::<Tensor>, [1, 1], [0, 0], [1, 1], c);
    x = x.conv2d(&f.transpose(2, 3), None::<Tensor>, [1, 1], [0, 0], [1, 1], c);
    if down > 1 {
        x = x.slice(2, 0, None, down).slice(3, 0, None, down);
    }
    x
}

/// `imgfilter`: each of the four bands is amplified by 2^N(0, imgfilter_std) with probability
/// `imgfilter * p * band_strength`, gains renormalised to the expected power, and the combined per-image filter
/// applied separably with reflection at the borders.
pub(super) fn imgfilter(x: &Tensor, s: &AugmentSpec, d: &Draw) -> Tensor {
    let (b, c, h, w) = x.size4().expect("NCHW");
    let fo = (Kind::Float, d.device);
    let bank = filter_bank();
    let (bands, taps) = (bank.len() as i64, bank[0].len() as i64);
    let flat: Vec<f64> = bank.into_iter().flatten().collect();
    let bank = Tensor::from_slice(&flat).to_kind(Kind::Float).reshape([bands, taps]).to_device(d.device);
    let expected = Tensor::from_slice(&EXPECTED_POWER).to_kind(Kind::Float).to_device(d.device);

    let mut g = Tensor::ones([b, bands], fo);
    let base = d.prob(s.imgfilter);
    for (i, &strength) in s.imgfilter_bands.iter().enumerate() {
        let t_i = (d.randn(&[b]) * s.imgfilter_std).exp2();
        let t_i = t_i.where_self(&d.coin(&[b], base * strength as f32), &t_i.ones_like());
        let t = Tensor::ones([b, bands], fo);
        t.narrow(1, i as i64, 1).copy_(&t_i.unsqueeze(1));
        let norm = (&expected * t.square()).sum_dim_intlist(-1, true, Kind::Float).sqrt();
        g = g * (t / norm);
    }

    let hz = g.matmul(&bank).unsqueeze(1).repeat([1, c, 1]).reshape([b * c, 1, taps]).to_kind(x.kind());
    let p = taps / 2;
    let y = reflect_pad(&x.reshape([1, b * c, h, w]), [p, p, p, p]);
    let y = y.conv2d(&hz.unsqueeze(2), None::<Tensor>, [1, 1], [0, 0], [1, 1], b * c);
    let y = y.conv2d(&hz.unsqueeze(3), None::<Tensor>, [1, 1], [0, 0], [1, 1], b * c);
    y.reshape([b, c, h, w])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_index_matches_torch_reflect_and_folds() {
        assert_eq!(reflect_index(4, 2, 2), [2, 1, 0, 1, 2, 3, 2, 1]);
        assert_eq!(reflect_index(3, 5, 0), [1, 0, 1, 2, 1, 0, 1, 2]);
        assert_eq!(reflect_index(1, 2, 1), [0, 0, 0, 0]);
    }

    #[test]
    fn filter_bank_is_a_partition_of_unity() {
        let bank = filter_bank();
        assert_eq!(bank.len(), 4);
        assert!(bank.iter().all(|r| r.len() == 43));
        for k in 0..43 {
            let sum: f64 = bank.iter().map(|r| r[k]).sum();
            let want = if k == 21 { 1.0 } else { 0.0 };
            assert!((sum - want).abs() < 1e-9, "tap {k}: {sum}");
        }
        // Values of the official bank (printed from the reference).
        assert!((bank[0][21] - 0.125).abs() < 1e-12);
        assert!((bank[3][20] + 0.28125).abs() < 1e-12);
        assert!((bank[1][12] - 7.446289062e-03).abs() < 1e-11);
    }
}
