//! `tfload train DIR --data DATA --out OUT`: fine-tunes a trainable SavedModel, with masks,
//! schedules, validation, checkpoints, resume, and a progress bar (plain lines when stderr is not
//! a terminal).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tfload::data::{split, ArrayDataset, BatchLoader, Dataset, ImageFolderDataset, LoaderOptions};
use tfload::data::{FeatureMapping, InputSpec, TfRecordDataset, TfRecordOptions};
use tfload::images::{ImageSpec, UnfitImageInput};
use tfload::import_weights::ImportOptions;
use tfload::tensorboard::{Callbacks, TensorBoard};
use tfload::train::{
    check_paths, fit, CheckpointsInOutput, Control, Decay, EarlyStopping, EpochReport, FitOptions, FitOutcome,
    LrSchedule, Mask, MaskSpec, MaskStart, Metrics, RunData, RunPaths, RunPlan, StepReport, TrainCallback,
    TrainContract,
};
use tfload::{SavedModel, SessionConfig};

use super::{table, GlobalArgs};

/// Arguments of `tfload train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The trainable SavedModel to start from (exported by tfload-export); never modified.
    pub dir: PathBuf,
    /// Training data: an image folder (one sub-folder per class) or a .npz with x and y arrays.
    #[arg(long, required_unless_present = "show_mask")]
    pub data: Option<PathBuf>,
    /// Separate validation data (same form as --data).
    #[arg(long, conflicts_with = "validation_split")]
    pub val_data: Option<PathBuf>,
    /// Hold out this fraction of --data for validation (shuffled with --seed, as Keras does).
    #[arg(long)]
    pub validation_split: Option<f64>,
    /// Where the trained SavedModel goes; an unfinished run works in OUT.partial.
    #[arg(long, required_unless_present = "show_mask")]
    pub out: Option<PathBuf>,
    /// Epochs to train (a resumed run counts the epochs already done).
    #[arg(long, default_value_t = 10)]
    pub epochs: u64,
    /// Examples per batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Learning rate (default: the one the model's record suggests).
    #[arg(long)]
    pub lr: Option<f32>,
    /// Learning-rate schedule after warm-up.
    #[arg(long, value_enum, default_value_t = ScheduleKind::Constant)]
    pub lr_schedule: ScheduleKind,
    /// Step schedule: multiply the rate by this factor...
    #[arg(long, default_value_t = 0.1)]
    pub lr_decay_factor: f32,
    /// ...every this many epochs.
    #[arg(long, default_value_t = 10)]
    pub lr_decay_epochs: u64,
    /// Cosine schedule: the rate at the last step.
    #[arg(long, default_value_t = 0.0)]
    pub min_lr: f32,
    /// Steps of linear warm-up.
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: u64,
    /// Freeze variables or layers matching this glob (repeatable; applied after --train-last-layers).
    #[arg(long, value_name = "PATTERN")]
    pub freeze: Vec<String>,
    /// Train variables or layers matching this glob (repeatable; applied last, wins over --freeze).
    #[arg(long, value_name = "PATTERN")]
    pub train: Vec<String>,
    /// Train only the last N layers, freezing the rest (Keras: `for l in model.layers[:-N]: l.trainable = False`).
    #[arg(long, value_name = "N")]
    pub train_last_layers: Option<usize>,
    /// Start from every variable trainable instead of the model's stored default mask.
    #[arg(long, conflicts_with = "freeze_all")]
    pub train_all: bool,
    /// Start from every variable frozen.
    #[arg(long)]
    pub freeze_all: bool,
    /// Print the mask (variable, layer, shape, trainable) and exit without training.
    #[arg(long)]
    pub show_mask: bool,
    /// Shuffle seed (also drives --validation-split).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep the data order.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Leave out the last batch of an epoch when it is smaller than --batch-size.
    #[arg(long)]
    pub drop_remainder: bool,
    /// Also checkpoint every N steps (always at the end of each epoch).
    #[arg(long, value_name = "N")]
    pub checkpoint_every_steps: Option<u64>,
    /// Step checkpoints kept while the run goes on [default: 2]. Given, that many also stay in
    /// OUT/checkpoints when the run completes; by default OUT holds only the model and metrics.
    #[arg(long, value_name = "N")]
    pub keep_checkpoints: Option<usize>,
    /// Leave the best epoch's checkpoint (early stopping) in OUT/checkpoints/best.
    #[arg(long)]
    pub keep_best: bool,
    /// Stop when the monitored validation value has not improved for N epochs; the output gets the best epoch's weights.
    #[arg(long, value_name = "N")]
    pub early_stopping_patience: Option<u64>,
    /// The value early stopping watches: val_loss or val_<metric>.
    #[arg(long, default_value = "val_loss")]
    pub monitor: String,
    /// Smallest change of the monitored value that counts as an improvement.
    #[arg(long, default_value_t = 0.0)]
    pub min_delta: f64,
    /// Continue the unfinished run in OUT.partial from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Replace an existing OUT (once the new model is complete) or discard an unfinished run.
    #[arg(long)]
    pub overwrite: bool,
    /// Name of the feature array in .npz data (default: x or features).
    #[arg(long)]
    pub feature_key: Option<String>,
    /// Name of the label array in .npz data (default: y or labels).
    #[arg(long)]
    pub label_key: Option<String>,
    /// Load these Keras HDF5 weights (Keras 3 `.weights.h5` or legacy `.h5`) into the model
    /// before training, matched by layer name as `tfload import-weights` does.
    #[arg(long, value_name = "FILE")]
    pub init_weights: Option<PathBuf>,
    /// With --init-weights: leave layers whose shapes differ (a replaced head), or that the file lacks, as the model has them.
    #[arg(long, requires = "init_weights")]
    pub skip_mismatch: bool,
    /// Threads inside one op (0: TensorFlow decides).
    #[arg(long, default_value_t = 0)]
    pub intra_op_threads: u32,
    /// Ops run at once (0: TensorFlow decides).
    #[arg(long, default_value_t = 0)]
    pub inter_op_threads: u32,
    /// Print the final summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tfrecord: TfRecordArgs,
    /// Write TensorBoard event files to DIR/train and DIR/validation (loss, metrics, learning rate, samples/s per step and epoch, as Keras's TensorBoard callback).
    #[arg(long, value_name = "DIR")]
    pub logdir: Option<PathBuf>,
}

