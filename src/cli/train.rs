//! `tfload train DIR --data DATA --out OUT`: fine-tunes a trainable SavedModel, with masks,
//! schedules, validation, checkpoints, resume, and a progress bar (plain lines when stderr is not
//! a terminal).

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tfload::data::{
    class_weighted, split, Augmentation, BatchLoader, ClassWeights, DataSource, Dataset, LabelTarget, LoaderOptions,
    Purpose,
};
use tfload::import_weights::ImportPlan;
use tfload::train::distributed::{ClusterSpec, ClusterWorker};
use tfload::train::feature_cache::FeatureCacheUse;
use tfload::train::tensorboard::TensorBoard;
use tfload::train::{
    prepare, Callbacks, CheckpointPolicy, CheckpointsInOutput, Control, Decay, EarlyStopping, EpochReport,
    FeatureCacheOptions, FitOptions, FitOutcome, InitialWeights, LrSchedule, Mask, MaskSpec, MaskStart, Metrics,
    ReduceOnPlateau, RunData, RunPaths, RunPlan, StepKind, StepReport, TrainCallback, TrainableModel,
};
use tfload::SessionConfig;

use super::data_args::{report_data_reading, LabelModeArg, TfRecordArgs};
use super::output::format_rate;
use super::variables::human_bytes;
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
    /// Examples per batch. In a multi-worker run, the GLOBAL batch: split into equal shards, one
    /// per task (a multiple of the number of tasks), so that the run equals one process on it.
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
    /// Cosine schedule: the rate at the last step; plateau: the lowest rate.
    #[arg(long, default_value_t = 0.0)]
    pub min_lr: f32,
    /// Plateau schedule (Keras's ReduceLROnPlateau, watching --monitor): multiply the rate by this...
    #[arg(long, default_value_t = 0.1)]
    pub plateau_factor: f64,
    /// ...after this many epochs without an improvement of more than --plateau-min-delta...
    #[arg(long, default_value_t = 10)]
    pub plateau_patience: u64,
    /// ...(the smallest change that counts)...
    #[arg(long, default_value_t = 1e-4)]
    pub plateau_min_delta: f64,
    /// ...then wait this many epochs before counting again.
    #[arg(long, default_value_t = 0)]
    pub plateau_cooldown: u64,
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
    /// Run the exported train_step as it is, the mask fed at every step. By default the step is
    /// specialized on the mask, so that frozen layers cost no weight gradient and no update (same
    /// losses and weights, bit for bit), and where the export has a frozen-base step that the mask
    /// allows (train_step_from_N), that step runs: no backward pass below its cut.
    #[arg(long)]
    pub no_specialize_step: bool,
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
    /// Write every variable into each checkpoint. By default a checkpoint writes only the values
    /// that differ from the model the run started from and hard-links that model's data shard
    /// (a frozen base costs nothing to checkpoint); either way each checkpoint is a complete
    /// SavedModel, and the trained model has one data shard.
    #[arg(long)]
    pub full_checkpoints: bool,
    /// Stop when the monitored validation value has not improved for N epochs; the output gets the best epoch's weights.
    #[arg(long, value_name = "N")]
    pub early_stopping_patience: Option<u64>,
    /// The value early stopping and the plateau schedule watch: val_loss or val_<metric> (or loss, <metric> for the plateau schedule).
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
    /// Labels as Keras's image_dataset_from_directory label_mode (default: what the model's loss takes; int labels become one-hot rows for categorical_crossentropy).
    #[arg(long, value_enum)]
    pub label_mode: Option<LabelModeArg>,
    /// Weight training examples by class as Keras fit's class_weight: `balanced` (n_samples / (n_classes * count)) or CLASS:WEIGHT pairs, by index or class name (0:1.0,1:2.5). Needs a model exported with --sample-weights.
    #[arg(long, value_name = "balanced|CLASS:W,...", conflicts_with = "sample_weight")]
    pub class_weight: Option<String>,
    /// Weight training examples by the .npz array KEY (default sample_weight), as Keras fit's sample_weight. Needs a model exported with --sample-weights.
    #[arg(long, value_name = "KEY", num_args = 0..=1, default_missing_value = "sample_weight")]
    pub sample_weight: Option<String>,
    /// Load these Keras HDF5 weights (Keras 3 `.weights.h5` or legacy `.h5`) into the model
    /// before training, matched by layer name as `tfload import-weights` does.
    #[arg(long, value_name = "FILE")]
    pub init_weights: Option<PathBuf>,
    /// With --init-weights: leave layers whose shapes differ (a replaced head), or that the file lacks, as the model has them.
    #[arg(long, requires = "init_weights")]
    pub skip_mismatch: bool,
    /// Threads inside one op (0: one for a small model's step, whose ops are too short to split,
    /// else TensorFlow decides; give a count to set it).
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
    /// Augment training images as Keras's preprocessing layers do, each example from its own
    /// stream of --seed, epoch and index (resumed runs see the same images). Off by default.
    /// Example: --augment flip=horizontal,rotation=0.1,zoom=0.2,brightness=0.2,contrast=0.2.
    /// Keys: flip=horizontal|vertical|horizontal_and_vertical; rotation=F (RandomRotation: a
    /// fraction of a full turn, or LO:HI); zoom=F, zoom_width=F (RandomZoom; positive zooms out);
    /// crop=H:W (RandomCrop, resized back to the input size); brightness=F (RandomBrightness);
    /// contrast=F (RandomContrast, 0..1); value_range=LO:HI [0:255]; fill=reflect|nearest|constant
    /// [reflect], fill_value=V. Applied in the order flip, rotation, zoom, crop, brightness, contrast.
    #[arg(long, value_name = "SPEC")]
    pub augment: Option<String>,
    /// Multi-worker training: every task's HOST:PORT, comma-separated (all `worker` tasks; task 0
    /// is the chief, which writes OUT). Without it, TF_CONFIG (TensorFlow's format) is read when set.
    #[arg(long, value_name = "HOST:PORT,...", requires = "task_index", conflicts_with = "local_workers")]
    pub cluster: Option<String>,
    /// With --cluster: this task's index in it.
    #[arg(long, value_name = "I", requires = "cluster")]
    pub task_index: Option<usize>,
    /// Run this command as N tasks of a multi-worker run on this machine (loopback ports) and wait
    /// for all of them; their messages are prefixed [task I].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=64))]
    pub local_workers: Option<u64>,
    /// Multi-worker runs: seconds the tasks may take to find each other (and to agree at the end)
    /// before each one gives up with an error.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub startup_timeout: u64,
    /// Write TensorBoard event files to DIR/train and DIR/validation (loss, metrics, learning rate, samples/s per step and epoch, as Keras's TensorBoard callback).
    #[arg(long, value_name = "DIR")]
    pub logdir: Option<PathBuf>,
    /// Always train through the full train_step, even when the base below the exported cut is
    /// frozen (by default its features are computed once and the head trains on them).
    #[arg(long)]
    pub no_feature_cache: bool,
    /// Memory for the feature cache (e.g. 2GiB, 512MiB); features beyond go to a file in OUT.partial.
    #[arg(long, value_name = "SIZE", default_value = "2GiB", value_parser = tfload::train::feature_cache::parse_size)]
    pub feature_cache_memory: u64,
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
    /// Reduced when --monitor stops improving (Keras's ReduceLROnPlateau; --plateau-* flags).
    Plateau,
}

