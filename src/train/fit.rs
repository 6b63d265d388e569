//! The training run: epochs of `train_step` over a batch loader, validation, the metrics log,
//! checkpoints with exact resume, early stopping, a stop flag (Ctrl-C), and the trained SavedModel
//! written atomically at `--out` when the run completes.
//!
//! Until it completes, a run works in `OUT.partial/`: a copy of the input model taken once at the
//! start (`input/`: the input is never read again, so changing or removing it during the run
//! cannot change the output), checkpoints (each a complete SavedModel plus `state.json`),
//! `metrics.jsonl`, and a draft of the data shard it will publish, flushed while it trains
//! (`output-draft/`, see [`output_draft`]). On completion the trained SavedModel is assembled in
//! that folder, checked, and the folder is renamed to `OUT`. An interrupted or failed run leaves
//! `OUT.partial/` with its last good checkpoint, and `resume` continues from it. One run at a time
//! may use an output: a lock beside it (`run_lock`) refuses a second one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::data::BatchLoader;
use crate::error::{Error, Result};
use crate::formats::linked_bundle::{self, BaseBundle};
use crate::formats::output_draft;
use crate::import_weights::{ImportOptions, ImportPlan};
use crate::output_dir::{
    build_then_place, check_not_input, copy_model_files, copy_saved_model, copy_tree, io_error as io, move_into_place,
    remove_dir_if_present, remove_leftovers,
};
use crate::session::loaded_model::SessionConfig;
use crate::train::callbacks::{Control, EpochReport, RunPlan, StepReport, TrainCallback};
use crate::train::distributed::{ClusterWorker, TRAIN_STEP_ALLREDUCE};
use crate::train::feature_cache::{self, FeatureCacheOptions, FeatureCacheUse};
use crate::train::mask::MaskSpec;
use crate::train::plateau::{PlateauState, ReduceOnPlateau};
use crate::train::run_lock::RunLock;
use crate::train::savedmodel_writer::{write_checkpoint_files, write_model_files};
use crate::train::schedule::LrSchedule;
use crate::train::state::{
    partial_dir, write_state, BestRecord, Checkpoints, DataOrder, LogLine, MetricsLog, TrainState,
};
use crate::train::step_threads;
use crate::train::trainable_model::TrainableModel;
use crate::train::trainer::{Metrics, StepKind, Trainer, WeightedMean};

/// Where a run writes (it reads the [`TrainableModel`] given to [`fit`], never modifying it).
#[derive(Debug, Clone, Default)]
pub struct RunPaths {
    /// Where the trained SavedModel goes.
    pub out: PathBuf,
    /// Replace an existing `out` (only once the new one is complete) and discard an unfinished run.
    pub overwrite: bool,
    /// Continue the unfinished run in `OUT.partial/`.
    pub resume: bool,
}

/// Early stopping on a validation metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EarlyStopping {
    /// The monitored value: `val_loss`, `val_accuracy`, ... (`val_` + an `eval_step` output).
    pub monitor: String,
    /// Epochs without improvement before stopping.
    pub patience: u64,
    /// Smallest change that counts as an improvement.
    pub min_delta: f64,
}

impl EarlyStopping {
    fn maximize(&self) -> bool {
        !self.monitor.ends_with("loss")
    }

    fn improves(&self, value: f64, best: Option<&BestRecord>) -> bool {
        match best {
            None => true,
            Some(best) if self.maximize() => value > best.value + self.min_delta,
            Some(best) => value < best.value - self.min_delta,
        }
    }
}

/// How long and how a run trains. `FitOptions::default()` trains 10 epochs at the model's
/// default learning rate with its default mask, as `tfload train` does without flags.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Total epochs (a resumed run counts the ones already done).
    pub epochs: u64,
    /// Learning rate per step; `None`: the model's default rate, constant.
    pub schedule: Option<LrSchedule>,
    /// Mask rules.
    pub mask: MaskSpec,
    /// Session settings. Where they leave the intra-op threads to TensorFlow (0), a small
    /// model's step runs on one ([`step_threads::for_step`]); set a count to override that.
    pub session: SessionConfig,
    /// When checkpoints are taken and which are kept.
    pub checkpoints: CheckpointPolicy,
    /// Early stopping, which also makes the best epoch's weights the output.
    pub early_stopping: Option<EarlyStopping>,
    /// Keras HDF5 weights loaded into the model before the first step of a fresh run (a resumed
    /// run takes its weights from its checkpoint).
    pub initial_weights: Option<InitialWeights>,
    /// Reduce the rate when a monitored value stops improving (Keras's `ReduceLROnPlateau`);
    /// once it has reduced the rate, the reduced rate replaces the schedule's.
    pub reduce_on_plateau: Option<ReduceOnPlateau>,
    /// This task of a multi-worker run (its server started): the steps all-reduce across the
    /// cluster, and only the chief writes (see [`crate::train::distributed`]).
    pub cluster: Option<Arc<ClusterWorker>>,
    /// The `train_step` the run executes: specialized on the run's mask (the default), or the
    /// exported step as it is.
    pub step: StepKind,
    /// The frozen-base feature cache (on by default where the model and mask allow it).
    pub feature_cache: FeatureCacheOptions,
}

impl Default for FitOptions {
    fn default() -> FitOptions {
        FitOptions {
            epochs: 10,
            schedule: None,
            mask: MaskSpec::default(),
            session: SessionConfig::default(),
            checkpoints: CheckpointPolicy::default(),
            early_stopping: None,
            initial_weights: None,
            reduce_on_plateau: None,
            cluster: None,
            step: StepKind::default(),
            feature_cache: FeatureCacheOptions::default(),
        }
    }
}

