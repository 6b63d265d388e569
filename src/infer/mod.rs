//! Inference on a loaded model: the predictor and classifier over a serving signature, evaluation
//! over a data set, and the metrics both report.

pub mod evaluate;
pub mod metrics;
pub mod predict;
