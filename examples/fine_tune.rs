//! Fine-tune a trainable SavedModel through the library, as `tfload train` does: open the model,
//! open the data, freeze all but the last layer, train a few epochs with validation, and write
//! the trained SavedModel atomically.
//!
//! ```sh
//! cargo run --example fine_tune -- saved_models/cnn_digits saved_models/data/digits_5_9_images /tmp/cnn_tuned
//! ```
//!
//! With no arguments it trains the bundled CNN on the bundled digits for 2 epochs into a
//! temporary folder (CI runs it so) and checks that the loss went down.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use tfload::data::{split, BatchLoader, DataSource, LoaderOptions, Purpose, SourceOptions};
use tfload::train::{
    fit, EpochReport, FitOptions, FitOutcome, MaskSpec, RunData, RunPaths, TrainCallback, TrainableModel,
};
use tfload::train::{Control, Metrics};

/// Prints each epoch and keeps the training losses.
#[derive(Default)]
struct Epochs(Vec<f64>);

impl TrainCallback for Epochs {
    fn on_epoch(&mut self, report: &EpochReport) -> Control {
        println!("epoch {}: train {:?}, validation {:?}", report.epoch, report.train, report.validation);
        self.0.push(report.train["loss"]);
        Control::Continue
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model_dir = args.next().unwrap_or_else(|| "saved_models/cnn_digits".to_string());
    let data = args.next().unwrap_or_else(|| "saved_models/data/digits_5_9_images".to_string());
    let scratch = tempfile::tempdir()?;
    let out = args.next().map(PathBuf::from).unwrap_or_else(|| scratch.path().join("tuned"));

    // Read once: the graph, the tfload record, the checkpoint index.
    let model = TrainableModel::open(&model_dir)?;
    // An image folder, a .npz or TFRecord files: the source recognises which.
    let source = DataSource::detect(&data, &SourceOptions::default())?;
    let examples = source.open(&model.input_spec()?, || model.image_spec(), Purpose::Training)?;
    let (train, validation) = split(examples, 0.2, 0);
    let options = LoaderOptions { batch_size: 32, shuffle: true, seed: 0, ..LoaderOptions::default() };
    let train = BatchLoader::new(std::sync::Arc::new(train), options);
    let validation = BatchLoader::new(std::sync::Arc::new(validation), LoaderOptions { shuffle: false, ..options });

    // Keras: `for layer in model.layers[:-1]: layer.trainable = False`.
    let fit_options = FitOptions {
        epochs: 2,
        mask: MaskSpec { train_last_layers: Some(1), ..MaskSpec::default() },
        ..FitOptions::default()
    };
    let paths = RunPaths { out: out.clone(), overwrite: true, resume: false };
    let mut epochs = Epochs::default();
    let stop = AtomicBool::new(false); // set it from a signal handler to stop with a checkpoint
    let data = RunData { train: &train, validation: Some(&validation) };
    match fit(&model, &paths, &data, &fit_options, &mut epochs, &stop)? {
        FitOutcome::Completed { out, validation, .. } => {
            println!("trained SavedModel in {} (validation {})", out.display(), describe(validation.as_ref()));
        }
        other => return Err(format!("the run did not complete: {other:?}").into()),
    }
    if epochs.0.len() == 2 && epochs.0[1] >= epochs.0[0] {
        return Err(format!("the training loss did not go down: {:?}", epochs.0).into());
    }
    Ok(())
}

fn describe(metrics: Option<&Metrics>) -> String {
    metrics.map(|m| format!("{m:?}")).unwrap_or_else(|| "none".to_string())
}
