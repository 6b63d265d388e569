//! `tfload predict DIR IMAGES...`: classifies image files (or every image in folders, or the
//! records of TFRecord data) with an image classifier's `serving_default`, printing the top-k
//! classes as a table, JSON or CSV.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::sync::Arc;

use tfload::data::{BatchLoader, DataSource, Dataset, LoaderOptions, Purpose};
use tfload::formats::images::list_images;
use tfload::infer::predict::{read_class_names, ClassScore, ClassifierOptions, ImageClassifier, Predictor};
use tfload::{SessionConfig, TensorData};

use super::data_args::{report_data_reading, TfRecordArgs};
use super::output::progress;
use super::{table, GlobalArgs, ModelArgs};

/// Arguments of `tfload predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Image files (PNG, JPEG, GIF, BMP) or folders, searched recursively.
    #[arg(required = true, value_name = "IMAGES")]
    images: Vec<PathBuf>,
    /// Classes to show per image, best first.
    #[arg(long, short = 'k', default_value_t = 5)]
    top_k: usize,
    /// Class names, one per line in output order (default: the model's assets/tfload_contract.json).
    #[arg(long, value_name = "FILE")]
    labels: Option<PathBuf>,
    /// Images per session call.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// The signature to call.
    #[arg(long, short = 's', default_value = "serving_default")]
    signature: String,
    /// The output with the class scores (default: `outputs`, or the only output).
    #[arg(long)]
    output: Option<String>,
    /// Resize images to HEIGHTxWIDTH, for models whose input leaves the size open.
    #[arg(long, value_name = "HxW", value_parser = parse_size)]
    image_size: Option<(usize, usize)>,
    /// Shortcut for `--format json`.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Shortcut for `--format csv`.
    #[arg(long)]
    csv: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: PredictFormat,
    /// TFRecord input instead of image files: one file or glob, with --feature naming the
    /// encoded image (the label feature is not needed).
    #[command(flatten)]
    tfrecord: TfRecordArgs,
}

/// How predictions are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum PredictFormat {
    /// A table for humans.
    #[default]
    Text,
    /// One JSON document for programs.
    Json,
    /// One row per image and rank: image,rank,index,class,score.
    Csv,
}

fn parse_size(text: &str) -> Result<(usize, usize), String> {
    let parsed = text.split_once(['x', 'X']).and_then(|(h, w)| Some((h.parse().ok()?, w.parse().ok()?)));
    parsed.filter(|&(h, w)| h > 0 && w > 0).ok_or_else(|| format!("`{text}` is not HEIGHTxWIDTH (e.g. 224x224)"))
}

/// The JSON document (`tfload.predict/v1`).
#[derive(Debug, Serialize)]
struct PredictDocument<'a> {
    schema: &'static str,
    path: String,
    signature: &'a str,
    input: &'a str,
    output: &'a str,
    image: tfload::formats::images::ImageSpec,
    predictions: Vec<ImagePrediction<'a>>,
}

/// The classes of one image, best first.
#[derive(Debug, Serialize)]
struct ImagePrediction<'a> {
    image: String,
    top: &'a [ClassScore],
}

pub fn run(args: &PredictArgs, global: &GlobalArgs) -> Result<()> {
    let class_names = args.labels.as_deref().map(read_class_names).transpose()?;
    let predictor = Predictor::load(&args.model.dir, &args.model.tag, &args.signature, SessionConfig::default())?;
    let options = ClassifierOptions { output: args.output.clone(), image_size: args.image_size, class_names };
    let classifier = ImageClassifier::new(predictor, options)?;
    let (images, results) = match args.images.as_slice() {
        [path] if DataSource::is_tfrecord(path, &args.tfrecord.settings()) => {
            classify_records(args, global, &classifier, path)?
        }
        _ => classify_files(args, global, &classifier)?,
    };
    let format = match (args.json, args.csv) {
        (true, _) => PredictFormat::Json,
        (_, true) => PredictFormat::Csv,
        _ => args.format,
    };
    let mut out = std::io::stdout().lock();
    match format {
        PredictFormat::Text => print_table(&mut out, &images, &results),
        PredictFormat::Csv => print_csv(&mut out, &images, &results),
        PredictFormat::Json => {
            let (input, output) = classifier.keys();
            let document = PredictDocument {
                schema: "tfload.predict/v1",
                path: args.model.dir.display().to_string(),
                signature: &args.signature,
                input,
                output,
                image: classifier.image_spec(),
                predictions: images
                    .iter()
                    .zip(&results)
                    .map(|(image, top)| ImagePrediction { image: image.clone(), top })
                    .collect(),
            };
            serde_json::to_writer_pretty(&mut out, &document)?;
            writeln!(out)?;
            Ok(())
        }
    }
}

