//! The official `StyleGAN2Loss` (stylegan2-ada-pytorch `training/loss.py`): non-saturating logistic losses, R1 on
//! reals, path-length regularisation with its running mean, style mixing. The pieces are plain functions so tests
//! can check each against the reference values; `phase_*` assemble them as the official phases do.

use super::augment::AugmentPipe;
use crate::dist::Dist;
use crate::model::{Discriminator, Generator, NoiseMode};
use tch::{Kind, Tensor};

/// Beta of the `w_avg` tracking during training (official `w_avg_beta`).
pub const W_AVG_BETA: f64 = 0.995;

/// The official training phases. With lazy regularisation (an interval > 0) a network has a main and a
/// regularisation phase; without it (interval 0, the official `None`) one `*both` phase does both in one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Gmain,
    Greg,
    Gboth,
    Dmain,
    Dreg,
    Dboth,
}

impl Phase {
    pub const ALL: [Phase; 6] = [Phase::Gmain, Phase::Greg, Phase::Gboth, Phase::Dmain, Phase::Dreg, Phase::Dboth];
    pub fn name(self) -> &'static str {
        match self {
            Phase::Gmain => "Gmain",
            Phase::Greg => "Greg",
            Phase::Gboth => "Gboth",
            Phase::Dmain => "Dmain",
            Phase::Dreg => "Dreg",
            Phase::Dboth => "Dboth",
        }
    }
    pub fn index(self) -> usize {
        self as usize
    }
    /// Whether the phase updates G (else D).
    pub fn is_g(self) -> bool {
        matches!(self, Phase::Gmain | Phase::Greg | Phase::Gboth)
    }
    /// The loss a non-finite value in this phase is reported under.
    pub fn loss_name(self) -> &'static str {
        match self {
            Phase::Gmain => "Loss/G/loss",
            Phase::Greg => "Loss/G/reg (path length)",
            Phase::Gboth => "Loss/G/loss + Loss/G/reg",
            Phase::Dmain => "Loss/D/loss",
            Phase::Dreg => "Loss/D/reg (R1)",
            Phase::Dboth => "Loss/D/loss + Loss/D/reg",
        }
    }
}

/// G's training forward pass (`run_G`): mapping with `w_avg` tracking, style mixing with probability `mixing_prob`
/// (cutoff uniform in [1, num_ws), layers from the cutoff on taken from a second latent), noise as `noise` says
/// (random in training). The cutoff is applied as a mask on the device, so no value is read back to the host.
pub fn run_g(g: &Generator, z: &Tensor, c: Option<&Tensor>, mixing_prob: f64, noise: NoiseMode) -> (Tensor, Tensor) {
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
    let img = g.synthesis(&ws, noise);
    (img, ws)
}