/// When a run checkpoints and which checkpoints it keeps. A checkpoint is always taken at the end
/// of each epoch (and when the run is stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CheckpointPolicy {
    /// Also checkpoint every this many steps.
    pub every_steps: Option<u64>,
    /// Step checkpoints kept (the newest) while the run goes on.
    pub keep: usize,
    /// Which checkpoints stay in `OUT/checkpoints` once the run completes; by default none, and
    /// the output holds the model and `metrics.jsonl` only.
    pub in_output: CheckpointsInOutput,
    /// Checkpoints write only the values that differ from the checkpoint the run started from,
    /// whose data shards they hard-link (`formats::linked_bundle`); each is still a complete
    /// SavedModel. Where the session cannot say what its saver writes (a model that keeps its
    /// traced saver), checkpoints write everything whatever this says.
    pub link_unchanged: bool,
}

impl Default for CheckpointPolicy {
    fn default() -> CheckpointPolicy {
        CheckpointPolicy { every_steps: None, keep: 2, in_output: CheckpointsInOutput::default(), link_unchanged: true }
    }
}

/// Keras HDF5 weights to start from, matched by layer name as `tfload import-weights` does.
#[derive(Debug, Clone, PartialEq)]
pub struct InitialWeights {
    /// The Keras 3 `.weights.h5` or legacy `.h5` file.
    pub file: PathBuf,
    /// Leave layers whose shapes differ (a replaced head), or that the file lacks, as they are.
    pub skip_mismatch: bool,
}

/// Which checkpoints a completed run leaves in its output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CheckpointsInOutput {
    /// The kept step checkpoints (`checkpoints/step-N`).
    pub steps: bool,
    /// The best epoch's checkpoint under early stopping (`checkpoints/best`).
    pub best: bool,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum FitOutcome {
    /// All epochs ran (or early stopping or a callback ended them) and `out` holds the model.
    Completed {
        /// The trained SavedModel.
        out: PathBuf,
        /// Epochs run in total.
        epochs: u64,
        /// Final validation metrics of the output weights, where there is validation data.
        validation: Option<Metrics>,
        /// The epoch whose weights were written (the best one under early stopping).
        weights_from_epoch: u64,
        /// Bytes of everything in `out` (the model, `metrics.jsonl`, kept checkpoints), where
        /// the folder could be read.
        output_bytes: Option<u64>,
        /// Bytes of the model's own files in `out` (graph, variables, assets).
        model_bytes: Option<u64>,
    },
    /// `resume` found the run already complete: its output is in place and nothing was left to do
    /// (a run killed after publishing its output, before it could exit).
    AlreadyComplete {
        /// The trained SavedModel.
        out: PathBuf,
    },
    /// A task of a multi-worker run other than the chief finished its steps (the chief writes the
    /// output).
    WorkerFinished {
        /// This task's rank.
        rank: usize,
        /// Steps done.
        global_step: u64,
    },
    /// The stop flag was raised; a checkpoint was saved to resume from.
    Interrupted {
        /// The checkpoint.
        checkpoint: PathBuf,
        /// The working directory to resume.
        work_dir: PathBuf,
        /// Steps done.
        global_step: u64,
    },
}

/// The data of a run.
pub struct RunData<'a> {
    /// Training batches (shuffled as configured).
    pub train: &'a BatchLoader,
    /// Validation batches (not shuffled), if any.
    pub validation: Option<&'a BatchLoader>,
}

/// Runs training of `model`. `stop` is polled after every step (set it from a Ctrl-C handler).
/// The same as [`prepare`] then [`PreparedRun::fit`].
pub fn fit(
    model: &TrainableModel,
    paths: &RunPaths,
    data: &RunData<'_>,
    options: &FitOptions,
    callback: &mut dyn TrainCallback,
    stop: &AtomicBool,
) -> Result<FitOutcome> {
    prepare(model, paths, options)?.fit(data, callback, stop)
}

/// A run whose output paths and initial weights have been checked, ready to be given its data.
pub struct PreparedRun<'m> {
    model: &'m TrainableModel,
    paths: RunPaths,
    options: FitOptions,
    initial_weights: Option<ImportPlan>,
}

/// Checks, before any data is read, that a run of `model` with `paths` and `options` can start:
/// the output is free (or `overwrite`), not the input, not locked by a live run, resumable when
/// `resume` is asked for; the initial weights (fresh runs) read and matched to the model.
pub fn prepare<'m>(model: &'m TrainableModel, paths: &RunPaths, options: &FitOptions) -> Result<PreparedRun<'m>> {
    if let Some(cluster) = &options.cluster {
        check_cluster_options(options)?;
        if model.meta_graph().signature(TRAIN_STEP_ALLREDUCE).is_err() {
            return Err(Error::NoAllreduceStep { dir: model.dir().to_path_buf() });
        }
        if !cluster.is_chief() {
            // The chief's output: only the chief checks and locks it.
            return Ok(PreparedRun { model, paths: paths.clone(), options: options.clone(), initial_weights: None });
        }
    }
    check_paths(model.dir(), paths)?;
    if let Some(rule) = &options.reduce_on_plateau {
        rule.check()?;
    }
    let initial_weights = match &options.initial_weights {
        Some(weights) if !paths.resume => {
            let import = ImportOptions { skip_mismatch: weights.skip_mismatch, ..ImportOptions::default() };
            let plan = crate::import_weights::plan_for(model.meta_graph(), &weights.file, &import)?;
            plan.check()?;
            Some(plan)
        }
        _ => None,
    };
    Ok(PreparedRun { model, paths: paths.clone(), options: options.clone(), initial_weights })
}