pub fn run(args: &TrainArgs, global: &GlobalArgs) -> Result<()> {
    if let Some(n) = args.local_workers {
        return run_local_workers(n as usize);
    }
    let model = TrainableModel::open(&args.dir)?;
    let mask_spec = mask_spec(args);
    if args.show_mask {
        return print_mask(&model.mask(&mask_spec)?);
    }
    let (data, out) = (args.data.as_ref().expect("clap requires it"), args.out.clone().expect("clap requires it"));
    let augmentation = args.augment.as_deref().map(str::parse::<Augmentation>).transpose()?;
    let mut options = fit_options(args, &model, mask_spec)?;
    options.cluster = start_cluster(args, global.quiet)?;
    let writes = options.cluster.as_ref().is_none_or(|c| c.is_chief());
    let paths = RunPaths { out, overwrite: args.overwrite, resume: args.resume };
    // Output paths and initial weights are checked before any data is scanned.
    let run = prepare(&model, &paths, &options)?;
    if let Some(plan) = run.initial_weights() {
        report_initial_weights(plan, options.initial_weights.as_ref().map(|w| w.file.as_path()));
    }
    let (train, validation) = load_data(args, &model, data)?;
    let loader_options = LoaderOptions {
        batch_size: args.batch_size,
        shuffle: !args.no_shuffle,
        seed: args.seed,
        drop_remainder: args.drop_remainder,
        prefetch: 4,
    };
    let mut train_loader = BatchLoader::new(train, loader_options);
    if let Some(augmentation) = augmentation {
        train_loader = train_loader.with_augmentation(augmentation)?;
    }
    if let Some(cluster) = &options.cluster {
        train_loader = train_loader.sharded(cluster.rank(), cluster.size())?;
    }
    let val_loader = validation
        .map(|v| BatchLoader::new(v, LoaderOptions { shuffle: false, drop_remainder: false, ..loader_options }));
    let stop = install_interrupt_handler();
    let mut progress = Progress::new(global.quiet || args.json);
    let mut board = args.logdir.as_deref().filter(|_| writes).map(TensorBoard::create).transpose()?;
    let mut callbacks = Callbacks(vec![&mut progress]);
    callbacks.0.extend(board.as_mut().map(|b| b as &mut dyn TrainCallback));
    let outcome = run.fit(&RunData { train: &train_loader, validation: val_loader.as_ref() }, &mut callbacks, &stop)?;
    drop(callbacks);
    progress.finish();
    if let Some(Err(error)) = board.map(TensorBoard::finish) {
        eprintln!("warning: the TensorBoard event files are incomplete: {error}");
    }
    report(args, &outcome)
}

