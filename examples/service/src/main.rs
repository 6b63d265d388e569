//! A service-shaped use of tfload as a library: classify labelled digit images with a
//! [`Predictor`]-backed classifier, fine-tune the model with [`tfload::train::fit`] on digits 5-9
//! relabelled 0-4 (the committed data set), and check that the fine-tuned model has learnt the
//! new labels. Exits non-zero when a check fails.
//!
//!     cargo run --manifest-path examples/service/Cargo.toml -- [REPO]
//!
//! REPO is the tfload repository (default: two folders up from this crate), for its committed
//! models and data.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use tfload::data::{ArrayDataset, BatchLoader, LoaderOptions};
use tfload::infer::predict::{ClassifierOptions, ImageClassifier, Predictor};
use tfload::train::{fit, FitOptions, FitOutcome, LrSchedule, RunData, RunPaths, Silent, TrainableModel};
use tfload::SessionConfig;

fn main() -> Result<()> {
    let repo = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    let model = repo.join("saved_models/mlp_digits");
    let images = repo.join("saved_models/data/digits_5_9_images");
    let before = accuracy(&model, &images, 0)?;
    println!("pretrained mlp_digits: top-1 accuracy {before:.3} on {}", images.display());
    ensure!(before >= 0.8, "the pretrained model classifies only {before:.3} of the images right");

    let out = std::env::temp_dir().join(format!("tfload-service-{}", std::process::id()));
    let outcome = fine_tune(&model, &repo.join("saved_models/data"), &out);
    let result = outcome.and_then(|validation| {
        println!("fine-tuned {EPOCHS} epochs on digits 5-9 as 0-4: validation accuracy {validation:.3}");
        ensure!(validation >= 0.8, "fine-tuning gave validation accuracy {validation:.3}");
        let after = accuracy(&out, &images, 5)?;
        println!("fine-tuned model: top-1 accuracy {after:.3} with the new labels");
        ensure!(after >= 0.8, "the fine-tuned model gives only {after:.3} of the images their new label");
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&out);
    result
}

/// Epochs of fine-tuning.
const EPOCHS: u64 = 3;

/// Top-1 accuracy of the model's `serving_default` on an image folder with one sub-folder per
/// digit, the right class being the digit minus `shift`.
fn accuracy(model: &Path, images: &Path, shift: u32) -> Result<f64> {
    let predictor = Predictor::load(model, &["serve"], "serving_default", SessionConfig::default())?;
    let classifier = ImageClassifier::new(predictor, ClassifierOptions::default())?;
    let (mut right, mut total) = (0usize, 0usize);
    for class in std::fs::read_dir(images).with_context(|| format!("reading {}", images.display()))? {
        let class = class?.path();
        let digit: u32 =
            class.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).context("a digit folder")?;
        let label = (digit - shift).to_string();
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(&class)?.map(|f| f.map(|f| f.path())).collect::<Result<_, _>>()?;
        files.sort();
        for top in classifier.classify_files(&files, 1)? {
            right += usize::from(top[0].class == label);
            total += 1;
        }
    }
    if total == 0 {
        bail!("no images under {}", images.display());
    }
    Ok(right as f64 / total as f64)
}

/// [`EPOCHS`] of `train_step` on the committed digits 5-9 arrays; returns the validation accuracy.
fn fine_tune(model: &Path, data: &Path, out: &Path) -> Result<f64> {
    let loader = |name: &str, shuffle: bool| -> Result<BatchLoader> {
        let dataset = ArrayDataset::from_npz(&data.join(name), None, None)?;
        Ok(BatchLoader::new(Arc::new(dataset), LoaderOptions { batch_size: 64, shuffle, ..LoaderOptions::default() }))
    };
    let (train, validation) = (loader("digits_5_9_train.npz", true)?, loader("digits_5_9_val.npz", false)?);
    let model = TrainableModel::open(model)?;
    let paths = RunPaths { out: out.to_path_buf(), overwrite: true, resume: false };
    let options = FitOptions { epochs: EPOCHS, schedule: Some(LrSchedule::constant(0.05)), ..FitOptions::default() };
    let data = RunData { train: &train, validation: Some(&validation) };
    match fit(&model, &paths, &data, &options, &mut Silent, &AtomicBool::new(false))? {
        FitOutcome::Completed { validation: Some(metrics), .. } => {
            metrics.get("accuracy").copied().context("eval_step gave no accuracy")
        }
        other => bail!("fit did not complete with validation: {other:?}"),
    }
}
