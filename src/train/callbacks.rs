//! What a training run tells the code around it, and how that code can stop it: the
//! [`TrainCallback`] trait, the reports it receives (the plan, each step, each epoch), and
//! [`Callbacks`], several callbacks as one. The TensorBoard writer
//! ([`TensorBoard`](crate::train::tensorboard::TensorBoard)) and the CLI's progress bar are
//! callbacks among others.

use std::path::PathBuf;

use serde::Serialize;

use crate::train::trainer::Metrics;

/// Whether the run goes on after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Finish now and write the output, as if the last epoch had ended.
    Stop,
}

/// The plan of a run, given to callbacks before the first step.
#[derive(Debug, Clone, Serialize)]
pub struct RunPlan {
    /// First epoch to run (1-based).
    pub first_epoch: u64,
    /// Last epoch.
    pub epochs: u64,
    /// Batches per epoch.
    pub steps_per_epoch: u64,
    /// Steps already done (a resumed run).
    pub global_step: u64,
    /// Variables trained / in the mask.
    pub trainable: usize,
    /// Mask size.
    pub mask_size: usize,
    /// Where the run works.
    pub work_dir: PathBuf,
    /// Whether the run trains its head on cached features of the frozen base, and why not.
    pub feature_cache: crate::train::feature_cache::FeatureCacheUse,
    /// The frozen-base step that runs instead of `train_step` (no backward pass below its cut),
    /// when the mask allows one and the feature cache is off.
    pub frozen_base_step: Option<crate::train::frozen_base_step::FrozenBaseStep>,
}

/// Sent after each step.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// 1-based epoch.
    pub epoch: u64,
    /// 1-based step within the epoch.
    pub step_in_epoch: u64,
    /// 1-based global step.
    pub global_step: u64,
    /// This batch's loss and metrics.
    pub batch: Metrics,
    /// Running batch-weighted means over the epoch so far.
    pub running: Metrics,
    /// Learning rate used.
    pub lr: f32,
    /// Examples per second in this epoch so far.
    pub samples_per_sec: f64,
}

/// Sent after each epoch.
#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: u64,
    /// Training means.
    pub train: Metrics,
    /// Validation results.
    pub validation: Option<Metrics>,
    /// Examples per second.
    pub samples_per_sec: f64,
    /// Whether this epoch is the best so far (early stopping).
    pub best: bool,
}

/// Receives progress; may stop the run.
pub trait TrainCallback {
    /// Before the first step.
    fn on_begin(&mut self, _plan: &RunPlan) {}
    /// After every step.
    fn on_step(&mut self, _report: &StepReport) -> Control {
        Control::Continue
    }
    /// After every epoch (validation done).
    fn on_epoch(&mut self, _report: &EpochReport) -> Control {
        Control::Continue
    }
}

/// A callback that does nothing.
pub struct Silent;
impl TrainCallback for Silent {}

/// Several callbacks as one: each sees every event in order; the run stops if any asks to.
pub struct Callbacks<'a>(pub Vec<&'a mut dyn TrainCallback>);

impl TrainCallback for Callbacks<'_> {
    fn on_begin(&mut self, plan: &RunPlan) {
        self.0.iter_mut().for_each(|callback| callback.on_begin(plan));
    }

    fn on_step(&mut self, report: &StepReport) -> Control {
        self.0.iter_mut().fold(Control::Continue, |control, callback| stop_if_any(control, callback.on_step(report)))
    }

    fn on_epoch(&mut self, report: &EpochReport) -> Control {
        self.0.iter_mut().fold(Control::Continue, |control, callback| stop_if_any(control, callback.on_epoch(report)))
    }
}

fn stop_if_any(a: Control, b: Control) -> Control {
    if a == Control::Stop || b == Control::Stop {
        Control::Stop
    } else {
        Control::Continue
    }
}
