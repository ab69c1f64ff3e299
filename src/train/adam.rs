//! Adam exactly as `torch.optim.Adam` (the official optimizer): bias-corrected moments, eps added outside the square
//! root, updates in place without autograd. Its whole state is a few tensors and a step count, so a snapshot can
//! store it and a resumed run continues bit for bit.

use anyhow::{ensure, Result};
use std::collections::BTreeMap;
use tch::Tensor;

/// Hyper-parameters; the training loop sets `lr` every step (schedules, lazy-regularisation ratio, rollback factor).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamParams {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

pub struct Adam {
    pub params: AdamParams,
    /// (name, parameter, exp_avg, exp_avg_sq) in name order.
    slots: Vec<(String, Tensor, Tensor, Tensor)>,
    /// Number of updates so far (torch keeps it per parameter; every parameter here is updated together).
    pub step: u64,
    /// Whether an unconditional step with beta1 = 0 on CPU float tensors runs as one pass per tensor
    /// (`ffi::adam`, the same values as the ATen ops); false runs the ops.
    pub one_pass: bool,
}

impl Adam {
    /// `named` are the trainable parameters (not buffers), in a fixed order.
    pub fn new(named: &[(String, Tensor)], params: AdamParams) -> Adam {
        let slots = named
            .iter()
            .map(|(n, p)| (n.clone(), p.shallow_clone(), p.zeros_like().detach(), p.zeros_like().detach()))
            .collect();
        Adam { params, slots, step: 0, one_pass: true }
    }

    pub fn parameters(&self) -> Vec<Tensor> {
        self.slots.iter().map(|s| s.1.shallow_clone()).collect()
    }

    /// One update from `grads` (one per parameter, in order; undefined = no gradient, parameter left alone as
    /// torch does for `grad is None`).
    pub fn step(&mut self, grads: &[Tensor]) {
        self.step_if(grads, None)
    }

    /// [`Adam::step`], applied only where the 0-d bool tensor `keep` (on the parameters' device) is true: otherwise
    /// parameters and moments keep their values. Deciding on the device lets a step be withheld without waiting
    /// for it (the step count still advances: a run that withholds a step is stopped or rolled back).
    pub fn step_if(&mut self, grads: &[Tensor], keep: Option<&Tensor>) {
        assert_eq!(grads.len(), self.slots.len(), "one gradient per parameter");
        self.step += 1;
        let AdamParams { lr, beta1, beta2, eps } = self.params;
        let bc1 = 1.0 - beta1.powi(self.step as i32);
        let bc2_sqrt = (1.0 - beta2.powi(self.step as i32)).sqrt();
        let step_size = lr / bc1;
        if self.one_pass && keep.is_none() && beta1 == 0.0 {
            let slots: Vec<_> = self.slots.iter().map(|(_, p, m, v)| (p, m, v)).collect();
            if crate::ffi::adam::step_beta1_zero(&slots, grads, beta2, step_size, bc2_sqrt, eps) {
                return;
            }
        }
        tch::no_grad(|| {
            for ((_, p, m, v), g) in self.slots.iter_mut().zip(grads) {
                if !g.defined() {
                    continue;
                }
                if let Some(keep) = keep {
                    let m_new = if beta1 == 0.0 { g.shallow_clone() } else { m.lerp(g, 1.0 - beta1) };
                    let v_new = v.g_mul_scalar(beta2).addcmul(g, &g.g_mul_scalar(1.0 - beta2));
                    let denom = v_new.sqrt().g_div_scalar(bc2_sqrt).g_add_scalar(eps);
                    let p_new = p.addcdiv(&(&m_new * -step_size), &denom);
                    m.copy_(&m_new.where_self(keep, m));
                    v.copy_(&v_new.where_self(keep, v));
                    p.shallow_clone().copy_(&p_new.where_self(keep, p));
                    continue;
                }
                if beta1 == 0.0 {
                    // m = 0 * m + 1 * g: the same values without the extra passes.
                    m.copy_(g);
                } else {
                    let _ = m.lerp_(g, 1.0 - beta1);
                }
                let _ = v.g_mul_scalar_(beta2);
                let _ = v.addcmul_(g, &g.g_mul_scalar(1.0 - beta2));
                let mut denom = v.sqrt();
                let _ = denom.g_div_scalar_(bc2_sqrt).g_add_scalar_(eps);
                let _ = p.shallow_clone().addcdiv_(&(&*m * -step_size), &denom);
            }
        });
    }