impl PreparedRun<'_> {
    /// The matched initial weights, for a fresh run given [`FitOptions::initial_weights`].
    pub fn initial_weights(&self) -> Option<&ImportPlan> {
        self.initial_weights.as_ref()
    }

    /// Runs training on `data`; `stop` is polled after every step.
    pub fn fit(self, data: &RunData<'_>, callback: &mut dyn TrainCallback, stop: &AtomicBool) -> Result<FitOutcome> {
        if self.options.cluster.as_ref().is_some_and(|cluster| !cluster.is_chief()) {
            return self.fit_as_worker(data, callback, stop);
        }
        let paths = &self.paths;
        let _lock = RunLock::acquire(&paths.out)?;
        let work = partial_dir(&paths.out);
        remove_leftovers(&paths.out)?;
        remove_leftovers(&work)?;
        if paths.resume && !work.exists() && paths.out.join("saved_model.pb").is_file() {
            remove_checkpoints(&paths.out, self.options.checkpoints.in_output)?;
            return Ok(FitOutcome::AlreadyComplete { out: paths.out.clone() });
        }
        prepare_work_dir(self.model.dir(), paths)?;
        let result = run_in(&work, &self, data, callback, stop);
        let Err(error) = result else {
            return result;
        };
        match Checkpoints::in_dir(&work).complete().pop() {
            // NonFiniteLoss names its checkpoint already.
            Some(kept) if !matches!(error, Error::NonFiniteLoss { .. }) => {
                Err(Error::RunStopped { error: Box::new(error), kept })
            }
            Some(_) => Err(error),
            None => {
                // A run that failed before its first checkpoint leaves nothing behind.
                let _ = std::fs::remove_dir_all(&work);
                Err(error)
            }
        }
    }
}

/// Test-only: where the tasks of a multi-worker run that do not write save their final weights.
pub const WORKER_WEIGHTS_VARIABLE: &str = "TFLOAD_WORKER_WEIGHTS_DIR";

/// Folder of the working directory's copy of the input model.
pub const INPUT_COPY: &str = "input";

/// Copies the input model into the working directory (once, at the start of a fresh run), so
/// that everything the run reads of the model comes from that copy; with initial weights, the
/// copy holds them. Returns the model as read from the copy, which must hold the graph and record
/// that were read from the input.
fn copy_input(model: &TrainableModel, weights: Option<&ImportPlan>, work: &Path) -> Result<TrainableModel> {
    let copy = work.join(INPUT_COPY);
    match weights {
        Some(plan) => plan.apply(&copy, false)?,
        None => build_then_place(&copy, |dir| copy_saved_model(model.dir(), dir))?,
    }
    model.same_files_in(&copy)?.ok_or_else(|| Error::InputChanged { dir: model.dir().to_path_buf() })
}

/// The folder in the working directory that holds the run's checkpoint base.
pub const CHECKPOINT_BASE: &str = "checkpoint-base";

/// The base the run's checkpoints link to: hard links, in `work/checkpoint-base` (made anew),
/// of the variables the trainer's session was restored from. `None` when the session cannot say
/// what its saver writes, or the files cannot be linked (checkpoints then write every variable).
fn link_checkpoint_base(trainer: &Trainer, work: &Path) -> Result<Option<BaseBundle>> {
    let model = trainer.model();
    if !model.has_graph_level_saver() {
        log::debug!("checkpoints write every variable: the session keeps the model's own saver");
        return Ok(None);
    }
    let into = work.join(CHECKPOINT_BASE);
    remove_dir_if_present(&into)?;
    match BaseBundle::link(&model.dir().join("variables"), &into) {
        Ok(base) => Ok(Some(base)),
        Err(error) => {
            log::info!("checkpoints write every variable: cannot link the run's base ({error})");
            Ok(None)
        }
    }
}

/// The draft of the shard the run will publish, made from its checkpoint base (see
/// [`output_draft`]); `None`, the run then writing that shard at the end, when it cannot be made.
fn start_output_draft(base: &BaseBundle, work: &Path) -> Option<PathBuf> {
    match output_draft::start(base.dir(), work) {
        Ok(draft) => draft,
        Err(error) => {
            log::info!("the published model's data shard is written at the end: no draft ({error})");
            None
        }
    }
}

/// The working directory's copy of the model's graph and assets for a resumed run: the one the
/// run started with, or, when a run was killed after removing it, the same files again from the
/// checkpoint (every checkpoint holds them).
fn input_copy_for_resume(work: &Path, checkpoint: &Path) -> Result<PathBuf> {
    let copy = work.join(INPUT_COPY);
    if copy.join("saved_model.pb").is_file() {
        return Ok(copy);
    }
    if !checkpoint.join("saved_model.pb").is_file() {
        return Err(Error::Output {
            path: checkpoint.to_path_buf(),
            problem: "holds no saved_model.pb, so the run cannot be resumed from it (checkpoints that an earlier tfload wrote after a resume lacked it). Start the run again with --overwrite".to_string(),
        });
    }
    build_then_place(&copy, |dir| copy_model_files(checkpoint, dir))?;
    Ok(copy)
}

