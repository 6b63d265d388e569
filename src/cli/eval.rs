//! `tfload eval DIR --data DATA`: loss and metrics through the model's `eval_step`, accuracy,
//! per-class precision / recall / F1 and the confusion matrix from `serving_default`, on a
//! `.npz` file (`x`, `y`) or an image folder (one sub-folder per class).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use tfload::data::{DataSource, Purpose};
use tfload::infer::evaluate::{evaluate, Evaluation};
use tfload::infer::metrics::ClassMetrics;
use tfload::infer::predict::Predictor;
use tfload::SessionConfig;

use super::data_args::{report_data_reading, TfRecordArgs};
use super::output::progress;
use super::{table, GlobalArgs, ModelArgs};

/// Arguments of `tfload eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Labelled data: a .npz file with `x` and `y` arrays, or a folder with one sub-folder of
    /// images per class (classes sorted by name, as Keras reads them).
    #[arg(long, value_name = "FILE|DIR")]
    data: PathBuf,
    /// Examples per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// One JSON document on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tfrecord: TfRecordArgs,
}

/// The JSON document (`tfload.eval/v1`).
#[derive(Debug, Serialize)]
struct EvalDocument<'a> {
    schema: &'static str,
    path: String,
    data: String,
    batch_size: usize,
    #[serde(flatten)]
    evaluation: &'a Evaluation,
    accuracy: Option<f64>,
    per_class: Vec<NamedMetrics<'a>>,
    macro_average: Option<ClassMetrics>,
}

/// One class's metrics with its name.
#[derive(Debug, Serialize)]
struct NamedMetrics<'a> {
    class: &'a str,
    #[serde(flatten)]
    metrics: ClassMetrics,
}

pub fn run(args: &EvalArgs, global: &GlobalArgs) -> Result<()> {
    let serving = Predictor::load_for_evaluation(&args.model.dir, &args.model.tag, SessionConfig::default())?;
    let input = serving.signature().inputs.first().context("evaluation feeds the signature's one input")?;
    let mut options = args.tfrecord.source_options(None, None);
    options.class_names = serving.record_class_names();
    options.labels = tfload::model::record::RecordView::read(&args.model.dir).label_target();
    let source = DataSource::detect(&args.data, &options)?;
    let data = source.open(input, || Ok(serving.image_input(None)?.1), Purpose::Evaluation)?;
    report_data_reading(data.as_ref(), global.quiet);
    let bar = progress(data.len(), "examples", global.quiet);
    let evaluation = evaluate(&serving, data.clone(), args.batch_size.max(1), |done| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    let per_class = evaluation.confusion.as_ref().map(|c| c.per_class()).unwrap_or_default();
    let document = EvalDocument {
        schema: "tfload.eval/v1",
        path: args.model.dir.display().to_string(),
        data: data.describe(),
        batch_size: args.batch_size.max(1),
        evaluation: &evaluation,
        accuracy: evaluation.accuracy(),
        per_class: evaluation
            .class_names
            .iter()
            .zip(per_class)
            .map(|(class, metrics)| NamedMetrics { class, metrics })
            .collect(),
        macro_average: evaluation.confusion.as_ref().map(|c| c.macro_average()),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &document)?;
        writeln!(out)?;
        return Ok(());
    }
    print_text(&mut out, &document)
}

fn print_text(out: &mut impl Write, document: &EvalDocument) -> Result<()> {
    let evaluation = document.evaluation;
    writeln!(out, "{} on {}, {} batches of {}", document.path, document.data, evaluation.batches, document.batch_size)?;
    let mut summary = table::new(&["metric", "value", "from"]);
    if let Some(loss) = evaluation.loss {
        summary.add_row(vec!["loss".to_string(), format!("{loss:.6}"), "eval_step".to_string()]);
    }
    for (name, value) in &evaluation.metrics {
        summary.add_row(vec![name.clone(), format!("{value:.6}"), "eval_step".to_string()]);
    }
    if let Some(accuracy) = document.accuracy {
        summary.add_row(vec!["accuracy".to_string(), format!("{accuracy:.6}"), "serving_default (argmax)".to_string()]);
    }
    table::align_right(&mut summary, &[1]);
    writeln!(out)?;
    table::print_indented(out, &summary, 0)?;
    let Some(confusion) = &evaluation.confusion else {
        return Ok(());
    };
    let mut classes = table::new(&["class", "precision", "recall", "f1", "support"]);
    let rows =
        document.per_class.iter().map(|m| (m.class, m.metrics)).chain(document.macro_average.map(|m| ("macro avg", m)));
    for (name, m) in rows {
        classes.add_row(vec![
            name.to_string(),
            format!("{:.4}", m.precision),
            format!("{:.4}", m.recall),
            format!("{:.4}", m.f1),
            m.support.to_string(),
        ]);
    }
    table::align_right(&mut classes, &[1, 2, 3, 4]);
    writeln!(out)?;
    table::print_indented(out, &classes, 0)?;
    writeln!(out, "\nconfusion matrix (rows: true class, columns: predicted class)")?;
    let mut header = vec![""];
    header.extend(evaluation.class_names.iter().map(String::as_str));
    let mut matrix = table::new(&header);
    for (name, row) in evaluation.class_names.iter().zip(confusion.counts()) {
        let mut cells = vec![name.clone()];
        cells.extend(row.iter().map(u64::to_string));
        matrix.add_row(cells);
    }
    table::align_right(&mut matrix, &(1..=confusion.classes()).collect::<Vec<_>>());
    table::print_indented(out, &matrix, 0)?;
    Ok(())
}
