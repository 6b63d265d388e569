//! `tfload inspect-h5 FILE`: the layers and weights a Keras HDF5 weights file holds.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use tfload::formats::keras_h5::{H5Layer, KerasWeights, Layout};

use super::table;

/// Arguments of `tfload inspect-h5`.
#[derive(Debug, Args)]
pub struct InspectH5Args {
    /// The Keras weights file (`*.weights.h5`, or a Keras 2 / tf.keras `.h5`).
    file: PathBuf,
    /// Also list layers without weights (Flatten, InputLayer, ...).
    #[arg(long)]
    all: bool,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

/// The JSON document (`tfload.inspect_h5/v1`).
#[derive(Debug, Serialize)]
struct InspectDocument<'a> {
    schema: &'static str,
    path: String,
    layout: &'a Layout,
    layers: Vec<&'a H5Layer>,
}

pub fn run(args: &InspectH5Args) -> Result<()> {
    let weights = KerasWeights::open(&args.file)?;
    let layers: Vec<&H5Layer> = weights.layers().iter().filter(|l| args.all || !l.weights.is_empty()).collect();
    let mut out = std::io::stdout().lock();
    if args.json {
        let document = InspectDocument {
            schema: "tfload.inspect_h5/v1",
            path: weights.path().display().to_string(),
            layout: weights.layout(),
            layers,
        };
        serde_json::to_writer_pretty(&mut out, &document)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "{}: {}\n", weights.path().display(), weights.layout())?;
    let mut rows = table::new(&["layer", "weight", "dtype", "shape", "elements", "dataset"]);
    for layer in &layers {
        if layer.weights.is_empty() {
            rows.add_row(vec![layer.name.clone(), "-".into(), "-".into(), "-".into(), "0".into(), "-".into()]);
        }
        for weight in &layer.weights {
            rows.add_row(vec![
                layer.name.clone(),
                weight.name.clone(),
                weight.dtype.to_string(),
                format!("{:?}", weight.shape),
                weight.shape.iter().product::<usize>().to_string(),
                weight.dataset.clone(),
            ]);
        }
    }
    table::align_right(&mut rows, &[4]);
    table::print_indented(&mut out, &rows, 0)?;
    let count: usize = layers.iter().map(|l| l.weights.len()).sum();
    let elements: usize = layers.iter().flat_map(|l| &l.weights).map(|w| w.shape.iter().product::<usize>()).sum();
    writeln!(
        out,
        "\n{} layers with weights, {count} weights, {elements} elements",
        layers.iter().filter(|l| !l.weights.is_empty()).count()
    )?;
    Ok(())
}