/// D's training forward pass (`run_D`): the images through the augmentation pipe (when augmenting), then D.
pub fn run_d(d: &Discriminator, img: &Tensor, c: Option<&Tensor>, augment: Option<&AugmentPipe>) -> Tensor {
    match augment {
        Some(pipe) => d.forward(&pipe.forward(img), c),
        None => d.forward(img, c),
    }
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
/// per-sample penalty (lengths - pl_mean)^2. As the official, the new mean keeps its graph (the penalty's gradient
/// flows through the batch mean too); only the stored copy is detached.
pub fn pl_penalty(lengths: &Tensor, pl_mean: &mut Tensor, decay: f64) -> Tensor {
    let new_mean = pl_mean.lerp(&lengths.mean(Kind::Float), decay);
    tch::no_grad(|| pl_mean.copy_(&new_mean.detach()));
    (lengths - new_mean).square()
}

/// [`pl_penalty`] for one rank of a data-parallel group: the running mean moves toward the mean over all ranks'
/// lengths (so it stays identical on every rank), and the returned loss term's gradient, averaged over ranks, is the
/// one-process gradient of the whole batch's mean penalty, the part through the batch mean included. Returns the
/// per-sample penalty and the loss term to use in place of its mean (equal ranks' batch sizes).
pub fn pl_penalty_across(
    lengths: &Tensor,
    pl_mean: &mut Tensor,
    decay: f64,
    dist: &Dist,
) -> anyhow::Result<(Tensor, Tensor)> {
    let local = lengths.mean(Kind::Float);
    let global = local.detach().copy();
    dist.mean_(&[&global])?;
    let new_mean = pl_mean.lerp(&global, decay);
    tch::no_grad(|| pl_mean.copy_(&new_mean));
    let penalty = (lengths - &new_mean).square();
    // With n = n_r * world samples, the one-process gradient is 2 (l_j - m) / n - 2 decay / n^2 * S, S = sum over
    // all samples of (l_i - m) = n (global - m). Times world (ranks' gradients are averaged), the second part is the
    // gradient of -2 / n_r * S * (m_r - m), where m_r carries the graph through this rank's lengths only.
    let n_r = lengths.size()[0] as f64;
    let through = (&local - local.detach()) * (decay / dist.world as f64);
    let s = (&global - &new_mean) * (n_r * dist.world as f64);
    let loss = penalty.mean(Kind::Float) - s * through * (2.0 / n_r);
    Ok((penalty, loss))
}

/// What a phase computed: the loss to differentiate, and the per-sample statistics to report.
pub struct PhaseOut {
    pub loss: Tensor,
    pub stats: Vec<(&'static str, Tensor)>,
}

/// The official path-length term on an image and the ws it came from: `(img[:, 0, 0, 0] * 0 + penalty *
/// pl_weight).mean()` (the zero term keeps every synthesis parameter in the graph), with its statistics.
/// Across the ranks of `dist` (when given) as [`pl_penalty_across`] says.
pub fn pl_term(
    img: &Tensor,
    ws: &Tensor,
    pl_noise: &Tensor,
    pl_mean: &mut Tensor,
    decay: f64,
    weight: f64,
    dist: Option<&Dist>,
) -> anyhow::Result<PhaseOut> {
    let lengths = path_lengths(img, ws, pl_noise);
    let zero = img.select(1, 0).select(1, 0).select(1, 0) * 0.0;
    let (penalty, loss) = match dist.filter(|d| d.world > 1) {
        None => {
            let penalty = pl_penalty(&lengths, pl_mean, decay);
            let loss = (zero + &penalty * weight).mean(Kind::Float);
            (penalty, loss)
        }
        Some(d) => {
            let (penalty, term) = pl_penalty_across(&lengths, pl_mean, decay, d)?;
            (penalty, zero.mean(Kind::Float) + term * weight)
        }
    };
    let loss_gpl = &penalty * weight;
    let stats = vec![
        ("Loss/pl_lengths", lengths.detach()),
        ("Loss/pl_penalty", penalty.detach()),
        ("Loss/G/reg", loss_gpl.detach()),
    ];
    Ok(PhaseOut { loss, stats })
}

/// The official `StyleGAN2Loss` settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StyleGan2Loss {
    pub style_mixing_prob: f64,
    /// The R1 weight at the current kimg (0: no R1 term, and no Dreg step).
    pub r1_gamma: f64,
    pub pl_batch_shrink: i64,
    pub pl_decay: f64,
    /// 0: no path-length term, and no Greg step.
    pub pl_weight: f64,
}

/// One minibatch's inputs to a phase: latents and labels for the fakes, reals (float in [-1, 1]) and their labels.
pub struct PhaseInputs<'a> {
    pub z: &'a Tensor,
    pub gen_c: Option<&'a Tensor>,
    pub reals: &'a Tensor,
    pub real_c: Option<&'a Tensor>,
    /// D sees reals and fakes through this pipe (ADA); R1 is still taken w.r.t. the un-augmented reals.
    pub augment: Option<&'a AugmentPipe>,
    /// G's noise inputs: random in training (tests fix them to compare runs).
    pub noise: NoiseMode,
    /// The path-length regulariser's random image-space direction (None: drawn here).
    pub pl_noise: Option<&'a Tensor>,
    /// The data-parallel group `pl_mean` is kept identical across (None: one process).
    pub dist: Option<&'a Dist>,
}

