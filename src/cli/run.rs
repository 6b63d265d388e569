//! `tfload run DIR --signature KEY --input key=file.npy ...`: calls one signature on arrays from
//! `.npy` / `.npz` files (and on serialized tf.Examples built from `--input-examples`), checked against the signature before any session starts, and prints the
//! outputs or writes them as `.npy` files (all of them or none).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;
use serde_json::Value;
use tfload::formats::npy::{write_npy, ArraySource};
use tfload::{LoadScope, LoadedModel, SavedModel, SessionConfig, Tensors};

use super::output::{format_values, json_values};
use super::ModelArgs;

/// Arguments of `tfload run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The signature to call.
    #[arg(long, short = 's', default_value = "serving_default")]
    signature: String,
    /// One input: KEY=FILE.npy, KEY=FILE.npz (its only array) or KEY=FILE.npz[NAME]. Repeat
    /// for each input of the signature.
    #[arg(long = "input", short = 'i', value_name = "KEY=FILE", value_parser = parse_input)]
    inputs: Vec<(String, ArraySource)>,
    /// One input of serialized tf.Examples, as saved_model_cli's --input_examples:
    /// KEY=[{"feature": [values], ...}, ...], one dict per example (a Python or JSON literal).
    /// A list's first value picks the feature's kind: float, int (int64) or string (bytes; b'..'
    /// literals as they are). Fed as a 1-D string tensor, e.g. to a classify or regress signature.
    #[arg(long = "input-examples", value_name = "KEY=EXAMPLES")]
    input_examples: Vec<String>,
    /// Write each output to DIR/<key>.npy instead of printing it. The files appear together
    /// when every output is written, or not at all.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// One JSON document on stdout (values as nested arrays, or the files written with --out).
    #[arg(long)]
    json: bool,
}

fn parse_input(text: &str) -> Result<(String, ArraySource), String> {
    match text.split_once('=') {
        Some((key, file)) if !key.is_empty() && !file.is_empty() => Ok((key.to_string(), ArraySource::parse(file))),
        _ => Err(format!("`{text}` is not KEY=FILE (e.g. inputs=x.npy or inputs=data.npz[x])")),
    }
}

/// The JSON document (`tfload.run/v1`).
#[derive(Debug, Serialize)]
struct RunDocument {
    schema: &'static str,
    path: String,
    signature: String,
    outputs: Vec<OutputEntry>,
}

/// One output: its spec, and its values or the file it was written to.
#[derive(Debug, Serialize)]
struct OutputEntry {
    key: String,
    dtype: String,
    shape: Vec<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    values: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
}

pub fn run(args: &RunArgs) -> Result<()> {
    let signature = SavedModel::open(&args.model.dir)?.meta_graph(&args.model.tag)?.signature(&args.signature)?;
    let inputs = read_inputs(&args.inputs, &args.input_examples)?;
    tfload::session::call::check_inputs(&signature, &inputs)?;
    if let Some(out) = &args.out {
        check_out_dir(out)?;
    }
    let scope = LoadScope::signatures(&[&args.signature]);
    let model = LoadedModel::load_scoped(&args.model.dir, &args.model.tag, SessionConfig::default(), &scope)?;
    let outputs = model.run(&args.signature, &inputs)?;
    if let Some(out) = &args.out {
        write_all(out, &outputs)?;
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let document = RunDocument {
            schema: "tfload.run/v1",
            path: args.model.dir.display().to_string(),
            signature: args.signature.clone(),
            outputs: outputs.iter().map(|(key, data)| entry(key, data, args.out.as_deref())).collect(),
        };
        serde_json::to_writer_pretty(&mut stdout, &document)?;
        writeln!(stdout)?;
    } else {
        for (key, data) in &outputs {
            writeln!(stdout, "{key}: {} {:?}", data.dtype(), data.shape())?;
            match &args.out {
                Some(out) => writeln!(stdout, "  written to {}", out.join(format!("{key}.npy")).display())?,
                None => writeln!(stdout, "{}", format_values(data))?,
            }
        }
    }
    Ok(())
}

fn entry(key: &str, data: &tfload::TensorData, out: Option<&Path>) -> OutputEntry {
    OutputEntry {
        key: key.to_string(),
        dtype: data.dtype().to_string(),
        shape: data.shape().to_vec(),
        values: out.is_none().then(|| json_values(data)),
        file: out.map(|dir| dir.join(format!("{key}.npy")).display().to_string()),
    }
}

fn read_inputs(given: &[(String, ArraySource)], examples: &[String]) -> Result<Tensors> {
    let mut inputs = Tensors::new();
    let mut add = |key: &str, read: &dyn Fn() -> tfload::Result<tfload::TensorData>| {
        if inputs.contains_key(key) {
            bail!("input `{key}` is given twice; give each input once (with --input or --input-examples)");
        }
        inputs.insert(key.to_string(), read()?);
        Ok(())
    };
    for (key, source) in given {
        add(key, &|| source.read())?;
    }
    for arg in examples {
        let Some((key, text)) = arg.split_once('=').filter(|(key, _)| !key.is_empty()) else {
            bail!("--input-examples `{arg}` is not KEY=[{{\"feature\": [values]}}, ...] (e.g. examples=[{{\"x\": [1.5]}}])");
        };
        add(key, &|| tfload::formats::example::input_from_text(key, text))?;
    }
    Ok(inputs)
}

/// Refuses an output path that is a file, before any work is done.
fn check_out_dir(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("{}: --out must be a directory, and this is a file", out.display());
    }
    Ok(())
}

/// Writes every output as `KEY.npy` into `out`, all or none (a failure leaves `out` as it was).
fn write_all(out: &Path, outputs: &Tensors) -> Result<()> {
    tfload::output_dir::write_files_into(out, |staging| {
        outputs.iter().try_for_each(|(key, data)| write_npy(&staging.join(format!("{key}.npy")), data))
    })?;
    Ok(())
}
