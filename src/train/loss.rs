//! The official `StyleGAN2Loss` (stylegan2-ada-pytorch `training/loss.py`): non-saturating logistic losses, R1 on
//! reals, path-length regularisation with its running mean, style mixing. The pieces are plain functions so tests
//! can check each against the reference values; `phase_*` assemble them as the official phases do.

use crate::model::{Discriminator, Generator, NoiseMode};
use tch::{Kind, Tensor};

/// Beta of the `w_avg` tracking during training (official `w_avg_beta`).
pub const W_AVG_BETA: f64 = 0.995;

/// The four official phases, in their order within a minibatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Gmain,
    Greg,
    Dmain,
    Dreg,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Gmain, Phase::Greg, Phase::Dmain, Phase::Dreg];
    pub fn name(self) -> &'static str {
        match self {
            Phase::Gmain => "Gmain",
            Phase::Greg => "Greg",
            Phase::Dmain => "Dmain",
            Phase::Dreg => "Dreg",
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
}

/// G's training forward pass (`run_G`): mapping with `w_avg` tracking, style mixing with probability `mixing_prob`
/// (cutoff uniform in [1, num_ws), layers from the cutoff on taken from a second latent), random noise.
/// The cutoff is applied as a mask on the device, so no value is read back to the host.
pub fn run_g(g: &Generator, z: &Tensor, c: Option<&Tensor>, mixing_prob: f64) -> (Tensor, Tensor) {
    let mut ws = g.mapping_train(z, c, W_AVG_BETA);
    if mixing_prob > 0.0 {
        let num_ws = ws.size()[1];
        let dev = ws.device();
        let cutoff = Tensor::randint_low(1, num_ws, [1], (Kind::Int64, dev));
        let mix = Tensor::rand([1], (Kind::Float, dev)).lt(mixing_prob);
        let cutoff = cutoff.where_self(&mix, &Tensor::full([1], num_ws, (Kind::Int64, dev)));
        let layer_mixed = Tensor::arange(num_ws, (Kind::Int64, dev)).ge_tensor(&cutoff).view([1, num_ws, 1]);
        let w2 = g.mapping.forward_w(Some(&z.randn_like()), c);
        let ws2 = g.mapping.broadcast_truncate(&w2, 1.0, None);
        ws = ws2.where_self(&layer_mixed, &ws);
    }
    let img = g.synthesis(&ws, NoiseMode::Random);
    (img, ws)
}

/// Per-sample G loss: softplus(-D(G(z))).
pub fn g_main_loss(gen_logits: &Tensor) -> Tensor {
    (-gen_logits).softplus()
}

/// Per-sample D loss: softplus(D(G(z))) + softplus(-D(x)).
pub fn d_main_loss(gen_logits: &Tensor, real_logits: &Tensor) -> Tensor {
    gen_logits.softplus() + (-real_logits).softplus()
}

/// R1 penalty per sample: |grad_x sum(D(x))|^2, with a graph so it can be differentiated again.
/// `reals` must require grad and `real_logits` be D(reals).
pub fn r1_penalty(reals: &Tensor, real_logits: &Tensor) -> Tensor {
    let grads = Tensor::run_backward(&[real_logits.sum(Kind::Float)], &[reals], true, true);
    grads[0].square().sum_dim_intlist(&[1i64, 2, 3][..], false, Kind::Float)
}

/// Path lengths per sample: |J^T y| averaged over the ws, where y = `pl_noise` and J = d img / d ws.
pub fn path_lengths(img: &Tensor, ws: &Tensor, pl_noise: &Tensor) -> Tensor {
    let grads = Tensor::run_backward(&[(img * pl_noise).sum(Kind::Float)], &[ws], true, true);
    grads[0].square().sum_dim_intlist(&[2i64][..], false, Kind::Float).mean_dim(&[1i64][..], false, Kind::Float).sqrt()
}

/// The official path-length noise: randn like the image / sqrt(H * W).
pub fn pl_noise_like(img: &Tensor) -> Tensor {
    let s = img.size();
    img.randn_like() / ((s[2] * s[3]) as f64).sqrt()
}

/// Moves the running `pl_mean` (a 0-d tensor, updated in place) toward this batch's mean length and returns the
/// per-sample penalty (lengths - pl_mean)^2.
pub fn pl_penalty(lengths: &Tensor, pl_mean: &mut Tensor, decay: f64) -> Tensor {
    let new_mean = pl_mean.lerp(&lengths.mean(Kind::Float).detach(), decay);
    tch::no_grad(|| pl_mean.copy_(&new_mean));
    (lengths - new_mean).square()
}