impl<'a> PhaseInputs<'a> {
    /// One process's inputs: random noise, nothing fixed.
    pub fn new(z: &'a Tensor, reals: &'a Tensor) -> PhaseInputs<'a> {
        PhaseInputs {
            z,
            gen_c: None,
            reals,
            real_c: None,
            augment: None,
            noise: NoiseMode::Random,
            pl_noise: None,
            dist: None,
        }
    }
}

impl StyleGan2Loss {
    /// Whether `phase` computes anything: (G main, path length, D main, R1). A phase with nothing to do takes no
    /// optimizer step, as in the official loop (its gradients stay None).
    pub fn terms(&self, phase: Phase) -> (bool, bool, bool, bool) {
        let gmain = matches!(phase, Phase::Gmain | Phase::Gboth);
        let gpl = matches!(phase, Phase::Greg | Phase::Gboth) && self.pl_weight != 0.0;
        let dmain = matches!(phase, Phase::Dmain | Phase::Dboth);
        let dr1 = matches!(phase, Phase::Dreg | Phase::Dboth) && self.r1_gamma != 0.0;
        (gmain, gpl, dmain, dr1)
    }

    pub fn runs(&self, phase: Phase) -> bool {
        let (a, b, c, d) = self.terms(phase);
        a || b || c || d
    }

    /// The official `accumulate_gradients` for one phase, as a loss (the sum of each term's mean, times `gain`, the
    /// phase's interval) to differentiate w.r.t. the phase's network. None when the phase has nothing to do. The
    /// network being trained must require grad and the other not.
    pub fn phase_loss(
        &self,
        phase: Phase,
        g: &Generator,
        d: &Discriminator,
        x: &PhaseInputs,
        pl_mean: &mut Tensor,
        gain: f64,
    ) -> anyhow::Result<Option<PhaseOut>> {
        let (do_gmain, do_gpl, do_dmain, do_dr1) = self.terms(phase);
        let mut terms: Vec<Tensor> = vec![];
        let mut stats = vec![];
        let mix = self.style_mixing_prob;
        if do_gmain {
            let (img, _) = run_g(g, x.z, x.gen_c, mix, x.noise);
            let logits = run_d(d, &img, x.gen_c, x.augment);
            let loss = g_main_loss(&logits);
            stats.push(("Loss/scores/fake", logits.detach()));
            stats.push(("Loss/signs/fake", logits.detach().sign()));
            stats.push(("Loss/G/loss", loss.detach()));
            terms.push(loss.mean(Kind::Float));
        }
        if do_gpl {
            let n = (x.z.size()[0] / self.pl_batch_shrink).max(1);
            let c = x.gen_c.map(|c| c.narrow(0, 0, n));
            let (img, ws) = run_g(g, &x.z.narrow(0, 0, n), c.as_ref(), mix, x.noise);
            let noise = x.pl_noise.map_or_else(|| pl_noise_like(&img), |t| t.shallow_clone());
            let out = pl_term(&img, &ws, &noise, pl_mean, self.pl_decay, self.pl_weight, x.dist)?;
            stats.extend(out.stats);
            terms.push(out.loss);
        }
        let mut gen_logits = None;
        if do_dmain {
            let img = tch::no_grad(|| run_g(g, x.z, x.gen_c, mix, x.noise).0);
            let logits = run_d(d, &img, x.gen_c, x.augment);
            stats.push(("Loss/scores/fake", logits.detach()));
            stats.push(("Loss/signs/fake", logits.detach().sign()));
            terms.push(logits.softplus().mean(Kind::Float));
            gen_logits = Some(logits.detach());
        }
        if do_dmain || do_dr1 {
            let reals = x.reals.detach().set_requires_grad(do_dr1);
            let logits = run_d(d, &reals, x.real_c, x.augment);
            stats.push(("Loss/scores/real", logits.detach()));
            stats.push(("Loss/signs/real", logits.detach().sign()));
            if let Some(gen_logits) = gen_logits {
                stats.push(("Loss/D/loss", d_main_loss(&gen_logits, &logits.detach())));
                terms.push((-&logits).softplus().mean(Kind::Float));
            }
            if do_dr1 {
                let penalty = r1_penalty(&reals, &logits);
                let loss_r1 = &penalty * (self.r1_gamma / 2.0);
                stats.push(("Loss/r1_penalty", penalty.detach()));
                stats.push(("Loss/D/reg", loss_r1.detach()));
                // `logits * 0` keeps every D parameter in the graph, as the official does.
                terms.push((logits.squeeze_dim(1) * 0.0 + loss_r1).mean(Kind::Float));
            }
        }
        let Some(total) = terms.into_iter().reduce(|a, b| a + b) else { return Ok(None) };
        Ok(Some(PhaseOut { loss: total * gain, stats }))
    }
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
    fn pl_penalty_gradient_flows_through_the_batch_mean() {
        // P = sum_i (l_i - m)^2 with m = m0 + decay * (mean(l) - m0):
        // dP/dl_i = 2 r_i - 2 decay / N * sum_j r_j, r = l - m. Here m = 1.02, r = [0.98, 2.98].
        let lengths = t(&[2.0, 4.0]).set_requires_grad(true);
        let mut pl_mean = Tensor::from(1.0f32);
        let p = pl_penalty(&lengths, &mut pl_mean, 0.01).sum(Kind::Float);
        let g = vals(&Tensor::run_backward(&[p], &[&lengths], false, false)[0]);
        let expect = [2.0 * 0.98 - 0.01 * 3.96, 2.0 * 2.98 - 0.01 * 3.96];
        assert!((g[0] - expect[0]).abs() < 1e-5 && (g[1] - expect[1]).abs() < 1e-5, "{g:?} vs {expect:?}");
        assert!(!pl_mean.requires_grad(), "the stored mean is detached");
    }