fn run_in(
    work: &Path,
    run: &PreparedRun<'_>,
    data: &RunData<'_>,
    callback: &mut dyn TrainCallback,
    stop: &AtomicBool,
) -> Result<FitOutcome> {
    let (paths, options) = (&run.paths, &run.options);
    let work = work.to_path_buf();
    let checkpoints = Checkpoints::in_dir(&work);
    let order = data_order(data.train);
    let (model, state, graph_source) = match checkpoints.latest()? {
        Some((checkpoint, state)) if paths.resume => {
            check_same_order(&state.order, &order, &checkpoint)?;
            let graph_source = input_copy_for_resume(&work, &checkpoint)?;
            (run.model.reopen_in(&checkpoint)?, state, graph_source)
        }
        _ => {
            let copy = copy_input(run.model, run.initial_weights.as_ref(), &work)?;
            let state = fresh_state(options, order);
            let graph_source = copy.dir().to_path_buf();
            (copy, state, graph_source)
        }
    };
    let mut run = Run::start(model, graph_source, state, work, options, data)?;
    // The frozen-base feature cache: rebuilt at every start (resume included), never saved.
    let cached = match options.cluster {
        Some(_) => Err("a multi-worker run trains through train_step_allreduce".to_string()),
        None => feature_cache::activate(&run.trainer, data, &cache_options(options, data), &run.work)?,
    };
    run.cache_use = match &cached {
        Ok(cache) => cache.status(),
        Err(reason) => FeatureCacheUse::Off { reason: reason.clone() },
    };
    let data =
        &cached.as_ref().map_or_else(|_| RunData { train: data.train, validation: data.validation }, |c| c.run_data());
    run.log = Some(MetricsLog::open(&run.work, run.state.global_step)?);
    let outcome = run.train(data, callback, stop)?;
    run.agree_on_end()?;
    match outcome {
        RunEnd::Interrupted(checkpoint) => {
            Ok(FitOutcome::Interrupted { checkpoint, work_dir: run.work.clone(), global_step: run.state.global_step })
        }
        RunEnd::Finished => run.finish(paths, data),
    }
}

/// The feature-cache options of a run: the caller's, with augmentation of the training data
/// turning the cache off.
fn cache_options(options: &FitOptions, data: &RunData<'_>) -> FeatureCacheOptions {
    let mut cache = options.feature_cache;
    cache.augmentation_enabled |= data.train.augmentation_enabled();
    cache
}

/// The state of a run that starts from its first step.
fn fresh_state(options: &FitOptions, order: DataOrder) -> TrainState {
    TrainState {
        format: 1,
        epochs_done: 0,
        batches_done: 0,
        global_step: 0,
        mask: options.mask.clone(),
        order,
        best: None,
        epochs_since_best: 0,
        epoch_so_far: WeightedMean::default(),
        plateau: PlateauState::default(),
    }
}

impl PreparedRun<'_> {
    /// A task of a multi-worker run other than the chief: it trains in step with the chief from
    /// the chief's last checkpoint (`resume`, read from the shared `OUT.partial`) or from the
    /// input, and writes nothing; its validation data is not used (the chief validates).
    fn fit_as_worker(
        self,
        data: &RunData<'_>,
        callback: &mut dyn TrainCallback,
        stop: &AtomicBool,
    ) -> Result<FitOutcome> {
        let work = partial_dir(&self.paths.out);
        if self.paths.resume && !work.exists() && self.paths.out.join("saved_model.pb").is_file() {
            // The chief finds the same and returns at once, without the handshake.
            return Ok(FitOutcome::AlreadyComplete { out: self.paths.out.clone() });
        }
        let order = data_order(data.train);
        let latest = if self.paths.resume { Checkpoints::in_dir(&work).latest()? } else { None };
        let (model, state) = match latest {
            Some((checkpoint, state)) => {
                check_same_order(&state.order, &order, &checkpoint)?;
                (self.model.reopen_in(&checkpoint)?, state)
            }
            None => (self.model.clone(), fresh_state(&self.options, order)),
        };
        let graph_source = model.dir().to_path_buf();
        let data = RunData { train: data.train, validation: None };
        let mut run = Run::start(model, graph_source, state, work, &self.options, &data)?;
        let outcome = run.train(&data, callback, stop)?;
        run.agree_on_end()?;
        run.dump_worker_weights()?;
        match outcome {
            RunEnd::Interrupted(checkpoint) => Ok(FitOutcome::Interrupted {
                checkpoint,
                work_dir: run.work.clone(),
                global_step: run.state.global_step,
            }),
            RunEnd::Finished => Ok(FitOutcome::WorkerFinished {
                rank: self.options.cluster.as_ref().map_or(0, |c| c.rank()),
                global_step: run.state.global_step,
            }),
        }
    }
}

/// Refuses, for a multi-worker run, what would make the tasks call the step a different number
/// of times or need files only the chief has.
fn check_cluster_options(options: &FitOptions) -> Result<()> {
    let refuse = |what: &str| {
        Err(Error::InvalidOption(format!(
            "{what} is not available in multi-worker training: only the chief validates, and the other tasks must run exactly as many steps as it does. Train without it"
        )))
    };
    if options.early_stopping.is_some() {
        return refuse("early stopping");
    }
    if options.reduce_on_plateau.as_ref().is_some_and(|rule| rule.monitor.starts_with("val_")) {
        return refuse("a plateau schedule watching a validation value (use --monitor loss)");
    }
    if options.initial_weights.is_some() {
        return Err(Error::InvalidOption(
            "--init-weights is not available in multi-worker training: import the weights first (`tfload import-weights`), then train the result on every task".to_string(),
        ));
    }
    Ok(())
}

enum RunEnd {
    Finished,
    Interrupted(PathBuf),
}

struct Run<'o> {
    trainer: Trainer,
    /// The model as the run read it (from the input copy or its checkpoint).
    model: TrainableModel,
    /// Where every written model's graph and assets come from: the working copy of the input.
    graph_source: PathBuf,
    state: TrainState,
    work: PathBuf,
    checkpoints: Checkpoints,
    options: &'o FitOptions,
    schedule: LrSchedule,
    /// The metrics log; `None` on the tasks of a multi-worker run that are not the chief, which
    /// write nothing.
    log: Option<MetricsLog>,
    /// Whether the run trains on cached features, and why not, for the progress line.
    cache_use: FeatureCacheUse,
    /// The bundle the run's checkpoints link to (hard links of the variables the session was
    /// restored from, in `work/checkpoint-base`); `None` when checkpoints write every variable.
    checkpoint_base: Option<BaseBundle>,
    /// The draft of the data shard the run publishes, flushed while it trains (see
    /// [`output_draft`]); `None` when the run writes that shard at the end.
    output_draft: Option<PathBuf>,
}

