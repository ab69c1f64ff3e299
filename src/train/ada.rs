//! The official adaptive-augmentation heuristic (`training_loop.py`, `ada_target`): every `interval` minibatches,
//! p moves by sign(E[sign(D(real))] - target) x batch x interval / (kimg x 1000), and never below 0.

use crate::config::AugmentConfig;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ada {
    pub target: f64,
    pub interval: u32,
    pub kimg: f64,
    /// The total minibatch size (all devices).
    pub batch: u32,
}

impl Ada {
    pub fn new(cfg: &AugmentConfig, batch: u32) -> Ada {
        Ada { target: cfg.target, interval: cfg.interval, kimg: cfg.kimg, batch }
    }

    /// Whether minibatch `batch_idx` ends with an adjustment (the official checks `batch_idx % ada_interval == 0`).
    pub fn due(&self, batch_idx: u64) -> bool {
        batch_idx.is_multiple_of(self.interval as u64)
    }

    /// The next p from the signs of the real logits since the last adjustment (`[sum, count]`). No signs: no
    /// change.
    pub fn adjust(&self, p: f64, signs: [f64; 2]) -> f64 {
        if signs[1] <= 0.0 {
            return p;
        }
        let rt = signs[0] / signs[1];
        // np.sign: 0 on target.
        let step = if rt == self.target { 0.0 } else { (rt - self.target).signum() };
        (p + step * (self.batch as f64 * self.interval as f64) / (self.kimg * 1000.0)).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p_moves_by_the_official_step_toward_less_overfitting() {
        // batch 64, interval 4, 500 kimg: one adjustment moves p by 256 / 500000.
        let ada = Ada { target: 0.6, interval: 4, kimg: 500.0, batch: 64 };
        let step = 256.0 / 500_000.0;
        // D is confident on reals (overfitting): p rises.
        assert!((ada.adjust(0.1, [0.9 * 32.0, 32.0]) - (0.1 + step)).abs() < 1e-15);
        // D is unsure: p falls, but not below 0.
        assert!((ada.adjust(0.1, [0.2 * 32.0, 32.0]) - (0.1 - step)).abs() < 1e-15);
        assert_eq!(ada.adjust(0.0, [-32.0, 32.0]), 0.0);
        // Exactly on target (np.sign(0) = 0) or no data: unchanged.
        assert_eq!(ada.adjust(0.3, [0.6 * 10.0, 10.0]), 0.3);
        assert_eq!(ada.adjust(0.3, [0.0, 0.0]), 0.3);
        assert!(ada.due(0) && ada.due(8) && !ada.due(5));
    }
}
