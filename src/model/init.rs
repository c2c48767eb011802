//! Seeded parameter initialisation.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub struct Init {
    rng: StdRng,
}

impl Init {
    pub fn new(seed: u64) -> Self {
        Init {
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// `n` samples of N(0, std²) (Box-Muller).
    pub fn normal(&mut self, n: usize, std: f32) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let u1: f64 = self.rng.random::<f64>().max(1e-300);
            let u2: f64 = self.rng.random();
            let r = (-2.0 * u1.ln()).sqrt();
            let a = 2.0 * std::f64::consts::PI * u2;
            out.push((r * a.cos()) as f32 * std);
            out.push((r * a.sin()) as f32 * std);
        }
        out.truncate(n);
        out
    }
}
