//! Reducing the learning rate when a monitored value stops improving, as Keras's
//! `ReduceLROnPlateau` callback does: after each epoch, a value that has not improved by more than
//! `min_delta` for `patience` epochs multiplies the rate by `factor` (never below `min_lr`), then
//! `cooldown` epochs pass before counting again. The state lives in the run's `state.json`, so a
//! resumed run reduces exactly when an uninterrupted one would.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::train::trainer::Metrics;

/// The rule, with Keras's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReduceOnPlateau {
    /// The value watched: `val_loss`, `val_<metric>` (validation) or `loss`, `<metric>` (training).
    pub monitor: String,
    /// Multiplier of the rate at each reduction (Keras: 0.1).
    pub factor: f64,
    /// Epochs without improvement before a reduction (Keras: 10).
    pub patience: u64,
    /// Smallest change that counts as an improvement (Keras: 1e-4).
    pub min_delta: f64,
    /// Epochs after a reduction during which no reduction happens (Keras: 0).
    pub cooldown: u64,
    /// The rate is never reduced below this (Keras: 0).
    pub min_lr: f64,
}

impl Default for ReduceOnPlateau {
    fn default() -> ReduceOnPlateau {
        ReduceOnPlateau {
            monitor: "val_loss".to_string(),
            factor: 0.1,
            patience: 10,
            min_delta: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
        }
    }
}

/// Where a run is in the rule, kept across epochs and resumes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlateauState {
    /// The best monitored value so far.
    pub best: Option<f64>,
    /// Epochs since the best (Keras's `wait`).
    pub wait: u64,
    /// Cooldown epochs left.
    pub cooldown_left: u64,
    /// The rate after the last reduction; `None` until the first one (the schedule's rate applies).
    pub lr: Option<f32>,
}

impl ReduceOnPlateau {
    /// Keras's `mode="auto"`: values with `acc` in their name are maximised, others minimised.
    fn maximize(&self) -> bool {
        self.monitor.contains("acc")
    }

    fn improves(&self, value: f64, best: Option<f64>) -> bool {
        match best {
            None => true,
            Some(best) if self.maximize() => value > best + self.min_delta,
            Some(best) => value < best - self.min_delta,
        }
    }

    /// The monitored value among an epoch's training and validation results.
    pub fn value(&self, train: &Metrics, validation: Option<&Metrics>) -> Result<f64> {
        let (source, key) = match self.monitor.strip_prefix("val_") {
            Some(key) => (validation, key),
            None => (Some(train), self.monitor.as_str()),
        };
        source.and_then(|m| m.get(key)).copied().ok_or_else(|| {
            Error::InvalidOption(format!(
                "--lr-schedule plateau monitors `{}`, which this run does not compute (training gives: {}; validation gives: {}). Monitor val_loss with validation data, or loss",
                self.monitor,
                train.keys().cloned().collect::<Vec<_>>().join(", "),
                validation
                    .map(|v| v.keys().map(|k| format!("val_{k}")).collect::<Vec<_>>().join(", "))
                    .unwrap_or_else(|| "nothing (no --val-data or --validation-split)".to_string())
            ))
        })
    }

    /// Checks the rule's numbers.
    pub fn check(&self) -> Result<()> {
        if !(self.factor > 0.0 && self.factor < 1.0) {
            return Err(Error::InvalidOption(format!(
                "the plateau factor must be between 0 and 1 (Keras refuses factor >= 1), got {}",
                self.factor
            )));
        }
        if !(self.min_lr >= 0.0 && self.min_lr.is_finite()) {
            return Err(Error::InvalidOption(format!("--min-lr must be 0 or more, got {}", self.min_lr)));
        }
        Ok(())
    }

    /// Keras's `on_epoch_end`: given the epoch's monitored `value` and the rate `lr` its last step
    /// used, updates `state` and returns the rate for the next epoch when it changes.
    pub fn on_epoch_end(&self, state: &mut PlateauState, value: f64, lr: f32) -> Option<f32> {
        if state.cooldown_left > 0 {
            state.cooldown_left -= 1;
            state.wait = 0;
        }
        if self.improves(value, state.best) {
            state.best = Some(value);
            state.wait = 0;
            return None;
        }
        if state.cooldown_left > 0 {
            return None;
        }
        state.wait += 1;
        if state.wait < self.patience || lr <= self.min_lr as f32 {
            return None;
        }
        // As Keras: the float32 rate read as a double, times the (double) factor, floored at the
        // (double) minimum, stored as float32.
        let reduced = (f64::from(lr) * self.factor).max(self.min_lr) as f32;
        state.lr = Some(reduced);
        state.cooldown_left = self.cooldown;
        state.wait = 0;
        Some(reduced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rule: &ReduceOnPlateau, values: &[f64], lr: f32) -> Vec<f32> {
        let mut state = PlateauState::default();
        let mut lr = lr;
        values
            .iter()
            .map(|&v| {
                if let Some(new) = rule.on_epoch_end(&mut state, v, lr) {
                    lr = new;
                }
                lr
            })
            .collect()
    }

    #[test]
    fn reduces_after_patience_epochs_without_improvement_then_cools_down() {
        let rule = ReduceOnPlateau { patience: 2, factor: 0.5, cooldown: 1, ..ReduceOnPlateau::default() };
        let rates = run(&rule, &[1.0, 0.9, 0.95, 0.92, 0.93, 0.94, 0.99, 0.98], 0.1);
        // As Keras: the epoch that ends a cooldown already counts towards the next patience.
        assert_eq!(rates, vec![0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125]);
    }

    #[test]
    fn accuracy_is_maximised_and_min_lr_is_a_floor() {
        let rule = ReduceOnPlateau {
            monitor: "val_accuracy".to_string(),
            patience: 1,
            min_lr: 0.03,
            ..ReduceOnPlateau::default()
        };
        let rates = run(&rule, &[0.5, 0.6, 0.6, 0.55, 0.7, 0.7], 0.1);
        // 0.1 * 0.1 = 0.01 floored at 0.03; at the floor, no further reduction.
        assert_eq!(rates, vec![0.1, 0.1, 0.03, 0.03, 0.03, 0.03]);
    }

    #[test]
    fn a_missing_value_names_what_the_run_computes() {
        let rule = ReduceOnPlateau::default();
        let train = Metrics::from([("loss".to_string(), 1.0)]);
        let error = rule.value(&train, None).unwrap_err().to_string();
        assert!(error.contains("no --val-data"), "{error}");
        assert_eq!(ReduceOnPlateau { monitor: "loss".into(), ..rule }.value(&train, None).unwrap(), 1.0);
    }
}