    /// The moments as named tensors (`<prefix>.<param>.exp_avg`, `.exp_avg_sq`), for a snapshot.
    pub fn state_tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = vec![];
        for (n, _, m, v) in &self.slots {
            out.push((format!("{prefix}.{n}.exp_avg"), m.shallow_clone()));
            out.push((format!("{prefix}.{n}.exp_avg_sq"), v.shallow_clone()));
        }
        out
    }

    /// Restores the moments saved by [`Adam::state_tensors`] and the step count.
    pub fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>, prefix: &str, step: u64) -> Result<()> {
        tch::no_grad(|| -> Result<()> {
            for (n, p, m, v) in &mut self.slots {
                for (suffix, dst) in [("exp_avg", &mut *m), ("exp_avg_sq", &mut *v)] {
                    let key = format!("{prefix}.{n}.{suffix}");
                    let src = tensors.get(&key).ok_or_else(|| anyhow::anyhow!("missing optimizer state {key}"))?;
                    ensure!(
                        src.size() == p.size(),
                        "optimizer state {key} has shape {:?}, expected {:?}",
                        src.size(),
                        p.size()
                    );
                    dst.copy_(&src.to_device(dst.device()).to_kind(dst.kind()));
                }
            }
            Ok(())
        })?;
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Two steps on f(p) = sum(p^2 * c), checked against the update rule written out by hand.
    #[test]
    fn matches_torch_adam_rule() {
        let p = Tensor::from_slice(&[1.0f64, -2.0, 0.5]).set_requires_grad(true);
        let c = [1.0, 3.0, 0.25];
        let (lr, b1, b2, eps) = (0.1, 0.9, 0.99, 1e-8);
        let mut opt = Adam::new(&[("p".into(), p.shallow_clone())], AdamParams { lr, beta1: b1, beta2: b2, eps });
        let mut x = [1.0f64, -2.0, 0.5];
        let (mut m, mut v) = ([0.0; 3], [0.0; 3]);
        for t in 1..=2 {
            let loss = (p.square() * Tensor::from_slice(&c)).sum(Kind::Double);
            let g = Tensor::run_backward(&[loss], &[&p], false, false);
            opt.step(&g);
            for i in 0..3 {
                let gi = 2.0 * x[i] * c[i];
                m[i] = b1 * m[i] + (1.0 - b1) * gi;
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                let denom = (v[i] / (1.0 - b2.powi(t))).sqrt() + eps;
                x[i] -= lr / (1.0 - b1.powi(t)) * m[i] / denom;
            }
        }
        let got: Vec<f64> = Vec::try_from(p.detach().to_device(Device::Cpu)).unwrap();
        for i in 0..3 {
            assert!((got[i] - x[i]).abs() < 1e-12, "{got:?} vs {x:?}");
        }
        assert_eq!(opt.step, 2);
    }

    #[test]
    fn a_withheld_step_changes_nothing_and_a_kept_one_matches_the_plain_step() {
        let params = AdamParams { lr: 0.1, beta1: 0.5, beta2: 0.99, eps: 1e-8 };
        let p = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let q = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut a = Adam::new(&[("w".into(), p.shallow_clone())], params);
        let mut b = Adam::new(&[("w".into(), q.shallow_clone())], params);
        let g = Tensor::from_slice(&[0.5f32, -1.0]);
        a.step(&[g.copy()]);
        b.step_if(&[g.copy()], Some(&Tensor::from(true)));
        let vals = |t: &Tensor| Vec::<f32>::try_from(&t.detach()).unwrap();
        assert_eq!(vals(&p), vals(&q));
        let before = (vals(&q), b.state_tensors("o").iter().map(|(_, t)| vals(t)).collect::<Vec<_>>());
        b.step_if(&[Tensor::from_slice(&[f32::NAN, 1.0])], Some(&Tensor::from(false)));
        let after = (vals(&q), b.state_tensors("o").iter().map(|(_, t)| vals(t)).collect::<Vec<_>>());
        assert_eq!(before, after);
    }

    /// The one-pass update gives the ATen ops' values bit for bit, over parameters of many sizes (vector bodies and
    /// tails, one spread over threads), with a channels-last gradient and a parameter left without a gradient.
    #[test]
    fn one_pass_update_equals_the_ops() {
        tch::manual_seed(3);
        let shapes: [&[i64]; 5] = [&[3], &[17, 5], &[512, 300], &[64, 64, 3, 3], &[7]];
        let make = || -> Vec<(String, Tensor)> {
            tch::manual_seed(4);
            shapes
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("p{i}"), Tensor::randn(*s, (Kind::Float, Device::Cpu)) * 1e-3))
                .collect()
        };
        let (a_params, b_params) = (make(), make());
        // Steps as large as the parameters, so that a last-bit difference in the denominator reaches them.
        let params = AdamParams { lr: 1e-3, beta1: 0.0, beta2: 0.99f64.powf(0.8), eps: 1e-8 };
        let mut a = Adam::new(&a_params, params);
        let mut b = Adam::new(&b_params, params);
        b.one_pass = false;
        for step in 0..4 {
            let grads: Vec<Tensor> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let g = Tensor::randn(*s, (Kind::Float, Device::Cpu)) * 10f64.powi(i as i32 - 2);
                    match i {
                        // A convolution's gradient comes channels-last.
                        3 => g.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]),
                        4 if step % 2 == 0 => Tensor::new(),
                        _ => g,
                    }
                })
                .collect();
            a.step(&grads.iter().map(|g| g.shallow_clone()).collect::<Vec<_>>());
            b.step(&grads);
        }
        let init = make();
        for (((n, p), (_, q)), (_, p0)) in a_params.iter().zip(&b_params).zip(&init) {
            assert!(p.equal(q), "{n}: parameter");
            assert!(!p.equal(p0), "{n}: the steps moved it");
        }
        for ((n, x), (_, y)) in a.state_tensors("o").iter().zip(&b.state_tensors("o")) {
            assert!(x.equal(y), "{n}");
        }
    }

    #[test]
    fn state_round_trips() {
        let p = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let params = AdamParams { lr: 0.01, beta1: 0.0, beta2: 0.99, eps: 1e-8 };
        let mut a = Adam::new(&[("w".into(), p.shallow_clone())], params);
        a.step(&[Tensor::from_slice(&[0.5f32, -1.0])]);
        let saved: BTreeMap<String, Tensor> =
            a.state_tensors("opt_G").into_iter().map(|(k, t)| (k, t.copy())).collect();
        assert!(saved.contains_key("opt_G.w.exp_avg_sq"));
        let q = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let mut b = Adam::new(&[("w".into(), q.shallow_clone())], params);
        b.load_state(&saved, "opt_G", a.step).unwrap();
        let g = Tensor::from_slice(&[0.25f32, 0.75]);
        tch::no_grad(|| q.shallow_clone().copy_(&p));
        a.step(&[g.copy()]);
        b.step(&[g]);
        assert_eq!(Vec::<f32>::try_from(&p.detach()).unwrap(), Vec::<f32>::try_from(&q.detach()).unwrap());
        assert!(b.load_state(&BTreeMap::new(), "opt_G", 1).unwrap_err().to_string().contains("opt_G.w.exp_avg"));
    }
}