/// How TFRecord data (files of serialized tf.train.Example) is read.
#[derive(Debug, Args)]
pub struct TfRecordArgs {
    /// TFRecord data: the feature that is the model input, KEY or INPUT=KEY (image/encoded; encoded images are decoded and resized).
    #[arg(long, value_name = "[INPUT=]KEY")]
    pub feature: Option<String>,
    /// TFRecord data: the feature that holds the label (image/class/label).
    #[arg(long, value_name = "KEY")]
    pub label: Option<String>,
    /// TFRecord compression (auto: recognised per file).
    #[arg(long, value_enum, default_value_t = CompressionArg::Auto)]
    pub compression: CompressionArg,
    /// Leave out TFRecord records that fail their checksum or are cut short (counted, and said on stderr) instead of stopping.
    #[arg(long)]
    pub skip_corrupt: bool,
}

/// TFRecord compression types (Python's `compression_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// Recognised from each file's first bytes.
    Auto,
    /// Not compressed.
    None,
    /// GZIP.
    Gzip,
    /// ZLIB.
    Zlib,
}

impl TfRecordArgs {
    /// Whether `path` is TFRecord data: not a folder nor a .npz/.npy file, and a glob, or a file
    /// that starts as a TFRecord file does, or anything when --feature or --label is given.
    pub fn applies_to(&self, path: &Path) -> bool {
        if path.is_dir()
            || path.extension().is_some_and(|e| e == "npz" || e == "npy")
            || tfload::images::is_image_file(path)
        {
            return false;
        }
        let glob = !path.exists() && path.to_string_lossy().contains(['*', '?', '[']);
        // An empty file is a valid TFRecord file of no records, but nobody means that: left to
        // the other readers, it is reported as the empty file it is.
        let non_empty = || std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0);
        let sniffed = || non_empty() && matches!(tfload::tfrecord::Compression::detect(path), Ok(Some(_)));
        glob || self.feature.is_some() || self.label.is_some() || sniffed()
    }

    /// Opens TFRecord data at `path` (a file or a glob) for the model input `input`, with labels
    /// (training, evaluation) or, when `labelled` is false, without (prediction).
    pub fn open(
        &self,
        path: &Path,
        input: &tfload::TensorSpec,
        quiet: bool,
        labelled: bool,
    ) -> Result<Arc<dyn Dataset>> {
        use tfload::data::tfrecord::first_record_features;
        use tfload::tfrecord::{Compression, OnCorrupt};
        let compression = match self.compression {
            CompressionArg::Auto => Compression::Auto,
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zlib => Compression::Zlib,
        };
        let options = TfRecordOptions {
            compression,
            on_corrupt: if self.skip_corrupt { OnCorrupt::Skip } else { OnCorrupt::Fail },
        };
        let (Some(feature), true) = (&self.feature, self.label.is_some() || !labelled) else {
            let features = first_record_features(path, options)?;
            anyhow::bail!(
                "{} is TFRecord data; say which feature is the model input and which the label with --feature KEY --label KEY. Its first record has: {}",
                path.display(),
                if features.is_empty() { "no features".to_string() } else { features.join(", ") }
            );
        };
        let key = match feature.split_once('=') {
            Some((name, key)) if name == input.key => key,
            Some((name, _)) => {
                anyhow::bail!("--feature {feature}: the model has no input `{name}`; its input is `{}`", input.key)
            }
            None => feature.as_str(),
        };
        let mapping = FeatureMapping { input: key.to_string(), label: self.label.clone() };
        let dataset = TfRecordDataset::open(path, mapping, InputSpec::of(input)?, options)?;
        if dataset.skipped_records() > 0 && !quiet {
            eprintln!("warning: {}", dataset.describe());
        }
        Ok(Arc::new(dataset))
    }
}