/// The run's options from the flags; rates are checked here, before anything is read.
fn fit_options(args: &TrainArgs, model: &TrainableModel, mask: MaskSpec) -> Result<FitOptions> {
    Ok(FitOptions {
        epochs: args.epochs,
        schedule: Some(schedule(args, model.default_learning_rate())?),
        mask,
        session: SessionConfig { intra_op_threads: args.intra_op_threads, inter_op_threads: args.inter_op_threads },
        step: if args.no_specialize_step { StepKind::Plain } else { StepKind::Specialized },
        checkpoints: CheckpointPolicy {
            every_steps: args.checkpoint_every_steps,
            keep: args.keep_checkpoints.unwrap_or(2),
            in_output: CheckpointsInOutput { steps: args.keep_checkpoints.is_some(), best: args.keep_best },
            link_unchanged: !args.full_checkpoints,
        },
        early_stopping: args.early_stopping_patience.map(|patience| EarlyStopping {
            monitor: args.monitor.clone(),
            patience,
            min_delta: args.min_delta,
        }),
        initial_weights: args
            .init_weights
            .clone()
            .map(|file| InitialWeights { file, skip_mismatch: args.skip_mismatch }),
        reduce_on_plateau: (args.lr_schedule == ScheduleKind::Plateau).then(|| ReduceOnPlateau {
            monitor: args.monitor.clone(),
            factor: args.plateau_factor,
            patience: args.plateau_patience,
            min_delta: args.plateau_min_delta,
            cooldown: args.plateau_cooldown,
            min_lr: f64::from(args.min_lr),
        }),
        cluster: None,
        feature_cache: FeatureCacheOptions {
            enabled: !args.no_feature_cache,
            memory_budget: args.feature_cache_memory,
            ..FeatureCacheOptions::default()
        },
    })
}

