//! Learning-rate schedules, evaluated in Rust and fed to `train_step` at every step, so that a
//! schedule needs nothing from the exported model.

use serde::{Deserialize, Serialize};

/// How the rate decays after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decay {
    /// The base rate throughout.
    Constant,
    /// Multiplied by `factor` every `every_epochs` epochs.
    Step {
        /// Multiplier per decay.
        factor: f32,
        /// Epochs between decays.
        every_epochs: u64,
    },
    /// Cosine from the base rate down to `min_lr` at the last step.
    Cosine {
        /// The rate at the end.
        min_lr: f32,
    },
}

/// A learning-rate schedule: linear warm-up over the first steps, then a decay.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// The rate after warm-up.
    pub base: f32,
    /// The decay after warm-up.
    pub decay: Decay,
    /// Steps of linear warm-up from `base / warmup_steps` to `base`.
    pub warmup_steps: u64,
}

impl LrSchedule {
    /// A constant rate.
    pub fn constant(base: f32) -> LrSchedule {
        LrSchedule { base, decay: Decay::Constant, warmup_steps: 0 }
    }

    /// The rate at 0-based global `step`, in a run of `total_steps` with `steps_per_epoch`.
    pub fn at(&self, step: u64, steps_per_epoch: u64, total_steps: u64) -> f32 {
        if step < self.warmup_steps {
            return self.base * (step + 1) as f32 / self.warmup_steps as f32;
        }
        match self.decay {
            Decay::Constant => self.base,
            Decay::Step { factor, every_epochs } => {
                let epoch = step / steps_per_epoch.max(1);
                self.base * factor.powi((epoch / every_epochs.max(1)) as i32)
            }
            Decay::Cosine { min_lr } => {
                let span = total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                (min_lr as f64 + (self.base - min_lr) as f64 * cosine) as f32
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_is_linear_then_constant() {
        let schedule = LrSchedule { warmup_steps: 4, ..LrSchedule::constant(0.1) };
        let rates: Vec<f32> = (0..6).map(|s| schedule.at(s, 10, 100)).collect();
        assert_eq!(rates, vec![0.025, 0.05, 0.075, 0.1, 0.1, 0.1]);
    }

    #[test]
    fn step_decay_per_epochs() {
        let schedule = LrSchedule { decay: Decay::Step { factor: 0.5, every_epochs: 2 }, ..LrSchedule::constant(1.0) };
        assert_eq!(schedule.at(0, 10, 100), 1.0);
        assert_eq!(schedule.at(19, 10, 100), 1.0);
        assert_eq!(schedule.at(20, 10, 100), 0.5);
        assert_eq!(schedule.at(45, 10, 100), 0.25);
    }

    #[test]
    fn cosine_goes_from_base_to_min() {
        let schedule = LrSchedule { decay: Decay::Cosine { min_lr: 0.0 }, ..LrSchedule::constant(1.0) };
        assert_eq!(schedule.at(0, 10, 100), 1.0);
        assert!((schedule.at(50, 10, 100) - 0.5).abs() < 1e-6);
        assert!(schedule.at(100, 10, 100).abs() < 1e-6);
    }
}