    /// Two ranks, each with half the lengths: the same new mean on both, and the ranks' averaged gradients equal the
    /// one-process gradient of the whole batch's mean penalty.
    #[test]
    fn pl_penalty_across_ranks_matches_one_process() {
        let all = [2.0f32, 4.0, 1.0, 7.0, 3.0, 0.5];
        let lengths = t(&all).set_requires_grad(true);
        let mut one_mean = Tensor::from(1.5f32);
        let p = pl_penalty(&lengths, &mut one_mean, 0.3).mean(Kind::Float);
        let one_grad = vals(&Tensor::run_backward(&[p], &[&lengths], false, false)[0]);
        let ranks = crate::dist::testing::on_ranks(2, move |d| {
            let mine: Vec<f32> = all.iter().skip(d.rank).step_by(2).copied().collect();
            let l = t(&mine).set_requires_grad(true);
            let mut pl_mean = Tensor::from(1.5f32);
            let (penalty, loss) = pl_penalty_across(&l, &mut pl_mean, 0.3, &d).unwrap();
            // Ranks share parameters, whose gradient is the mean over ranks: per sample, this rank's gradient / world.
            let g = Tensor::run_backward(&[loss], &[&l], false, false)[0].shallow_clone() / d.world as f64;
            (d.rank, pl_mean.double_value(&[]), vals(&g), vals(&penalty.detach()))
        });
        let one_penalty = vals(&(t(&all) - one_mean.double_value(&[])).square());
        for (rank, mean, grad, penalty) in ranks {
            assert!((mean - one_mean.double_value(&[])).abs() < 1e-6, "{mean}");
            for (k, (g, p)) in grad.iter().zip(&penalty).enumerate() {
                let j = rank + 2 * k;
                assert!((g - one_grad[j]).abs() < 1e-5, "rank {rank} sample {j}: {g} vs {}", one_grad[j]);
                assert!((p - one_penalty[j]).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn phases_with_nothing_to_do_do_not_run() {
        let mut l = StyleGan2Loss {
            style_mixing_prob: 0.9,
            r1_gamma: 10.0,
            pl_batch_shrink: 2,
            pl_decay: 0.01,
            pl_weight: 2.0,
        };
        assert!(Phase::ALL.iter().all(|&p| l.runs(p)));
        l.r1_gamma = 0.0;
        assert!(!l.runs(Phase::Dreg));
        assert_eq!(l.terms(Phase::Dboth), (false, false, true, false));
        l.pl_weight = 0.0;
        assert!(!l.runs(Phase::Greg));
        assert_eq!(l.terms(Phase::Gboth), (true, false, false, false));
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