/// This task's TensorFlow server, when the run is one task of a cluster (`--cluster` or
/// `TF_CONFIG`).
fn start_cluster(args: &TrainArgs, quiet: bool) -> Result<Option<Arc<ClusterWorker>>> {
    let spec = match (&args.cluster, args.task_index) {
        (Some(list), Some(index)) => ClusterSpec::from_addresses(list, index)?,
        _ => match std::env::var("TF_CONFIG") {
            Ok(text) if !text.trim().is_empty() => ClusterSpec::from_tf_config(&text)?,
            _ => return Ok(None),
        },
    };
    if !args.json && !quiet {
        eprintln!(
            "task {} (rank {} of {}{}): starting its TensorFlow server",
            spec.me(),
            spec.rank(),
            spec.size(),
            if spec.is_chief() { ", the chief: it writes the outputs" } else { "" }
        );
    }
    Ok(Some(Arc::new(ClusterWorker::start(spec, Duration::from_secs(args.startup_timeout))?)))
}

/// `--local-workers N`: this same command as N loopback tasks (without the flag).
fn run_local_workers(n: usize) -> Result<()> {
    let mut args: Vec<OsString> = Vec::new();
    let mut given = std::env::args_os().skip(1);
    while let Some(arg) = given.next() {
        if arg == "--local-workers" {
            given.next();
        } else if !arg.to_string_lossy().starts_with("--local-workers=") {
            args.push(arg);
        }
    }
    // The `tfload` launcher beside this program, which silences TensorFlow's start-up log.
    let exe = std::env::current_exe()?;
    let launcher = exe.with_file_name("tfload");
    let program = if launcher.is_file() && launcher != exe { launcher } else { exe };
    tfload::train::distributed::local::run_local_workers(&program, &args, n)?;
    Ok(())
}

/// Says which weights --init-weights imports and which layers keep the model's values.
fn report_initial_weights(plan: &ImportPlan, file: Option<&Path>) {
    let mut kept: Vec<&str> = plan.skipped_layers();
    kept.extend(plan.missing_layers().iter().map(String::as_str));
    eprintln!(
        "imported {} weights from {}{}",
        plan.imported(),
        file.unwrap_or(plan.weights().path()).display(),
        if kept.is_empty() { String::new() } else { format!("; left as they were: {}", kept.join(", ")) }
    );
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
        ScheduleKind::Cosine | ScheduleKind::Plateau => check_learning_rate("--min-lr", args.min_lr, true)?,
    }
    let decay = match args.lr_schedule {
        ScheduleKind::Constant | ScheduleKind::Plateau => Decay::Constant,
        ScheduleKind::Step => Decay::Step { factor: args.lr_decay_factor, every_epochs: args.lr_decay_epochs },
        ScheduleKind::Cosine => Decay::Cosine { min_lr: args.min_lr },
    };
    Ok(LrSchedule { base: args.lr.unwrap_or(default_lr), decay, warmup_steps: args.warmup_steps })
}

type DataPair = (Arc<dyn Dataset>, Option<Arc<dyn Dataset>>);

fn load_data(args: &TrainArgs, model: &TrainableModel, data: &Path) -> Result<DataPair> {
    let train = open_dataset(args, model, data, args.sample_weight.as_deref())?;
    let (train, validation): DataPair = match args.validation_split {
        Some(fraction) => {
            anyhow::ensure!((0.0..1.0).contains(&fraction), "--validation-split must be in [0, 1), got {fraction}");
            let (train, validation) = split(train, fraction, args.seed);
            (Arc::new(train), Some(Arc::new(validation)))
        }
        None => (train, args.val_data.as_deref().map(|path| open_dataset(args, model, path, None)).transpose()?),
    };
    Ok((weigh_classes(args, model, train)?, validation))
}

