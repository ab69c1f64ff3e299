//! G_ema: the exponential moving average of G's parameters that snapshots and fakes grids use.

use tch::Tensor;

/// The official per-minibatch beta: 0.5 ** (batch / ema_nimg), with ema_nimg = ema_kimg * 1000 limited to
/// cur_nimg * ema_rampup while ramping up. A half-life of ema_nimg images.
pub fn ema_beta(batch: u32, ema_kimg: f64, ema_rampup: Option<f64>, cur_nimg: u64) -> f64 {
    let mut ema_nimg = ema_kimg * 1000.0;
    if let Some(r) = ema_rampup {
        ema_nimg = ema_nimg.min(cur_nimg as f64 * r);
    }
    0.5f64.powf(batch as f64 / ema_nimg.max(1e-8))
}

/// ema = lerp(p, ema, beta) for `params`; the tensors in `buffers` are copied (the trainer passes only `w_avg`, the
/// one buffer of G that training changes).
pub fn update(params: &[(Tensor, Tensor)], buffers: &[(Tensor, Tensor)], beta: f64) {
    tch::no_grad(|| {
        for (ema, p) in params {
            let _ = ema.shallow_clone().lerp_(p, 1.0 - beta);
        }
        for (ema, b) in buffers {
            ema.shallow_clone().copy_(b);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_life_is_ema_kimg() {
        // After ema_kimg * 1000 images in batches of 32 the old weight has decayed to one half.
        let b = ema_beta(32, 10.0, None, 1_000_000);
        assert!((b.powf(10_000.0 / 32.0) - 0.5).abs() < 1e-12);
        // Ramp-up: at 2 kimg with rampup 0.05 the half-life is 100 images.
        let b = ema_beta(10, 10.0, Some(0.05), 2000);
        assert!((b - 0.5f64.powf(0.1)).abs() < 1e-12);
        // At the very start the average just follows G.
        assert_eq!(ema_beta(4, 10.0, Some(0.05), 0), 0.0);
    }

    #[test]
    fn update_lerps_params_and_copies_buffers() {
        let ema = Tensor::from_slice(&[1.0f32, 1.0]);
        let p = Tensor::from_slice(&[3.0f32, -1.0]);
        let buf_ema = Tensor::from_slice(&[0.0f32]);
        let buf = Tensor::from_slice(&[7.0f32]);
        update(&[(ema.shallow_clone(), p)], &[(buf_ema.shallow_clone(), buf)], 0.75);
        // 3 + 0.75 * (1 - 3) = 1.5; -1 + 0.75 * 2 = 0.5.
        assert_eq!(Vec::<f32>::try_from(&ema).unwrap(), vec![1.5, 0.5]);
        assert_eq!(Vec::<f32>::try_from(&buf_ema).unwrap(), vec![7.0]);
    }
}