/// What a phase computed: the loss to differentiate, and the per-sample statistics to report.
pub struct PhaseOut {
    pub loss: Tensor,
    pub stats: Vec<(&'static str, Tensor)>,
}

/// Gmain: maximise D's logits for generated images. D must not require grad (its parameters are frozen).
pub fn phase_gmain(g: &Generator, d: &Discriminator, z: &Tensor, c: Option<&Tensor>, mixing: f64) -> PhaseOut {
    let (img, _) = run_g(g, z, c, mixing);
    let logits = d.forward(&img, c);
    let loss = g_main_loss(&logits);
    let stats = vec![
        ("Loss/scores/fake", logits.detach()),
        ("Loss/signs/fake", logits.detach().sign()),
        ("Loss/G/loss", loss.detach()),
    ];
    PhaseOut { loss: loss.mean(Kind::Float), stats }
}

/// Greg: path-length regularisation on batch / pl_batch_shrink samples, scaled by the interval (`gain`).
#[allow(clippy::too_many_arguments)]
pub fn phase_greg(
    g: &Generator,
    z: &Tensor,
    c: Option<&Tensor>,
    mixing: f64,
    pl_mean: &mut Tensor,
    pl_decay: f64,
    pl_weight: f64,
    gain: f64,
) -> PhaseOut {
    let (img, ws) = run_g(g, z, c, mixing);
    let noise = pl_noise_like(&img);
    let lengths = path_lengths(&img, &ws, &noise);
    let penalty = pl_penalty(&lengths, pl_mean, pl_decay);
    let loss_gpl = &penalty * pl_weight;
    // img[:, 0, 0, 0] * 0 keeps every parameter in the graph, as the official does.
    let zero = img.select(1, 0).select(1, 0).select(1, 0) * 0.0;
    let loss = (zero + &loss_gpl).mean(Kind::Float) * gain;
    let stats = vec![
        ("Loss/pl_lengths", lengths.detach()),
        ("Loss/pl_penalty", penalty.detach()),
        ("Loss/G/reg", loss_gpl.detach()),
    ];
    PhaseOut { loss, stats }
}

/// Dmain: D on generated images (G run without a graph) and on reals.
pub fn phase_dmain(
    g: &Generator,
    d: &Discriminator,
    z: &Tensor,
    gen_c: Option<&Tensor>,
    reals: &Tensor,
    real_c: Option<&Tensor>,
    mixing: f64,
) -> PhaseOut {
    let img = tch::no_grad(|| run_g(g, z, gen_c, mixing).0);
    let gen_logits = d.forward(&img, gen_c);
    let real_logits = d.forward(reals, real_c);
    let loss = d_main_loss(&gen_logits, &real_logits);
    let (gl, rl) = (gen_logits.detach(), real_logits.detach());
    let stats = vec![
        ("Loss/scores/fake", gl.shallow_clone()),
        ("Loss/signs/fake", gl.sign()),
        ("Loss/scores/real", rl.shallow_clone()),
        ("Loss/signs/real", rl.sign()),
        ("Loss/D/loss", loss.detach()),
    ];
    PhaseOut { loss: loss.mean(Kind::Float), stats }
}

/// Dreg: R1 on reals, r1_gamma / 2 x penalty, scaled by the interval (`gain`).
pub fn phase_dreg(d: &Discriminator, reals: &Tensor, real_c: Option<&Tensor>, r1_gamma: f64, gain: f64) -> PhaseOut {
    let x = reals.detach().set_requires_grad(true);
    let logits = d.forward(&x, real_c);
    let penalty = r1_penalty(&x, &logits);
    let loss_r1 = &penalty * (r1_gamma / 2.0);
    let loss = (&logits.squeeze_dim(1) * 0.0 + &loss_r1).mean(Kind::Float) * gain;
    let stats = vec![("Loss/r1_penalty", penalty.detach()), ("Loss/D/reg", loss_r1.detach())];
    PhaseOut { loss, stats }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v)
    }

    fn vals(x: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(x.to_kind(Kind::Double)).unwrap()
    }

    #[test]
    fn logistic_losses_by_hand() {
        let sp = |x: f64| (1.0 + x.exp()).ln();
        let gen = [-2.0f32, 0.0, 1.5];
        let real = [0.5f32, -1.0, 3.0];
        let g = vals(&g_main_loss(&t(&gen)));
        let d = vals(&d_main_loss(&t(&gen), &t(&real)));
        for i in 0..3 {
            assert!((g[i] - sp(-gen[i] as f64)).abs() < 1e-6);
            assert!((d[i] - (sp(gen[i] as f64) + sp(-real[i] as f64))).abs() < 1e-6);
        }
        // log 2 at a logit of 0: the equilibrium value.
        assert!((g[1] - std::f64::consts::LN_2).abs() < 1e-6);
    }

    #[test]
    fn pl_mean_lerps_and_penalty_uses_the_new_mean() {
        let mut pl_mean = Tensor::from(1.0f32);
        let lengths = t(&[2.0, 4.0]);
        let p = vals(&pl_penalty(&lengths, &mut pl_mean, 0.01));
        // mean 3 -> pl_mean = 1 + 0.01 * (3 - 1) = 1.02.
        assert!((pl_mean.double_value(&[]) - 1.02).abs() < 1e-6);
        assert!((p[0] - 0.98f64.powi(2)).abs() < 1e-5 && (p[1] - 2.98f64.powi(2)).abs() < 1e-5);
    }

    #[test]
    fn r1_of_a_linear_critic_is_the_weight_norm() {
        // D(x) = sum(w * x) per sample: grad = w, penalty = |w|^2.
        let x = Tensor::randn([2, 1, 2, 2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let w = t(&[1.0, -2.0, 0.5, 3.0]).view([1, 1, 2, 2]);
        let logits = (&x * &w).sum_dim_intlist(&[1i64, 2, 3][..], true, Kind::Float);
        let p = vals(&r1_penalty(&x, &logits));
        assert!((p[0] - 14.25).abs() < 1e-5 && (p[1] - 14.25).abs() < 1e-5, "{p:?}");
    }
}