/// Learning-rate schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScheduleKind {
    /// The same rate throughout.
    Constant,
    /// Multiplied by --lr-decay-factor every --lr-decay-epochs.
    Step,
    /// Cosine from --lr down to --min-lr.
    Cosine,
}

pub fn run(args: &TrainArgs, global: &GlobalArgs) -> Result<()> {
    let meta_graph = SavedModel::open(&args.dir)?.meta_graph(&["serve"])?;
    let contract = TrainContract::read(&args.dir, &meta_graph)?;
    let mask_spec = mask_spec(args);
    if args.show_mask {
        return print_mask(&Mask::build(&contract, &mask_spec)?);
    }
    let (data, out) = (args.data.as_ref().expect("clap requires it"), args.out.clone().expect("clap requires it"));
    check_paths(&RunPaths {
        input: args.dir.clone(),
        out: out.clone(),
        overwrite: args.overwrite,
        resume: args.resume,
    })?;
    let (train, validation) = load_data(args, &contract, data)?;
    let loader_options = LoaderOptions {
        batch_size: args.batch_size,
        shuffle: !args.no_shuffle,
        seed: args.seed,
        drop_remainder: args.drop_remainder,
        prefetch: 4,
    };
    let train_loader = BatchLoader::new(train, loader_options);
    let val_loader = validation
        .map(|v| BatchLoader::new(v, LoaderOptions { shuffle: false, drop_remainder: false, ..loader_options }));
    let options = FitOptions {
        epochs: args.epochs,
        schedule: schedule(args, contract.learning_rate.default)?,
        mask: mask_spec,
        session: SessionConfig { intra_op_threads: args.intra_op_threads, inter_op_threads: args.inter_op_threads },
        checkpoint_every_steps: args.checkpoint_every_steps,
        keep_checkpoints: args.keep_checkpoints.unwrap_or(2),
        checkpoints_in_output: CheckpointsInOutput { steps: args.keep_checkpoints.is_some(), best: args.keep_best },
        early_stopping: args.early_stopping_patience.map(|patience| EarlyStopping {
            monitor: args.monitor.clone(),
            patience,
            min_delta: args.min_delta,
        }),
    };
    // Kept alive until training ends: the input with the imported weights, beside the output.
    let initialized = initial_weights(args, &out)?;
    let input = initialized.as_ref().map_or_else(|| args.dir.clone(), |dir| dir.path().join("model"));
    let paths = RunPaths { input, out: out.clone(), overwrite: args.overwrite, resume: args.resume };
    let stop = install_interrupt_handler();
    let mut progress = Progress::new(global.quiet || args.json);
    let mut board = args.logdir.as_deref().map(TensorBoard::create).transpose()?;
    let mut callbacks = Callbacks(vec![&mut progress]);
    callbacks.0.extend(board.as_mut().map(|b| b as &mut dyn TrainCallback));
    let outcome = fit(
        &paths,
        &RunData { train: &train_loader, validation: val_loader.as_ref() },
        &options,
        &mut callbacks,
        &stop,
    )?;
    drop(callbacks);
    progress.finish();
    if let Some(Err(error)) = board.map(TensorBoard::finish) {
        eprintln!("warning: the TensorBoard event files are incomplete: {error}");
    }
    report(args, &outcome)
}

