//! The tfload record (`assets/tfload_contract.json`) and the names the contract reserves: where
//! the record lives, the training signatures, the tag set. Training reads the record strictly
//! ([`TrainContract`](crate::train::TrainContract)); inference reads the little it uses through
//! the lenient [`RecordView`], which any SavedModel (with no record at all) satisfies.

use std::path::Path;

use serde::Deserialize;

/// Where the record lives inside a SavedModel.
pub const RECORD_PATH: &str = "assets/tfload_contract.json";
/// The signature that trains.
pub const TRAIN_STEP: &str = "train_step";
/// The signature that evaluates: loss and metrics from inputs and `labels`.
pub const EVAL_STEP: &str = "eval_step";
/// The tag set trainable SavedModels are exported and loaded with.
pub const SERVE_TAG: &str = "serve";

/// The parts of the model's `assets/tfload_contract.json` that inference uses, read leniently:
/// a model without the record (any SavedModel not exported by tfload) simply has none.
#[derive(Debug, Default, Deserialize)]
pub struct RecordView {
    #[serde(default)]
    /// The class names of the head, in output order.
    pub class_names: Option<Vec<String>>,
    #[serde(default)]
    outputs: Vec<OutputRecord>,
    #[serde(default)]
    loss: Option<LossRecord>,
    #[serde(default)]
    labels: Option<LabelsRecord>,
}

/// The record's loss, by name.
#[derive(Debug, Deserialize)]
struct LossRecord {
    name: String,
}

/// The record's `labels` input, by shape.
#[derive(Debug, Deserialize)]
struct LabelsRecord {
    shape: Vec<Option<u64>>,
}

/// An output of the record: its key and what it holds.
#[derive(Debug, Deserialize)]
struct OutputRecord {
    key: String,
    #[serde(default)]
    kind: Option<String>,
}

impl RecordView {
    /// Reads the record of the SavedModel in `dir`; none (or one that does not parse, with a
    /// warning in the log) gives an empty view.
    pub fn read(dir: &Path) -> RecordView {
        let path = dir.join(RECORD_PATH);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or_else(|error| {
            if !text.is_empty() {
                log::warn!("{}: ignored, it does not parse ({error})", path.display());
            }
            RecordView::default()
        })
    }

    /// The labels the model's `eval_step` takes, where the record says.
    pub fn label_target(&self) -> Option<crate::data::LabelTarget> {
        crate::data::LabelTarget::for_loss(&self.loss.as_ref()?.name, &self.labels.as_ref()?.shape)
    }

    /// What the output `key` holds (`probabilities`, `logits`), where the record says.
    pub fn output_kind(&self, key: &str) -> Option<&str> {
        self.outputs.iter().find(|o| o.key == key).and_then(|o| o.kind.as_deref())
    }
}