/// The run's session settings: the user's, with one intra-op thread for a small model's step
/// when the user left the count to TensorFlow (see [`step_threads`]).
fn session_for_run(model: &TrainableModel, session: SessionConfig, data: &RunData<'_>) -> SessionConfig {
    let batch_size = data.train.options().batch_size;
    let chosen = step_threads::for_step(session, model.contract(), batch_size);
    if chosen != session {
        let work = step_threads::step_work(model.contract(), batch_size);
        log::info!("a small step (work {work} < {}): one intra-op thread", step_threads::SMALL_STEP_WORK);
    }
    chosen
}

impl<'o> Run<'o> {
    /// Loads the model (into this task's cluster session in a multi-worker run, after the tasks
    /// agreed on the run), checks the data against it.
    fn start(
        model: TrainableModel,
        graph_source: PathBuf,
        state: TrainState,
        work: PathBuf,
        options: &'o FitOptions,
        data: &RunData<'_>,
    ) -> Result<Run<'o>> {
        let mask = model.mask(&state.mask)?;
        let schedule = options.schedule.unwrap_or_else(|| LrSchedule::constant(model.default_learning_rate()));
        let session = session_for_run(&model, options.session, data);
        let trainer = match &options.cluster {
            // Under the feature cache the head steps run instead of `train_step`, and the
            // session loads only them and `features`.
            None if feature_cache::fallback_reason(model.contract(), &mask, &cache_options(options, data))
                .is_none() =>
            {
                Trainer::for_feature_cache(&model, mask, session)?
            }
            None => Trainer::from_model_with(&model, mask, session, options.step)?,
            Some(cluster) => {
                let facts = run_facts(&state, mask_fingerprint(&mask.values()), options, &schedule, data);
                let facts: Vec<(&str, f64)> = facts.iter().map(|(k, v)| (*k, *v)).collect();
                cluster.agree(&facts, 1, "the start-up handshake, which every task joins before its first step")?;
                Trainer::on_cluster(&model, mask, session, cluster)?
            }
        };
        check_data(&trainer, data)?;
        let checkpoints = Checkpoints::in_dir(&work);
        let cache_use = FeatureCacheUse::Off { reason: "not decided yet".into() };
        // Only a task that writes checkpoints links (the tasks of a multi-worker run may share
        // the working directory).
        let writes = options.cluster.as_ref().is_none_or(|cluster| cluster.is_chief());
        let checkpoint_base = match options.checkpoints.link_unchanged && writes {
            true => link_checkpoint_base(&trainer, &work)?,
            false => None,
        };
        let output_draft = checkpoint_base.as_ref().and_then(|base| start_output_draft(base, &work));
        Ok(Run {
            trainer,
            model,
            graph_source,
            state,
            work,
            checkpoints,
            options,
            schedule,
            log: None,
            cache_use,
            checkpoint_base,
            output_draft,
        })
    }

    /// In a multi-worker run, checks that every task ran as many steps.
    fn agree_on_end(&self) -> Result<()> {
        match &self.options.cluster {
            Some(cluster) => cluster.agree(&[("steps done", self.state.global_step as f64)], 2, "the end-of-run check"),
            None => Ok(()),
        }
    }

    /// For tests: a task that does not write saves its final weights as a SavedModel in
    /// `$TFLOAD_WORKER_WEIGHTS_DIR/rank-N`, to compare with the chief's.
    fn dump_worker_weights(&self) -> Result<()> {
        let (Some(dir), Some(cluster)) = (std::env::var_os(WORKER_WEIGHTS_VARIABLE), &self.options.cluster) else {
            return Ok(());
        };
        let path = PathBuf::from(dir).join(format!("rank-{}", cluster.rank()));
        std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(io(&path))?;
        build_then_place(&path, |dir| write_model_files(self.trainer.model(), &self.graph_source, dir))
    }

    fn write_log(&mut self, line: &LogLine) -> Result<()> {
        self.log.as_mut().map_or(Ok(()), |log| log.write(line))
    }

    fn flush_log(&mut self) -> Result<()> {
        self.log.as_mut().map_or(Ok(()), MetricsLog::flush)
    }

    fn train(&mut self, data: &RunData<'_>, callback: &mut dyn TrainCallback, stop: &AtomicBool) -> Result<RunEnd> {
        let steps_per_epoch = data.train.batches_per_epoch() as u64;
        let total_steps = steps_per_epoch * self.options.epochs;
        callback.on_begin(&RunPlan {
            first_epoch: self.state.epochs_done + 1,
            epochs: self.options.epochs,
            steps_per_epoch,
            global_step: self.state.global_step,
            trainable: self.trainer.mask().trainable_count(),
            mask_size: self.trainer.mask().entries().len(),
            work_dir: self.work.clone(),
            feature_cache: self.cache_use.clone(),
            frozen_base_step: self.trainer.frozen_base_step().cloned(),
        });
        while self.state.epochs_done < self.options.epochs {
            let epoch = self.state.epochs_done + 1;
            let started = Instant::now();
            let skip = self.state.batches_done;
            let mut running = if skip > 0 { self.state.epoch_so_far.clone() } else { WeightedMean::default() };
            let resumed_examples = running.count();
            let mut lr = 0.0;
            let preparer = self.trainer.preparer();
            for (i, batch) in data.train.epoch_map(epoch - 1, skip, move |b| preparer.prepare(b)).enumerate() {
                let batch = batch?;
                lr = self
                    .state
                    .plateau
                    .lr
                    .unwrap_or_else(|| self.schedule.at(self.state.global_step, steps_per_epoch, total_steps));
                let metrics = self.trainer.train_prepared(&batch, lr).map_err(|error| self.explain(error))?;
                self.check_finite(&metrics, epoch)?;
                running.add(&metrics, batch.len);
                self.state.global_step += 1;
                self.state.batches_done = skip + i + 1;
                let report = StepReport {
                    epoch,
                    step_in_epoch: self.state.batches_done as u64,
                    global_step: self.state.global_step,
                    batch: metrics.clone(),
                    running: running.mean(),
                    lr,
                    samples_per_sec: (running.count() - resumed_examples) as f64
                        / started.elapsed().as_secs_f64().max(1e-9),
                };
                let step = self.state.global_step;
                self.write_log(&LogLine::Step { epoch, step, lr, metrics })?;
                crate::fault::point("step-done");
                let control = callback.on_step(&report);
                if stop.load(Ordering::SeqCst) {
                    self.state.epoch_so_far = running.clone();
                    return Ok(RunEnd::Interrupted(self.checkpoint()?));
                }
                if self.options.checkpoints.every_steps.is_some_and(|n| n > 0 && step.is_multiple_of(n)) {
                    self.state.epoch_so_far = running.clone();
                    self.checkpoint()?;
                }
                if control == Control::Stop {
                    return Ok(RunEnd::Finished);
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            let samples_per_sec = (running.count() - resumed_examples) as f64 / seconds.max(1e-9);
            let validation = data.validation.map(|v| self.trainer.evaluate(v)).transpose()?.flatten();
            self.state.epochs_done = epoch;
            self.state.batches_done = 0;
            self.state.epoch_so_far = WeightedMean::default();
            let best = self.track_best(epoch, validation.as_ref())?;
            let step = self.state.global_step;
            let train = running.mean();
            if let Some(rule) = &self.options.reduce_on_plateau {
                let value = rule.value(&train, validation.as_ref())?;
                if let Some(reduced) = rule.on_epoch_end(&mut self.state.plateau, value, lr) {
                    log::info!(
                        "epoch {epoch}: {} has not improved for {} epochs; learning rate {lr:e} -> {reduced:e}",
                        rule.monitor,
                        rule.patience
                    );
                }
            }
            self.write_log(&LogLine::Epoch {
                epoch,
                step,
                train: train.clone(),
                validation: validation.clone(),
                lr,
                samples_per_sec,
                seconds,
            })?;
            self.checkpoint()?;
            let report = EpochReport { epoch, train, validation, samples_per_sec, best };
            let patience_over =
                self.options.early_stopping.as_ref().is_some_and(|es| self.state.epochs_since_best >= es.patience);
            if callback.on_epoch(&report) == Control::Stop || patience_over {
                break;
            }
        }
        Ok(RunEnd::Finished)
    }

    fn check_finite(&mut self, metrics: &Metrics, epoch: u64) -> Result<()> {
        let loss = metrics.get("loss").copied().unwrap_or(0.0);
        if loss.is_finite() {
            return Ok(());
        }
        self.flush_log()?;
        let kept = match self.checkpoints.latest()? {
            Some((path, _)) => format!(
                "The last good checkpoint is kept in {}; continue from it with --resume (and a lower --lr)",
                path.display()
            ),
            None => "No checkpoint had been taken yet; the input model is unchanged".to_string(),
        };
        Err(Error::NonFiniteLoss { value: loss as f32, epoch, step: self.state.global_step + 1, kept })
    }

    /// A failed step's error, explained as a collective failure in a multi-worker run.
    fn explain(&self, error: Error) -> Error {
        match &self.options.cluster {
            Some(cluster) => cluster.explain(error),
            None => error,
        }
    }

    /// Saves the current weights and state as a new step checkpoint; returns its folder (on a
    /// task that does not write, the folder the chief writes).
    fn checkpoint(&mut self) -> Result<PathBuf> {
        self.flush_log()?;
        let path = self.checkpoints.path_for(self.state.global_step);
        if self.log.is_none() || path.exists() {
            return Ok(path);
        }
        std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(io(&path))?;
        self.save_model_with_state(&path)?;
        self.checkpoints.prune(self.options.checkpoints.keep)?;
        Ok(path)
    }

    fn save_model_with_state(&mut self, path: &Path) -> Result<()> {
        let (model, source) = (self.trainer.model(), &self.graph_source);
        let base = &mut self.checkpoint_base;
        build_then_place(path, |dir| {
            match base {
                Some(base) => write_checkpoint_files(model, base, source, dir)?,
                None => write_model_files(model, source, dir)?,
            }
            write_state(dir, &self.state)?;
            crate::fault::point("checkpoint-built");
            Ok(())
        })
    }

    fn track_best(&mut self, epoch: u64, validation: Option<&Metrics>) -> Result<bool> {
        let Some(early) = &self.options.early_stopping else {
            return Ok(false);
        };
        let key = early.monitor.strip_prefix("val_").unwrap_or(&early.monitor);
        let value = validation.and_then(|v| v.get(key)).copied().ok_or_else(|| {
            Error::InvalidOption(format!(
                "early stopping monitors `{}`, but validation gives: {}. Give validation data (--val-data or --validation-split) and monitor val_loss or val_<metric>",
                early.monitor,
                validation.map(|v| v.keys().map(|k| format!("val_{k}")).collect::<Vec<_>>().join(", ")).unwrap_or_else(|| "nothing".into())
            ))
        })?;
        if !early.improves(value, self.state.best.as_ref()) {
            self.state.epochs_since_best += 1;
            return Ok(false);
        }
        let validation = validation.cloned().unwrap_or_default();
        self.state.best = Some(BestRecord { monitor: early.monitor.clone(), value, epoch, validation });
        self.state.epochs_since_best = 0;
        let best = self.checkpoints.best();
        std::fs::create_dir_all(best.parent().expect("has a parent")).map_err(io(&best))?;
        self.save_model_with_state(&best)?;
        Ok(true)
    }

    /// Assembles the trained SavedModel in the working directory and renames it to `out`.
    fn finish(&mut self, paths: &RunPaths, data: &RunData<'_>) -> Result<FitOutcome> {
        self.flush_log()?;
        let best = self.checkpoints.best();
        let (weights, weights_from_epoch) = match (&self.options.early_stopping, &self.state.best) {
            (Some(_), Some(record)) if best.is_dir() => (best.clone(), record.epoch),
            _ => (self.checkpoint()?, self.state.epochs_done),
        };
        self.assemble_model(&weights)?;
        let validation = match &self.state.best {
            Some(record) if record.epoch == weights_from_epoch => Some(record.validation.clone()),
            _ => data.validation.map(|v| self.trainer.evaluate(v)).transpose()?.flatten(),
        };
        let input_copy = self.work.join(INPUT_COPY);
        remove_dir_if_present(&input_copy)?;
        feature_cache::remove_spill(&self.work)?;
        output_draft::remove(&self.work)?;
        let base = self.work.join(CHECKPOINT_BASE);
        remove_dir_if_present(&base)?;
        crate::fault::point("input-copy-removed");
        publish(&self.work, &paths.out, paths.overwrite)?;
        // Only now: until the output is in place, the checkpoints are what a resume needs.
        remove_checkpoints(&paths.out, self.options.checkpoints.in_output)?;
        Ok(FitOutcome::Completed {
            out: paths.out.clone(),
            epochs: self.state.epochs_done,
            validation,
            weights_from_epoch,
            output_bytes: crate::serving_export::tree_size(&paths.out).ok(),
            model_bytes: crate::serving_export::model_size(&paths.out).ok(),
        })
    }
}

impl Run<'_> {
    /// Puts the model files of the checkpoint `weights` at the top of the working directory and
    /// checks that they form a SavedModel that tfload reads (graph, signatures, variables).
    fn assemble_model(&self, weights: &Path) -> Result<()> {
        for name in ["saved_model.pb", "assets", "assets.extra", "variables"] {
            let target = self.work.join(name);
            if target.is_dir() {
                std::fs::remove_dir_all(&target).map_err(io(&target))?;
            }
        }
        copy_model_files(weights, &self.work)?;
        let variables = weights.join("variables");
        if linked_bundle::shard_count(&variables)? > 1 {
            // A linked checkpoint: the published model gets the one data shard SaveV2 writes.
            let order = self.trainer.model().saver_write_order();
            let draft = self.output_draft.as_deref();
            linked_bundle::copy_as_one_shard(&variables, &self.work.join("variables"), &order, draft)?;
        } else {
            copy_tree(&variables, &self.work.join("variables"))?;
        }
        // The graph and record the run decoded and checked when it started, byte for byte.
        if self.model.same_files_in(&self.work)?.is_none() {
            return Err(Error::Output {
                path: self.work.clone(),
                problem: format!(
                    "the assembled model's saved_model.pb or record differs from the one the run trained ({}); the checkpoint {} may have been changed. Resume from an earlier checkpoint or start again",
                    self.model.dir().display(),
                    weights.display()
                ),
            });
        }
        let index = crate::formats::checkpoint_index::CheckpointIndex::path_in(&self.work);
        crate::formats::checkpoint_index::CheckpointIndex::read(&index)?;
        crate::fault::point("model-assembled");
        Ok(())
    }
}