/// With --init-weights (and not resuming, where the checkpoint holds the weights), a copy of the
/// input with the HDF5 weights imported, in a temporary folder beside the output.
fn initial_weights(args: &TrainArgs, out: &Path) -> Result<Option<tempfile::TempDir>> {
    let Some(h5) = args.init_weights.as_ref().filter(|_| !args.resume) else {
        return Ok(None);
    };
    let options = ImportOptions { skip_mismatch: args.skip_mismatch, ..ImportOptions::default() };
    let plan = tfload::import_weights::plan(&args.dir, h5, &options)?;
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let dir = tempfile::Builder::new().prefix(".tfload-init-").tempdir_in(parent)?;
    plan.apply(dir.path().join("model"), false)?;
    let mut kept: Vec<&str> = plan.skipped_layers();
    kept.extend(plan.missing_layers().iter().map(String::as_str));
    eprintln!(
        "imported {} weights from {}{}",
        plan.imported(),
        h5.display(),
        if kept.is_empty() { String::new() } else { format!("; left as they were: {}", kept.join(", ")) }
    );
    Ok(Some(dir))
}

fn mask_spec(args: &TrainArgs) -> MaskSpec {
    MaskSpec {
        start: if args.train_all {
            MaskStart::AllTrainable
        } else if args.freeze_all {
            MaskStart::AllFrozen
        } else {
            MaskStart::ModelDefault
        },
        train_last_layers: args.train_last_layers,
        freeze: args.freeze.clone(),
        train: args.train.clone(),
    }
}

/// The schedule the flags ask for, refusing a rate that is not finite and positive.
fn schedule(args: &TrainArgs, default_lr: f32) -> Result<LrSchedule> {
    use tfload::train::contract::check_learning_rate;
    if let Some(lr) = args.lr {
        check_learning_rate("--lr", lr, false)?;
    }
    match args.lr_schedule {
        ScheduleKind::Constant => {}
        ScheduleKind::Step => check_learning_rate("--lr-decay-factor", args.lr_decay_factor, false)?,
        ScheduleKind::Cosine => check_learning_rate("--min-lr", args.min_lr, true)?,
    }
    let decay = match args.lr_schedule {
        ScheduleKind::Constant => Decay::Constant,
        ScheduleKind::Step => Decay::Step { factor: args.lr_decay_factor, every_epochs: args.lr_decay_epochs },
        ScheduleKind::Cosine => Decay::Cosine { min_lr: args.min_lr },
    };
    Ok(LrSchedule { base: args.lr.unwrap_or(default_lr), decay, warmup_steps: args.warmup_steps })
}

