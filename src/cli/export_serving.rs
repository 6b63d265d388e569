//! `tfload export-serving DIR --out BASE`: the serving form of a trainable SavedModel, written
//! as version `BASE/N/` for TF Serving, with its size beside the source model's.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use tfload::serving_export::{export_serving, ServingExport, ServingExportOptions, WarmupInput};

use super::variables::human_bytes;
use super::OutputFormat;

/// Arguments of `tfload export-serving`.
#[derive(Debug, Args)]
pub struct ExportServingArgs {
    /// The trainable SavedModel directory (tag set `serve`).
    pub dir: PathBuf,
    /// The model's base directory; the version is written to BASE/N/, as TF Serving expects.
    #[arg(long)]
    out: PathBuf,
    /// Version number N; the next free one (highest existing plus one, or 1) when left out.
    #[arg(long)]
    version: Option<u64>,
    /// Another signature to keep besides serving_default (repeatable). Training signatures
    /// (train_step, eval_step) are refused.
    #[arg(long = "signature", value_name = "NAME")]
    signatures: Vec<String>,
    /// A serving_default input for a warm-up request, as KEY=FILE.npy (repeatable); writes
    /// assets.extra/tf_serving_warmup_requests.
    #[arg(long = "warmup-input", value_name = "KEY=FILE")]
    warmup_inputs: Vec<WarmupInput>,
    /// Shortcut for `--format json`.
    #[arg(long)]
    json: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: OutputFormat,
}

/// The JSON document (`tfload.export_serving/v1`), documented in docs/json-output.md.
#[derive(Debug, Serialize)]
struct ExportDocument<'a> {
    schema: &'static str,
    source: String,
    #[serde(flatten)]
    export: &'a ServingExport,
}

pub fn run(args: &ExportServingArgs) -> Result<()> {
    let options = ServingExportOptions {
        base: args.out.clone(),
        version: args.version,
        signatures: args.signatures.clone(),
        warmup_inputs: args.warmup_inputs.clone(),
    };
    let export = export_serving(&args.dir, &options)?;
    let mut out = std::io::stdout().lock();
    if args.json || args.format == OutputFormat::Json {
        let document = ExportDocument {
            schema: "tfload.export_serving/v1",
            source: args.dir.display().to_string(),
            export: &export,
        };
        serde_json::to_writer_pretty(&mut out, &document)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "wrote version {} to {}", export.version, export.path.display())?;
    writeln!(out, "  signatures: {}", export.signatures.join(", "))?;
    writeln!(
        out,
        "  variables:  {} kept, {} left out{}",
        export.variables.len(),
        export.dropped_variables.len(),
        if export.dropped_variables.is_empty() {
            String::new()
        } else {
            format!(" ({})", export.dropped_variables.join(", "))
        }
    )?;
    if export.warmup_requests > 0 {
        writeln!(out, "  warm-up:    {} request in {}", export.warmup_requests, tfload::serving_export::WARMUP_FILE)?;
    }
    let percent = 100.0 * export.written_bytes as f64 / export.source_bytes.max(1) as f64;
    writeln!(
        out,
        "  size:       {} (the trainable model: {}, {percent:.0}%)",
        human_bytes(export.written_bytes),
        human_bytes(export.source_bytes)
    )?;
    Ok(())
}