/// Renames the finished working directory to `out`, replacing an existing one (with
/// `overwrite`) only once the new one is in place.
fn publish(work: &Path, out: &Path, overwrite: bool) -> Result<()> {
    if out.exists() && !overwrite {
        return Err(output_exists(out));
    }
    move_into_place(work, out)
}

/// Removes from a published output the checkpoints that `keep` does not ask for.
fn remove_checkpoints(out: &Path, keep: CheckpointsInOutput) -> Result<()> {
    let checkpoints = Checkpoints::in_dir(out);
    if !keep.steps {
        for step in checkpoints.complete() {
            std::fs::remove_dir_all(&step).map_err(io(&step))?;
        }
        checkpoints.remove_unfinished()?;
    }
    let best = checkpoints.best();
    if !keep.best {
        remove_dir_if_present(&best)?;
    }
    let folder = out.join(crate::train::state::CHECKPOINTS);
    if folder.is_dir() && std::fs::read_dir(&folder).map_err(io(&folder))?.next().is_none() {
        std::fs::remove_dir(&folder).map_err(io(&folder))?;
    }
    Ok(())
}

fn output_exists(out: &Path) -> Error {
    Error::Output {
        path: out.to_path_buf(),
        problem:
            "already exists. Choose another --out, or pass --overwrite to replace it once the new model is complete"
                .to_string(),
    }
}

