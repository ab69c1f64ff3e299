//! The official `MappingNetwork`: z (and an optional class embedding) -> w, with `w_avg` tracking and truncation.

use crate::nn::{Act, FullyConnected};
use tch::nn::Path;
use tch::{Kind, Tensor};

/// The official MappingNetwork's `lr_multiplier` default, which D's label mapping always uses.
pub const DEFAULT_LR_MUL: f64 = 0.01;

/// A latent space of the generator: z (the mapping network's input) or w (its output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Space {
    Z,
    W,
}

/// Spherical interpolation between the rows of `a` and `b` (z space) at `t` (a scalar or one value per row, [N, 1]),
/// as the official PPL code's `slerp`. The guards only act where the official would give NaN (parallel rows); between
/// such rows the result is `a` to within the rounding of acos near 1 (about 1e-4 in fp32).
pub fn slerp(a: &Tensor, b: &Tensor, t: &Tensor) -> Tensor {
    let unit = |x: &Tensor| x / x.norm_scalaropt_dim(2, [-1i64].as_slice(), true).clamp_min(1e-12);
    let (a, b) = (unit(a), unit(b));
    let d = (&a * &b).sum_dim_intlist([-1i64].as_slice(), true, a.kind());
    let p = t * d.clamp(-1.0, 1.0).acos();
    let c = unit(&(&b - &d * &a));
    unit(&(&a * p.cos() + c * p.sin()))
}

#[derive(Debug)]
pub struct MappingNetwork {
    z_dim: i64,
    w_dim: i64,
    /// None for the discriminator's label mapping, which broadcasts nothing and tracks no average.
    num_ws: Option<i64>,
    embed: Option<FullyConnected>,
    fcs: Vec<FullyConnected>,
    pub w_avg: Option<Tensor>,
}

pub struct MappingSpec {
    pub z_dim: i64,
    pub c_dim: i64,
    pub w_dim: i64,
    pub num_ws: Option<i64>,
    pub num_layers: i64,
    pub lr_mul: f64,
}

/// x * rsqrt(mean(x^2) + eps) along dim 1.
fn normalize_2nd_moment(x: &Tensor) -> Tensor {
    x * (x.square().mean_dim(&[1i64][..], true, Kind::Float) + 1e-8).rsqrt()
}

impl MappingNetwork {
    pub fn new(p: &Path, s: MappingSpec) -> Self {
        let embed_features = if s.c_dim > 0 { s.w_dim } else { 0 };
        let embed = (s.c_dim > 0)
            .then(|| FullyConnected::new(&(p / "embed"), s.c_dim, embed_features, true, Act::Linear, 1.0, 0.0));
        let mut features = vec![s.z_dim + embed_features];
        features.extend(std::iter::repeat_n(s.w_dim, s.num_layers as usize));
        let fcs = (0..s.num_layers as usize)
            .map(|i| {
                let fp = p / format!("fc{i}");
                FullyConnected::new(&fp, features[i], features[i + 1], true, Act::Lrelu, s.lr_mul, 0.0)
            })
            .collect();
        let w_avg = s.num_ws.map(|_| p.zeros_no_train("w_avg", &[s.w_dim]));
        MappingNetwork { z_dim: s.z_dim, w_dim: s.w_dim, num_ws: s.num_ws, embed, fcs, w_avg }
    }

    pub fn w_dim(&self) -> i64 {
        self.w_dim
    }

    /// Unbroadcast w [N, w_dim] (no truncation, no tracking).
    pub fn forward_w(&self, z: Option<&Tensor>, c: Option<&Tensor>) -> Tensor {
        let zx = (self.z_dim > 0).then(|| normalize_2nd_moment(&z.expect("mapping needs z").to_kind(Kind::Float)));
        let cy = self
            .embed
            .as_ref()
            .map(|e| normalize_2nd_moment(&e.forward(&c.expect("conditional mapping needs c").to_kind(Kind::Float))));
        let mut x = match (zx, cy) {
            (Some(x), Some(y)) => Tensor::cat(&[x, y], 1),
            (Some(x), None) => x,
            (None, Some(y)) => y,
            (None, None) => panic!("mapping without inputs"),
        };
        for fc in &self.fcs {
            x = fc.forward(&x);
        }
        x
    }

    /// Moves `w_avg` toward the batch mean of `w` (training mode): w_avg = lerp(mean(w), w_avg, beta).
    pub fn update_w_avg(&self, w: &Tensor, beta: f64) {
        if let Some(avg) = &self.w_avg {
            tch::no_grad(|| {
                let target = w.detach().mean_dim(&[0i64][..], false, Kind::Float).lerp(avg, beta);
                avg.shallow_clone().copy_(&target);
            });
        }
    }

    /// Broadcast to [N, num_ws, w_dim] and truncate toward `w_avg` (all layers, or the first `cutoff`).
    pub fn broadcast_truncate(&self, w: &Tensor, psi: f64, cutoff: Option<i64>) -> Tensor {
        let Some(num_ws) = self.num_ws else { return w.shallow_clone() };
        let x = w.unsqueeze(1).repeat([1, num_ws, 1]);
        if psi == 1.0 {
            return x;
        }
        let avg = self.w_avg.as_ref().expect("truncation needs w_avg");
        match cutoff {
            None => avg.lerp(&x, psi),
            Some(k) => {
                let k = k.min(num_ws);
                let head = avg.lerp(&x.narrow(1, 0, k), psi);
                Tensor::cat(&[head, x.narrow(1, k, num_ws - k)], 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn angle(a: &Tensor, b: &Tensor) -> Tensor {
        let cos = (a * b).sum_dim_intlist([-1i64].as_slice(), false, Kind::Double)
            / (a.norm_scalaropt_dim(2, [-1i64].as_slice(), false) * b.norm_scalaropt_dim(2, [-1i64].as_slice(), false));
        cos.clamp(-1.0, 1.0).acos()
    }

    #[test]
    fn slerp_walks_the_great_circle_at_constant_speed() {
        tch::manual_seed(3);
        let a = Tensor::randn([4, 16], (Kind::Double, tch::Device::Cpu));
        let b = Tensor::randn([4, 16], (Kind::Double, tch::Device::Cpu));
        let whole = angle(&a, &b);
        let t = Tensor::from_slice(&[0.0, 0.25, 0.5, 1.0]).view([4, 1]);
        let s = slerp(&a, &b, &t);
        let ones = Tensor::ones([4], (Kind::Double, tch::Device::Cpu));
        assert!(s.norm_scalaropt_dim(2, [-1i64].as_slice(), false).allclose(&ones, 1e-9, 1e-12, false));
        // The angle from a is t times the whole angle, the rest is left to b: the path stays on the great circle.
        let from_a = angle(&a, &s);
        let to_b = angle(&s, &b);
        assert!(from_a.allclose(&(&whole * t.view([4])), 1e-7, 1e-9, false), "{from_a} vs {whole}");
        assert!((from_a + to_b).allclose(&whole, 1e-7, 1e-9, false));
        // A scalar t applies to every row.
        let mid = slerp(&a, &b, &Tensor::from(0.5f64));
        assert!(angle(&a, &mid).allclose(&angle(&mid, &b), 1e-7, 1e-9, false));
    }

    #[test]
    fn slerp_between_parallel_rows_stays_finite() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([1, 3]);
        let s = slerp(&a, &(&a * 2.0), &Tensor::from(0.5f64));
        let unit = &a / a.norm();
        assert!(s.allclose(&unit, 1e-3, 1e-3, false), "{s} vs {unit}");
    }
}
