//! Fine-tuning a trainable SavedModel from Rust through its exported `train_step`: the contract
//! record, masks, learning-rate schedules, the trainer, and the training run with checkpoints and
//! exact resume.

pub mod callbacks;
pub mod contract;
pub mod distributed;
pub mod feature_cache;
pub mod fit;
pub mod frozen_base_step;
pub mod mask;
pub mod plateau;
pub(crate) mod run_lock;
pub(crate) mod savedmodel_writer;
pub mod schedule;
pub(crate) mod state;
pub mod step_threads;
pub mod tensorboard;
pub mod trainable_model;
pub mod trainer;

pub use callbacks::{Callbacks, Control, EpochReport, RunPlan, Silent, StepReport, TrainCallback};
pub use contract::TrainContract;
pub use feature_cache::FeatureCacheOptions;
pub use fit::{
    check_paths, fit, prepare, CheckpointPolicy, CheckpointsInOutput, EarlyStopping, FitOptions, FitOutcome,
    InitialWeights, PreparedRun, RunData, RunPaths,
};
pub use mask::{Mask, MaskSpec, MaskStart};
pub use plateau::ReduceOnPlateau;
pub use schedule::{Decay, LrSchedule};
pub use trainable_model::TrainableModel;
pub use trainer::{Metrics, StepKind, Trainer};
