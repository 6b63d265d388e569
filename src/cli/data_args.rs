//! Flag groups that several commands share: how data is read.

use clap::{Args, ValueEnum};
use tfload::data::{LabelMode, SourceOptions, TfRecordOptions, TfRecordSettings};
use tfload::formats::tfrecord::{Compression, OnCorrupt};

/// How TFRecord data (files of serialized tf.train.Example) is read.
#[derive(Debug, Args)]
pub struct TfRecordArgs {
    /// TFRecord data: the feature that is the model input, KEY or INPUT=KEY (image/encoded; encoded images are decoded and resized).
    #[arg(long, value_name = "[INPUT=]KEY")]
    pub feature: Option<String>,
    /// TFRecord data: the feature that holds the label (image/class/label).
    #[arg(long, value_name = "KEY")]
    pub label: Option<String>,
    /// TFRecord compression (auto: recognised per file).
    #[arg(long, value_enum, default_value_t = CompressionArg::Auto)]
    pub compression: CompressionArg,
    /// Leave out TFRecord records that fail their checksum or are cut short (counted, and said on stderr) instead of stopping.
    #[arg(long)]
    pub skip_corrupt: bool,
}

/// Keras's `label_mode` of `image_dataset_from_directory`: the labels a model is fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LabelModeArg {
    /// Class indices (sparse_categorical_crossentropy).
    Int,
    /// One-hot rows (categorical_crossentropy).
    Categorical,
    /// 0/1 floats (binary_crossentropy).
    Binary,
}

impl LabelModeArg {
    /// The library's label mode.
    pub fn mode(self) -> LabelMode {
        match self {
            LabelModeArg::Int => LabelMode::Int,
            LabelModeArg::Categorical => LabelMode::Categorical,
            LabelModeArg::Binary => LabelMode::Binary,
        }
    }
}

/// TFRecord compression types (Python's `compression_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// Recognised from each file's first bytes.
    Auto,
    /// Not compressed.
    None,
    /// GZIP.
    Gzip,
    /// ZLIB.
    Zlib,
}

impl TfRecordArgs {
    /// The library's settings for these flags.
    pub fn settings(&self) -> TfRecordSettings {
        let compression = match self.compression {
            CompressionArg::Auto => Compression::Auto,
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zlib => Compression::Zlib,
        };
        TfRecordSettings {
            feature: self.feature.clone(),
            label: self.label.clone(),
            options: TfRecordOptions {
                compression,
                on_corrupt: if self.skip_corrupt { OnCorrupt::Skip } else { OnCorrupt::Fail },
            },
        }
    }

    /// Source options with these TFRecord settings and the `.npz` array names given.
    pub fn source_options(&self, feature_key: Option<&str>, label_key: Option<&str>) -> SourceOptions {
        SourceOptions {
            feature_key: feature_key.map(str::to_string),
            label_key: label_key.map(str::to_string),
            tfrecord: self.settings(),
            class_names: None,
            labels: None,
            sample_weight: None,
        }
    }
}

/// Says on stderr (unless `quiet`) that corrupt records were left out of `data`, and what else
/// the user should know about how it was read.
pub fn report_data_reading(data: &dyn tfload::data::Dataset, quiet: bool) {
    if quiet {
        return;
    }
    if data.skipped_records() > 0 {
        eprintln!("warning: {}", data.describe());
    }
    for note in data.notes() {
        eprintln!("note: {note}");
    }
}
