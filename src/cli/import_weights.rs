//! `tfload import-weights MODEL WEIGHTS --out DIR`: Keras HDF5 weights into a copy of a
//! SavedModel, matched by layer name.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use tfload::formats::keras_h5::Layout;
use tfload::import_weights::{plan, summarize, Action, ImportOptions, ImportPlan, MappingRow, SHOWN_NAMES};

use super::{table, ModelArgs};

/// Arguments of `tfload import-weights`.
#[derive(Debug, Args)]
pub struct ImportWeightsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The Keras weights: a Keras 3 `*.weights.h5`, or a Keras 2 / tf.keras `.h5` (weights or whole model).
    weights: PathBuf,
    /// Where to write the new SavedModel (must not exist, unless --force).
    #[arg(long, required_unless_present = "dry_run")]
    out: Option<PathBuf>,
    /// Leave layers whose weight count or shapes differ (a new head), or that the file lacks, untouched instead of failing.
    #[arg(long)]
    skip_mismatch: bool,
    /// Print the whole mapping (HDF5 weight, variable, shapes, action) and write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Replace --out if it is an existing SavedModel.
    #[arg(long)]
    force: bool,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

/// The JSON document (`tfload.import_weights/v1`).
#[derive(Debug, Serialize)]
struct ImportDocument<'a> {
    schema: &'static str,
    model: String,
    weights: String,
    layout: &'a Layout,
    dry_run: bool,
    out: Option<String>,
    imported: usize,
    skipped_layers: Vec<&'a str>,
    /// Model layers the file holds no weights for (kept with --skip-mismatch).
    missing_layers: &'a [String],
    mapping: &'a [MappingRow],
}

/// Runs the import; `quiet` (-q) leaves out the summary (the JSON document and a dry run's
/// mapping, asked for by their flags, are still printed; errors always are).
pub fn run(args: &ImportWeightsArgs, quiet: bool) -> Result<()> {
    let options = ImportOptions { tags: args.model.tag.clone(), skip_mismatch: args.skip_mismatch };
    let plan = plan(&args.model.dir, &args.weights, &options)?;
    let out = if args.dry_run { None } else { args.out.as_deref() };
    if let Some(out) = out {
        plan.apply(out, args.force)?;
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        print_json(&mut stdout, &plan, args.dry_run, out)?;
    } else if args.dry_run {
        print_mapping(&mut stdout, &plan)?;
    }
    // After the mapping, so that a dry run shows what does not fit before failing on it.
    plan.check()?;
    if !args.json && !quiet {
        print_summary(&mut stdout, &plan, out)?;
    }
    Ok(())
}

fn print_json(out: &mut impl Write, plan: &ImportPlan, dry_run: bool, written: Option<&Path>) -> Result<()> {
    let document = ImportDocument {
        schema: "tfload.import_weights/v1",
        model: plan.model_dir().display().to_string(),
        weights: plan.weights().path().display().to_string(),
        layout: plan.weights().layout(),
        dry_run,
        out: written.map(|o| o.display().to_string()),
        imported: plan.imported(),
        skipped_layers: plan.skipped_layers(),
        missing_layers: plan.missing_layers(),
        mapping: plan.rows(),
    };
    serde_json::to_writer_pretty(&mut *out, &document)?;
    writeln!(out)?;
    Ok(())
}

fn print_mapping(out: &mut impl Write, plan: &ImportPlan) -> std::io::Result<()> {
    let mut rows = table::new(&["layer", "HDF5 weight", "shape", "variable", "shape", "action"]);
    let or_dash = |value: Option<String>| value.unwrap_or_else(|| "-".to_string());
    for row in plan.rows() {
        rows.add_row(vec![
            row.layer.clone(),
            or_dash(row.h5_weight.clone()),
            or_dash(row.h5_shape.as_ref().map(|s| format!("{s:?}"))),
            or_dash(row.variable.clone()),
            or_dash(row.variable_shape.as_ref().map(|s| s.to_string())),
            row.action.to_string(),
        ]);
    }
    table::print_indented(out, &rows, 0)?;
    writeln!(out)
}

fn print_summary(out: &mut impl Write, plan: &ImportPlan, written: Option<&Path>) -> std::io::Result<()> {
    let mut imported_layers: Vec<&str> =
        plan.rows().iter().filter(|r| r.action == Action::Import).map(|r| r.layer.as_str()).collect();
    imported_layers.dedup();
    let verb = if written.is_some() { "imported" } else { "would import" };
    let weights = plan.weights();
    let layers = summarize(&imported_layers, SHOWN_NAMES);
    writeln!(out, "{verb} {} weights of {} layer(s) ({layers})", plan.imported(), imported_layers.len())?;
    writeln!(out, "  from {} ({})", weights.path().display(), weights.layout())?;
    writeln!(out, "  into a copy of {}", plan.model_dir().display())?;
    let skipped = plan.skipped_layers();
    if !skipped.is_empty() {
        writeln!(
            out,
            "kept {} layer(s) whose weights do not fit: {}",
            skipped.len(),
            summarize(&skipped, SHOWN_NAMES)
        )?;
    }
    let missing = plan.missing_layers();
    if !missing.is_empty() {
        let missing_names = summarize(missing, SHOWN_NAMES);
        writeln!(out, "kept {} layer(s) the file has no weights for: {missing_names}", missing.len())?;
    }
    match written {
        Some(path) => writeln!(out, "wrote {}", path.display()),
        None => writeln!(out, "dry run: nothing written"),
    }
}