type DataPair = (Arc<dyn Dataset>, Option<Arc<dyn Dataset>>);

fn load_data(args: &TrainArgs, contract: &TrainContract, data: &Path) -> Result<DataPair> {
    let train = open_dataset(args, contract, data)?;
    if let Some(fraction) = args.validation_split {
        anyhow::ensure!((0.0..1.0).contains(&fraction), "--validation-split must be in [0, 1), got {fraction}");
        let (train, validation) = split(train, fraction, args.seed);
        return Ok((Arc::new(train), Some(Arc::new(validation))));
    }
    let validation = args.val_data.as_deref().map(|path| open_dataset(args, contract, path)).transpose()?;
    Ok((train, validation))
}

fn open_dataset(args: &TrainArgs, contract: &TrainContract, path: &Path) -> Result<Arc<dyn Dataset>> {
    if args.tfrecord.applies_to(path) {
        let meta_graph = SavedModel::open(&args.dir)?.meta_graph(&["serve"])?;
        let train_step = meta_graph.signature("train_step")?;
        let input =
            train_step.input(contract.input_key()).context("the train_step signature takes the contract's input")?;
        return args.tfrecord.open(path, input, args.json, true);
    }
    if !path.exists() {
        anyhow::bail!(
            "{}: no such file or directory. Give an image folder (one sub-folder per class) or a .npz file with x and y arrays",
            path.display()
        );
    }
    if path.is_dir() {
        let folder = ImageFolderDataset::open(path, image_spec(contract)?)?;
        refuse_empty_classes(&folder)?;
        return Ok(Arc::new(folder));
    }
    let dataset = ArrayDataset::from_npz(path, args.feature_key.as_deref(), args.label_key.as_deref())
        .with_context(|| format!("reading training data from {}", path.display()))?;
    Ok(Arc::new(dataset))
}

/// How images must be read to feed the model: its input's height, width and channels.
fn image_spec(contract: &TrainContract) -> Result<ImageSpec> {
    let shape = tfload::Shape::Known(contract.inputs[0].shape.clone());
    ImageSpec::for_input_shape(&shape, None).map_err(|problem| {
        let why = match problem {
            UnfitImageInput::Channels => "whose channel count is not 1 (grayscale), 3 (RGB) or 4 (RGBA)",
            UnfitImageInput::NotImageBatch | UnfitImageInput::OpenSize => "not a batch of images of one size",
        };
        anyhow::anyhow!("the model's input `{}` is {shape}, {why}; train it from a .npz instead", contract.input_key())
    })
}

/// A class folder without images would silently shift nothing but train a class never seen.
fn refuse_empty_classes(folder: &ImageFolderDataset) -> Result<()> {
    let names = folder.class_names().unwrap_or_default();
    let empty: Vec<&str> = names
        .iter()
        .enumerate()
        .filter(|(label, _)| !folder.labels().contains(&(*label as i64)))
        .map(|(_, name)| name.as_str())
        .collect();
    if !empty.is_empty() {
        anyhow::bail!(
            "{}: the class folder(s) {} hold no images; add images or remove the folder",
            folder.describe(),
            empty.join(", ")
        );
    }
    Ok(())
}