/// Names (file paths) and top classes of the image files given and of the images in the folders
/// given.
fn classify_files(args: &PredictArgs, global: &GlobalArgs, classifier: &ImageClassifier) -> Result<Predictions> {
    let images = collect_images(&args.images)?;
    let bar = progress(images.len(), "images", global.quiet);
    let mut results = Vec::with_capacity(images.len());
    for chunk in images.chunks(args.batch_size.max(1)) {
        results.extend(classifier.classify_files(chunk, args.top_k.max(1))?);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok((images.iter().map(|p| p.display().to_string()).collect(), results))
}

/// Names (`FILE#RECORD`) and top classes of the records of TFRecord data, in file order.
fn classify_records(
    args: &PredictArgs,
    global: &GlobalArgs,
    classifier: &ImageClassifier,
    path: &Path,
) -> Result<Predictions> {
    let (input_key, _) = classifier.keys();
    let input = classifier.predictor().signature().input(input_key).context("the classifier's image input")?;
    let source = DataSource::detect(path, &args.tfrecord.source_options(None, None))?;
    let data: Arc<dyn Dataset> = Arc::new(source.open_tfrecord(input, Purpose::Prediction)?);
    report_data_reading(data.as_ref(), global.quiet);
    let loader = BatchLoader::new(
        data.clone(),
        LoaderOptions { batch_size: args.batch_size.max(1), shuffle: false, ..LoaderOptions::default() },
    );
    let bar = progress(data.len(), "records", global.quiet);
    let (mut names, mut results) = (Vec::with_capacity(data.len()), Vec::with_capacity(data.len()));
    for batch in loader.epoch(0, 0) {
        let batch = batch?;
        let TensorData::Float32(images) = batch.inputs else {
            bail!("--feature must name encoded images or float pixels for an image classifier");
        };
        results.extend(classifier.classify(images, args.top_k.max(1))?);
        names.extend(batch.indices.iter().map(|i| format!("{}#{i}", path.display())));
        bar.inc(batch.indices.len() as u64);
    }
    bar.finish_and_clear();
    Ok((names, results))
}

/// What was classified, by name, and its top classes.
type Predictions = (Vec<String>, Vec<Vec<ClassScore>>);

/// The files given, and the images in the folders given (recursively, in Keras's order).
fn collect_images(given: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut images = Vec::new();
    for path in given {
        if path.is_dir() {
            let found = list_images(path)?;
            if found.is_empty() {
                bail!("{}: no image files (.png, .jpg, .jpeg, .gif, .bmp) in this folder", path.display());
            }
            images.extend(found);
        } else if path.exists() {
            images.push(path.clone());
        } else {
            bail!("{}: no such file or directory", path.display());
        }
    }
    Ok(images)
}

fn print_table(out: &mut impl Write, images: &[String], results: &[Vec<ClassScore>]) -> Result<()> {
    let k = results.iter().map(Vec::len).max().unwrap_or(0);
    let mut header = vec!["image".to_string()];
    for rank in 1..=k {
        header.extend([format!("#{rank}"), "score".to_string()]);
    }
    let mut rows = table::new(&header.iter().map(String::as_str).collect::<Vec<_>>());
    for (image, top) in images.iter().zip(results) {
        let mut row = vec![image.clone()];
        for class in top {
            row.extend([class.class.clone(), format!("{:.4}", class.score)]);
        }
        rows.add_row(row);
    }
    table::align_right(&mut rows, &(1..=k).map(|rank| 2 * rank).collect::<Vec<_>>());
    table::print_indented(out, &rows, 0)?;
    Ok(())
}

fn print_csv(out: &mut impl Write, images: &[String], results: &[Vec<ClassScore>]) -> Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(["image", "rank", "index", "class", "score"])?;
    for (image, top) in images.iter().zip(results) {
        for (rank, class) in top.iter().enumerate() {
            writer.write_record([
                image.clone(),
                (rank + 1).to_string(),
                class.index.to_string(),
                class.class.clone(),
                class.score.to_string(),
            ])?;
        }
    }
    writer.flush()?;
    Ok(())
}
