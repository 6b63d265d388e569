//! The command-line layer: clap types, one module per subcommand, and the shared printing
//! helpers. Commands call the library and print; they hold no logic of their own.

mod data_args;
mod eval;
mod export_serving;
mod import_weights;
mod inspect_h5;
pub mod logging;
mod output;
mod predict;
mod run;
mod signatures;
pub mod stderr;
mod table;
mod train;
mod variables;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `tfload --version`: this crate's version, then the libtensorflow the build linked and how it
/// found it (build.rs: TFLOAD_TFLIB_DIR, pkg-config or the repository's .tflib).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nlibtensorflow: TensorFlow ",
    env!("TFLOAD_TF_VERSION"),
    ", built against ",
    env!("TFLOAD_LINKED_TFLIB_DIR"),
    " (found through ",
    env!("TFLOAD_TFLIB_HOW"),
    ")"
);

/// Inspect, run and fine-tune TensorFlow SavedModels, with no Python at run time.
#[derive(Debug, Parser)]
#[command(name = "tfload", bin_name = "tfload", version = VERSION, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// More logging on stderr: -v shows TensorFlow's own log, -vv debug output.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every signature of a SavedModel: inputs and outputs with dtype, shape and tensor name.
    Signatures(signatures::SignaturesArgs),
    /// List the variables of a SavedModel with dtype, shape, size and trainable flag.
    Variables(variables::VariablesArgs),
    /// Import Keras HDF5 weights into a copy of a SavedModel, matching layers by name.
    ImportWeights(import_weights::ImportWeightsArgs),
    /// List the layers and weights of a Keras HDF5 weights file.
    #[command(name = "inspect-h5")]
    InspectH5(inspect_h5::InspectH5Args),
    /// Fine-tune a trainable SavedModel through its exported train_step.
    Train(Box<train::TrainArgs>),
    /// Call one signature on arrays from .npy/.npz files; print the outputs or write them as .npy.
    Run(run::RunArgs),
    /// Classify images (files or folders) with an image classifier: top-k classes with scores.
    Predict(predict::PredictArgs),
    /// Loss, metrics, per-class precision/recall/F1 and confusion matrix on labelled data.
    Eval(eval::EvalArgs),
    /// Write the serving form of a trained model for TF Serving: BASE/N/ with serving_default
    /// only, no optimizer state.
    #[command(name = "export-serving")]
    ExportServing(export_serving::ExportServingArgs),
}

/// How results are printed on stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Tables for humans.
    #[default]
    Text,
    /// One JSON document for programs (schema in docs/json-output.md).
    Json,
}

/// Where a SavedModel is and which of its MetaGraphs to use.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The SavedModel directory (holds saved_model.pb and variables/).
    pub dir: std::path::PathBuf,
    /// Tag set of the MetaGraph to use, comma separated.
    #[arg(long, default_value = "serve", value_delimiter = ',')]
    pub tag: Vec<String>,
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let cli = match run_without_tensorflow(cli) {
        Ok(result) => return result,
        Err(cli) => *cli,
    };
    match cli.command {
        Command::Signatures(_) | Command::Variables(_) | Command::ExportServing(_) => {
            unreachable!("run by run_without_tensorflow")
        }
        Command::ImportWeights(args) => import_weights::run(&args, cli.global.quiet),
        Command::InspectH5(args) => inspect_h5::run(&args),
        Command::Train(args) => train::run(&args, &cli.global),
        Command::Run(args) => run::run(&args),
        Command::Predict(args) => predict::run(&args, &cli.global),
        Command::Eval(args) => eval::run(&args, &cli.global),
    }
}

/// Runs the parsed command if it needs no TensorFlow session (`signatures`, `variables` and
/// `export-serving` read only the SavedModel's protobuf and checkpoint), else gives the arguments back. The launcher calls this so that such
/// commands never load libtensorflow, whose start-up is nearly all of their time; only the code
/// reachable from here ends up in the launcher, which therefore does not link TensorFlow.
pub fn run_without_tensorflow(cli: Cli) -> Result<anyhow::Result<()>, Box<Cli>> {
    match &cli.command {
        Command::Signatures(args) => Ok(signatures::run(args)),
        Command::Variables(args) => Ok(variables::run(args)),
        Command::ExportServing(args) => Ok(export_serving::run(args)),
        _ => Err(Box::new(cli)),
    }
}

/// The process exit code for a command's result, with the error printed as `error: ...`.
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) if is_broken_pipe(&error) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_chain_text(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: ` as anyhow's `{:#}` does, leaving out a cause whose
/// text the message before already holds: tfload's errors embed their source (`{path}:
/// {source}`) and also expose it as the source, which printed the OS error twice.
fn error_chain_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

/// Whether an error is stdout closing early (`tfload ... | head`), which is not a failure.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    error.chain().any(|cause| {
        let io = cause.downcast_ref::<std::io::Error>().map(|io| io.kind());
        let json = cause.downcast_ref::<serde_json::Error>().and_then(|e| e.io_error_kind());
        io == Some(BrokenPipe) || json == Some(BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_os_error_embedded_in_the_message_is_printed_once() {
        let io = std::io::Error::from_raw_os_error(28);
        let error = anyhow::Error::new(tfload::Error::Io { path: "out/x".into(), source: io });
        let error = error.context("writing the model");
        let text = error_chain_text(&error);
        assert_eq!(text.matches("os error 28").count(), 1, "{text}");
        assert!(text.starts_with("writing the model: out/x: "), "{text}");
    }
}
