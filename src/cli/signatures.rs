//! `tfload signatures DIR`: every signature of a SavedModel, as tables or one JSON document.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use tfload::{SavedModel, Signature, TensorSpec};

use super::{table, ModelArgs, OutputFormat};

/// Arguments of `tfload signatures`.
#[derive(Debug, Args)]
pub struct SignaturesArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Also list TensorFlow's internal signatures (`__saved_model_init_op`).
    #[arg(long)]
    all: bool,
    /// Show only this signature.
    #[arg(long, short = 's')]
    signature: Option<String>,
    /// Shortcut for `--format json`.
    #[arg(long)]
    json: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: OutputFormat,
}

/// The JSON document (`tfload.signatures/v1`); its fields are documented in docs/json-output.md.
#[derive(Debug, Serialize)]
struct SignaturesDocument<'a> {
    schema: &'static str,
    path: String,
    tag_sets: Vec<Vec<String>>,
    tags: &'a [String],
    tensorflow_version: Option<&'a str>,
    signatures: Vec<Signature>,
}

pub fn run(args: &SignaturesArgs) -> Result<()> {
    let model = SavedModel::open(&args.model.dir)?;
    let meta_graph = model.meta_graph(&args.model.tag)?;
    let signatures = match &args.signature {
        Some(key) => vec![meta_graph.signature(key)?],
        None => meta_graph.signatures(args.all),
    };
    let mut out = std::io::stdout().lock();
    if args.json || args.format == OutputFormat::Json {
        let document = SignaturesDocument {
            schema: "tfload.signatures/v1",
            path: model.dir().display().to_string(),
            tag_sets: model.tag_sets(),
            tags: meta_graph.tags(),
            tensorflow_version: meta_graph.tensorflow_version(),
            signatures,
        };
        serde_json::to_writer_pretty(&mut out, &document)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "SavedModel {}\n  tag sets: {}; showing [{}]{}",
        model.dir().display(),
        tfload::model::saved_model::describe_tag_sets(&model.tag_sets()),
        meta_graph.tags().join(","),
        meta_graph.tensorflow_version().map(|v| format!("; written by TensorFlow {v}")).unwrap_or_default()
    )?;
    if signatures.is_empty() {
        writeln!(out, "\n  no signatures (run with --all to see internal ones)")?;
    }
    for signature in &signatures {
        print_signature(&mut out, signature)?;
    }
    Ok(())
}

fn print_signature(out: &mut impl Write, signature: &Signature) -> std::io::Result<()> {
    let method = if signature.method_name.is_empty() { "(none)" } else { &signature.method_name };
    writeln!(out, "\nsignature '{}'  method: {method}", signature.key)?;
    let mut rows = table::new(&["", "key", "dtype", "shape", "tensor"]);
    push_rows(&mut rows, "input", &signature.inputs);
    push_rows(&mut rows, "output", &signature.outputs);
    table::print_indented(out, &rows, 1)
}

fn push_rows(rows: &mut comfy_table::Table, direction: &str, specs: &[TensorSpec]) {
    if specs.is_empty() {
        rows.add_row(vec![direction, "(none)", "", "", ""]);
    }
    for spec in specs {
        rows.add_row(vec![
            direction.to_string(),
            spec.key.clone(),
            spec.dtype.to_string(),
            spec.shape.to_string(),
            describe_encoding(spec),
        ]);
    }
}

fn describe_encoding(spec: &TensorSpec) -> String {
    use tfload::TensorEncoding;
    match &spec.encoding {
        TensorEncoding::Dense { name } => name.clone(),
        TensorEncoding::CooSparse { values, indices, dense_shape } => {
            format!("sparse: values {values}, indices {indices}, dense_shape {dense_shape}")
        }
        TensorEncoding::Composite { components } => {
            format!("composite: {}", components.join(", "))
        }
        TensorEncoding::Unset => "(no tensor)".to_string(),
    }
}
