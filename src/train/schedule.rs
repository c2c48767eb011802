//! Learning-rate schedule: linear warmup, then cosine decay to a floor.

use std::f64::consts::PI;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WarmupCosine {
    /// Peak learning rate, reached at the end of warmup.
    pub base_lr: f64,
    /// Steps of linear warmup (0 = start at `base_lr`).
    pub warmup_steps: u64,
    /// Total steps; from here on the rate stays at the floor.
    pub total_steps: u64,
    /// Floor as a fraction of `base_lr` (0.1 = decay to 10 %).
    pub min_lr_ratio: f64,
}

impl WarmupCosine {
    /// Learning rate for 0-based step `step` (the step about to be taken).
    /// Warmup ramps `base*(step+1)/warmup`, so step 0 never trains at rate 0.
    pub fn lr_at(&self, step: u64) -> f64 {
        let floor = self.base_lr * self.min_lr_ratio;
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        if step >= self.total_steps {
            return floor;
        }
        let decay_steps = self.total_steps - self.warmup_steps;
        let progress = (step - self.warmup_steps) as f64 / decay_steps as f64;
        floor + (self.base_lr - floor) * 0.5 * (1.0 + (PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched() -> WarmupCosine {
        WarmupCosine {
            base_lr: 1e-3,
            warmup_steps: 10,
            total_steps: 110,
            min_lr_ratio: 0.1,
        }
    }

    #[test]
    fn warmup_is_linear_and_reaches_base() {
        let s = sched();
        assert!((s.lr_at(0) - 1e-4).abs() < 1e-15);
        assert!((s.lr_at(4) - 5e-4).abs() < 1e-15);
        assert!((s.lr_at(9) - 1e-3).abs() < 1e-15);
    }

    #[test]
    fn cosine_halfway_and_floor() {
        let s = sched();
        assert!((s.lr_at(10) - 1e-3).abs() < 1e-15);
        // halfway through decay: floor + (base-floor)/2 = 1e-4 + 4.5e-4
        assert!((s.lr_at(60) - 5.5e-4).abs() < 1e-12, "{}", s.lr_at(60));
        assert!((s.lr_at(110) - 1e-4).abs() < 1e-15);
        assert!((s.lr_at(10_000) - 1e-4).abs() < 1e-15);
    }

    #[test]
    fn decay_is_monotone() {
        let s = sched();
        for t in 10..120 {
            assert!(s.lr_at(t + 1) <= s.lr_at(t) + 1e-18, "step {t}");
        }
    }

    #[test]
    fn no_warmup_starts_at_base() {
        let s = WarmupCosine {
            warmup_steps: 0,
            ..sched()
        };
        assert!((s.lr_at(0) - 1e-3).abs() < 1e-15);
    }
}