/// The training data weighted by `--class-weight`, where given (validation stays unweighted, as
/// in Keras).
fn weigh_classes(args: &TrainArgs, model: &TrainableModel, train: Arc<dyn Dataset>) -> Result<Arc<dyn Dataset>> {
    let Some(text) = &args.class_weight else {
        return Ok(train);
    };
    let contract = model.contract();
    let classes = contract.num_classes.map(|n| n as usize).or(train.label_classes()).unwrap_or(0);
    let weights = ClassWeights::parse(text)?.resolve(train.as_ref(), classes, contract.class_names.as_deref())?;
    Ok(Arc::new(class_weighted(train, weights)))
}

fn open_dataset(
    args: &TrainArgs,
    model: &TrainableModel,
    path: &Path,
    sample_weight: Option<&str>,
) -> Result<Arc<dyn Dataset>> {
    let mut options = args.tfrecord.source_options(args.feature_key.as_deref(), args.label_key.as_deref());
    options.sample_weight = sample_weight.map(str::to_string);
    options.class_names = model.contract().class_names.clone();
    options.labels = LabelTarget::resolve(model.contract().label_target(), args.label_mode.map(LabelModeArg::mode))?;
    let source = DataSource::detect(path, &options)?;
    let dataset = source.open(&model.input_spec()?, || model.image_spec(), Purpose::Training)?;
    report_data_reading(dataset.as_ref(), args.json);
    Ok(dataset)
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
    if let Some(layers) = mask.keras_layers() {
        let mut listed = table::new(&["#", "layer (model.layers)", "variables", "trains"]);
        for (i, (name, variables, trains)) in layers.iter().enumerate() {
            let trains = if *variables == 0 {
                "-"
            } else if *trains {
                "yes"
            } else {
                "no"
            };
            listed.add_row(vec![i.to_string(), name.to_string(), variables.to_string(), trains.to_string()]);
        }
        writeln!(out, "\nKeras layers, in model.layers order (--train-last-layers N trains the last N):")?;
        table::print_indented(&mut out, &listed, 0)?;
    }
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
        FitOutcome::Completed { out, epochs, validation, weights_from_epoch, output_bytes, model_bytes } => {
            if !args.json {
                let validation =
                    validation.as_ref().map(|v| format!(", validation {}", format_metrics(v))).unwrap_or_default();
                println!("trained {epochs} epochs; weights of epoch {weights_from_epoch}{validation}");
                println!("SavedModel written to {}{}", out.display(), sizes(*output_bytes, *model_bytes));
            }
            Ok(())
        }
        FitOutcome::WorkerFinished { rank, global_step } => {
            eprintln!("task of rank {rank}: done after step {global_step}; the chief writes the model");
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

/// ` (output folder: 1.2 MiB; the model's own files: 1.1 MiB)`, where both are known.
fn sizes(output_bytes: Option<u64>, model_bytes: Option<u64>) -> String {
    match (output_bytes, model_bytes) {
        (Some(output), Some(model)) => {
            format!(" (output folder: {}; the model's own files: {})", human_bytes(output), human_bytes(model))
        }
        _ => String::new(),
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

/// `feature cache: on (...)` / `feature cache: off (why)`.
fn feature_cache_line(cache: &FeatureCacheUse) -> String {
    match cache {
        FeatureCacheUse::On { layer, examples, bytes, spilled, seconds } => format!(
            "feature cache: on (base frozen below `{layer}`: features of {examples} examples computed once in {seconds:.1} s, {} {})",
            human_bytes(*bytes),
            if *spilled { "partly in a file under the working directory" } else { "in memory" }
        ),
        FeatureCacheUse::Off { reason } => format!("feature cache: off ({reason})"),
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
            eprintln!("{}", feature_cache_line(&plan.feature_cache));
            if let Some(step) = &plan.frozen_base_step {
                eprintln!(
                    "step: `{}` (every variable below layer `{}` is frozen: no backward pass below it)",
                    step.signature, step.layer
                );
            }
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
            "{} | {} samples/s | lr {:.2e}",
            format_metrics(&report.running),
            format_rate(report.samples_per_sec),
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
                "epoch {}: {}{validation} | {} samples/s{best}",
                report.epoch,
                format_metrics(&report.train),
                format_rate(report.samples_per_sec)
            );
        }
        Control::Continue
    }
}