/// Checks, before anything is read or written, that a run with `paths` can start: the output
/// is not the input, is free (or `overwrite`), is not locked by a live run, and has an
/// unfinished run to continue when `resume` is asked for. `fit` checks the same; callers call
/// this first to fail before scanning data.
pub fn check_paths(input: &Path, paths: &RunPaths) -> Result<()> {
    drop(RunLock::acquire(&paths.out)?);
    let work = partial_dir(&paths.out);
    if paths.resume && !work.exists() && paths.out.join("saved_model.pb").is_file() {
        return Ok(()); // already complete
    }
    check_fresh_or_resumable(input, paths, &work)
}

fn check_fresh_or_resumable(input: &Path, paths: &RunPaths, work: &Path) -> Result<()> {
    check_not_input(input, &paths.out)?;
    check_not_input(input, work)?;
    if paths.out.exists() && !paths.overwrite {
        return Err(output_exists(&paths.out));
    }
    if paths.resume && !work.is_dir() {
        return Err(Error::Output {
            path: work.to_path_buf(),
            problem: "does not exist: there is no unfinished run of this --out to resume. Check --out, or run without --resume to start training".to_string(),
        });
    }
    if !paths.resume && !paths.overwrite && work.exists() {
        return Err(Error::Output {
            path: work.to_path_buf(),
            problem: "holds an unfinished run. Continue it with --resume, or pass --overwrite to start over"
                .to_string(),
        });
    }
    Ok(())
}