fn print_mask(mask: &Mask) -> Result<()> {
    let mut rows = table::new(&["#", "variable", "layer", "shape", "trainable"]);
    for entry in mask.entries() {
        let shape: Vec<String> = entry.shape.iter().map(u64::to_string).collect();
        rows.add_row(vec![
            entry.index.to_string(),
            entry.name.clone(),
            entry.layer.clone(),
            format!("[{}]", shape.join(", ")),
            if entry.trainable { "yes" } else { "no" }.to_string(),
        ]);
    }
    let mut out = std::io::stdout().lock();
    table::print_indented(&mut out, &rows, 0)?;
    writeln!(out, "\n{} of {} variables trainable", mask.trainable_count(), mask.entries().len())?;
    Ok(())
}

/// The first Ctrl-C asks the run to stop after the current step and save; a second one exits.
fn install_interrupt_handler() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting without saving");
            std::process::exit(130);
        }
        eprintln!("\nstopping after the current step; saving a checkpoint (Ctrl-C again to exit at once)");
    });
    stop
}

fn report(args: &TrainArgs, outcome: &FitOutcome) -> Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(outcome)?);
    }
    match outcome {
        FitOutcome::Completed { out, epochs, validation, weights_from_epoch } => {
            if !args.json {
                let validation =
                    validation.as_ref().map(|v| format!(", validation {}", format_metrics(v))).unwrap_or_default();
                println!("trained {epochs} epochs; weights of epoch {weights_from_epoch}{validation}");
                println!("SavedModel written to {}", out.display());
            }
            Ok(())
        }
        FitOutcome::AlreadyComplete { out } => {
            if !args.json {
                println!("the run had already completed; SavedModel in {}", out.display());
            }
            Ok(())
        }
        FitOutcome::Interrupted { checkpoint, work_dir, global_step } => {
            eprintln!(
                "stopped after step {global_step}; checkpoint saved in {}.\nResume with the same command and --resume (the run continues in {}).",
                checkpoint.display(),
                work_dir.display()
            );
            std::process::exit(130);
        }
    }
}

fn format_metrics(metrics: &Metrics) -> String {
    metrics.iter().map(|(k, v)| format!("{k} {v:.4}")).collect::<Vec<_>>().join(", ")
}

/// Progress on stderr: a bar per epoch on a terminal, a line per epoch otherwise, nothing when quiet.
struct Progress {
    quiet: bool,
    bar: Option<ProgressBar>,
    steps_per_epoch: u64,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        Progress { quiet, bar: None, steps_per_epoch: 0 }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl TrainCallback for Progress {
    fn on_begin(&mut self, plan: &RunPlan) {
        self.steps_per_epoch = plan.steps_per_epoch;
        if !self.quiet {
            eprintln!(
                "training {} of {} variables, epochs {}..{}, {} steps per epoch (working in {})",
                plan.trainable,
                plan.mask_size,
                plan.first_epoch,
                plan.epochs,
                plan.steps_per_epoch,
                plan.work_dir.display()
            );
        }
    }

    fn on_step(&mut self, report: &StepReport) -> Control {
        if self.quiet || !std::io::stderr().is_terminal() {
            return Control::Continue;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(self.steps_per_epoch);
            bar.set_style(
                ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        bar.set_prefix(report.epoch.to_string());
        bar.set_position(report.step_in_epoch);
        bar.set_message(format!(
            "{} | {:.0} samples/s | lr {:.2e}",
            format_metrics(&report.running),
            report.samples_per_sec,
            report.lr
        ));
        Control::Continue
    }

    fn on_epoch(&mut self, report: &EpochReport) -> Control {
        self.finish();
        if !self.quiet {
            let validation =
                report.validation.as_ref().map(|v| format!(" | validation {}", format_metrics(v))).unwrap_or_default();
            let best = if report.best { " (best)" } else { "" };
            eprintln!(
                "epoch {}: {}{validation} | {:.0} samples/s{best}",
                report.epoch,
                format_metrics(&report.train),
                report.samples_per_sec
            );
        }
        Control::Continue
    }
}