/// Checks the output and creates the working directory of a fresh run (a resume with a
/// checkpoint keeps it).
fn prepare_work_dir(input: &Path, paths: &RunPaths) -> Result<PathBuf> {
    let work = partial_dir(&paths.out);
    check_fresh_or_resumable(input, paths, &work)?;
    if paths.resume {
        let checkpoints = Checkpoints::in_dir(&work);
        if checkpoints.latest()?.is_some() {
            checkpoints.remove_unfinished()?;
            return Ok(work);
        }
        // Stopped before its first checkpoint: resuming is starting again, which loses nothing.
        log::warn!("{} holds no checkpoint yet; the run starts from the beginning", work.display());
    }
    remove_dir_if_present(&work)?;
    std::fs::create_dir_all(&work).map_err(|source| Error::Output {
        path: work.clone(),
        problem: format!("cannot be created ({source}). Choose a writable --out"),
    })?;
    Ok(work)
}

/// What every task of a multi-worker run must agree on before its first step, so that all of
/// them call the step the same number of times on the same global batches.
fn run_facts(
    state: &TrainState,
    mask: f64,
    options: &FitOptions,
    schedule: &LrSchedule,
    data: &RunData<'_>,
) -> Vec<(&'static str, f64)> {
    let loader = data.train;
    vec![
        ("the number of training examples", loader.dataset().len() as f64),
        ("--batch-size (the global batch)", loader.options().batch_size as f64),
        ("--seed", loader.options().seed as f64),
        ("shuffling (--no-shuffle)", f64::from(u8::from(loader.options().shuffle))),
        ("--epochs", options.epochs as f64),
        ("the steps per epoch", loader.batches_per_epoch() as f64),
        ("the step to start from (--resume)", state.global_step as f64),
        ("the batches done in the current epoch (--resume)", state.batches_done as f64),
        ("the mask (--train/--freeze flags)", mask),
        ("the learning rate (--lr)", f64::from(schedule.base)),
        ("--warmup-steps", schedule.warmup_steps as f64),
    ]
}

/// A number that differs between two masks (FNV-1a of the values' bits, 32 bits, exact in f64).
fn mask_fingerprint(values: &[f32]) -> f64 {
    let hash = values
        .iter()
        .flat_map(|v| v.to_bits().to_le_bytes())
        .fold(0x811c_9dc5_u32, |h, byte| (h ^ u32::from(byte)).wrapping_mul(0x0100_0193));
    f64::from(hash)
}

fn data_order(loader: &BatchLoader) -> DataOrder {
    let options = loader.options();
    DataOrder {
        batch_size: options.batch_size,
        shuffle: options.shuffle,
        seed: options.seed,
        examples: loader.dataset().len(),
        augmentation: loader.augmentation().map(ToString::to_string),
    }
}

fn check_same_order(saved: &DataOrder, now: &DataOrder, checkpoint: &Path) -> Result<()> {
    if saved == now {
        return Ok(());
    }
    if saved.augmentation != now.augmentation {
        let text = |a: &Option<String>| a.as_ref().map_or("no --augment".to_string(), |a| format!("--augment {a}"));
        return Err(Error::InvalidOption(format!(
            "cannot resume from {}: it was trained with {}, and this run has {}. Resume with the same --augment",
            checkpoint.display(),
            text(&saved.augmentation),
            text(&now.augmentation)
        )));
    }
    Err(Error::InvalidOption(format!(
        "cannot resume from {}: it was trained with batch size {}, shuffle {}, seed {} on {} examples, and this run has batch size {}, shuffle {}, seed {} on {} examples. Resume with the same data and --batch-size/--seed/--no-shuffle",
        checkpoint.display(),
        saved.batch_size, saved.shuffle, saved.seed, saved.examples,
        now.batch_size, now.shuffle, now.seed, now.examples
    )))
}

/// Checks before the first step that the data fits the model: the first batch through the
/// `train_step` input checks, and the label classes against the model's head.
fn check_data(trainer: &Trainer, data: &RunData<'_>) -> Result<()> {
    for (what, loader) in
        std::iter::once(("the training data", data.train)).chain(data.validation.map(|v| ("the validation data", v)))
    {
        let dataset = loader.dataset();
        if dataset.is_empty() {
            return Err(Error::DataMismatch(format!("{what} ({}) holds no examples", dataset.describe())));
        }
        let first: Vec<usize> = (0..loader.options().batch_size.min(dataset.len())).collect();
        trainer.check_batch(&dataset.gather(&first)?, what)?;
        if let (Some(classes), Some(head)) = (dataset.label_classes(), trainer.contract().num_classes) {
            if classes as u64 > head {
                return Err(Error::DataMismatch(format!(
                    "{what} ({}) has {classes} classes, but the model's head gives scores for {head} classes{}. Export the model again with a head for {classes} classes (`.venv/bin/tfload-export --num-classes {classes}`)",
                    dataset.describe(),
                    trainer.contract().class_names.as_ref().map(|n| format!(" (the model's classes: {})", n.join(", "))).unwrap_or_default()
                )));
            }
        }
    }
    Ok(())
}
