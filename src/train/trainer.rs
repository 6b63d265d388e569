//! The trainer: a loaded trainable SavedModel with its contract, mask and bound `train_step` /
//! `eval_step`, doing one step or one evaluation pass at a time. The epoch loop, checkpoints and
//! resume live in `fit`; this type is what a service drives directly for custom loops.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ndarray::{arr0, ArrayD, IxDyn};

use crate::data::{Batch, BatchLoader};
use crate::error::{Error, Result};
use crate::model::signature::Signature;
use crate::session::call::{check_inputs, BoundSignature, PreparedInputs, Tensors};
use crate::session::loaded_model::{LoadScope, LoadedModel, SessionConfig};
use crate::session::run_metadata::ExecutedOps;
use crate::tensor::TensorData;
use crate::train::contract::{TrainContract, EVAL_STEP, TRAIN_STEP};
use crate::train::distributed::{ClusterWorker, TRAIN_STEP_ALLREDUCE};
use crate::train::feature_cache::{FEATURES, HEAD_EVAL_STEP, HEAD_TRAIN_STEP};
use crate::train::frozen_base_step::{self, FrozenBaseStep};
use crate::train::mask::{Mask, MaskSpec};
use crate::train::trainable_model::TrainableModel;

pub use crate::infer::metrics::{Metrics, WeightedMean};

/// A trainable SavedModel loaded for training.
///
/// # Threads
///
/// `Trainer` is `Send + Sync` (its session is, as [`Predictor`](crate::infer::predict::Predictor)'s
/// is), so it can be moved to a worker thread or shared in an `Arc`. But a step changes the
/// model's variables: drive [`Trainer::train_batch`] and [`Trainer::evaluate`] from one thread at
/// a time, in order. TensorFlow would run two concurrent steps on the same variables without
/// ordering their updates (racy, not reproducible, and not what `fit` or Keras do). What may run
/// on other threads meanwhile is the preparation of the next batches
/// ([`Trainer::preparer`] hands out a `Send` [`BatchPreparer`] that converts batches to
/// TensorFlow tensors), which is how `fit` overlaps data and compute.
pub struct Trainer {
    source: PathBuf,
    model: LoadedModel,
    contract: TrainContract,
    mask: Mask,
    /// The mask's feed; `None` when the step is specialized on it (the mask is then a constant
    /// in the graph).
    mask_input: Option<PreparedInputs>,
    step: StepKind,
    steps: StepSet,
    /// The model's own step signature, which [`Trainer::check_batch`] checks data against.
    data_signature: Signature,
    /// The learning-rate feed of the last step, rebuilt only when the rate changes.
    rate_input: Mutex<Option<(u32, PreparedInputs)>>,
    /// Tensors of batches whose step is over, for the next batches to be copied into.
    spare: SparePool,
    train_step: BoundSignature,
    /// The frozen-base step behind `train_step`, when the mask allows one.
    frozen_base: Option<FrozenBaseStep>,
    eval_step: Option<BoundSignature>,
    /// The collective inputs of `train_step_allreduce` on a cluster (group size and keys).
    collective: Option<Tensors>,
    collective_input: Option<PreparedInputs>,
    /// The input that batches feed: the model's, or `features` for the head steps.
    input_key: String,
}

impl Trainer {
    /// Loads the SavedModel in `dir` (tag set `serve`), checks it against the train-step
    /// contract and builds the mask from `mask`.
    pub fn open(dir: &Path, mask: &MaskSpec, session: SessionConfig) -> Result<Trainer> {
        let model = TrainableModel::open(dir)?;
        let mask = model.mask(mask)?;
        Trainer::from_model(&model, mask, session)
    }

    /// Loads an opened model with an already built mask (a resumed run keeps the mask it
    /// started with), without decoding its graph again; its `train_step` specialized on the mask
    /// (see [`StepKind::Specialized`]).
    pub fn from_model(opened: &TrainableModel, mask: Mask, session: SessionConfig) -> Result<Trainer> {
        Trainer::build(opened, mask, &session.to_options()?, None, StepKind::Specialized, StepSet::Full)
    }

    /// Like [`Trainer::from_model`], running the `train_step` that `step` asks for.
    pub fn from_model_with(
        opened: &TrainableModel,
        mask: Mask,
        session: SessionConfig,
        step: StepKind,
    ) -> Result<Trainer> {
        Trainer::build(opened, mask, &session.to_options()?, None, step, StepSet::Full)
    }

    /// Loads an opened model for the frozen-base feature cache: only its `features`,
    /// `head_train_step` and `head_eval_step` (see [`StepSet::Head`]), which
    /// [`feature_cache::activate`](crate::train::feature_cache::activate) then runs. The steps run
    /// as exported (small: a specialized copy would only add nodes to the session's graph).
    pub fn for_feature_cache(opened: &TrainableModel, mask: Mask, session: SessionConfig) -> Result<Trainer> {
        Trainer::build(opened, mask, &session.to_options()?, None, StepKind::Plain, StepSet::Head)
    }

    /// Loads an opened model into a session of `worker`'s TensorFlow server, its steps calling
    /// `train_step_allreduce` in the group of every task of the cluster: each task then feeds its
    /// shard of the global batch, and the gradients, loss and metrics are the cluster's means.
    /// The all-reducing step runs as exported (the mask fed at every step).
    pub fn on_cluster(
        opened: &TrainableModel,
        mask: Mask,
        session: SessionConfig,
        worker: &ClusterWorker,
    ) -> Result<Trainer> {
        if opened.meta_graph().signature(TRAIN_STEP_ALLREDUCE).is_err() {
            return Err(Error::NoAllreduceStep { dir: opened.dir().to_path_buf() });
        }
        let options = worker.session_options(session)?;
        Trainer::build(opened, mask, &options, Some(worker.step_inputs()), StepKind::Plain, StepSet::Allreduce)
    }

    fn build(
        opened: &TrainableModel,
        mask: Mask,
        options: &tensorflow::SessionOptions,
        collective: Option<Tensors>,
        step: StepKind,
        steps: StepSet,
    ) -> Result<Trainer> {
        let dir = opened.dir();
        let contract = opened.contract().clone();
        // What `check_batch` checks the data against: the model's own step, whatever runs.
        let data_signature = opened.meta_graph().signature(steps.data_step())?;
        let (_, eval_key) = steps.keys();
        let values = mask.values();
        let frozen_base = match (steps, step) {
            (StepSet::Full, StepKind::Specialized) if contract.jit_compile != Some(true) => {
                frozen_base_step::for_mask(&contract.frozen_base_steps, &values, |key| {
                    opened.meta_graph().signature(key).is_ok()
                })
                .cloned()
            }
            _ => None,
        };
        if let Some(frozen) = &frozen_base {
            log::info!(
                "training through `{}`: the mask freezes every variable below layer `{}`, so the step runs no backward pass below it",
                frozen.signature,
                frozen.layer
            );
        }
        let train_key = train_signature(steps, frozen_base.as_ref());
        let has_eval = opened.meta_graph().signature(eval_key).is_ok();
        let mut loaded: Vec<&str> = vec![train_key];
        loaded.extend(has_eval.then_some(eval_key));
        loaded.extend((steps == StepSet::Head).then_some(FEATURES));
        let scope = LoadScope::signatures(&loaded);
        let mut model =
            LoadedModel::load_meta_graph_with(dir.to_path_buf(), opened.meta_graph().clone(), options, &scope)?;
        let plain_step = BoundSignature::bind(&model, train_key)?;
        let collective_input = collective.as_ref().map(|inputs| plain_step.prepare(inputs)).transpose()?;
        let eval_step = has_eval.then(|| BoundSignature::bind(&model, eval_key)).transpose()?;
        let (train_step, step) = match step {
            // XLA compiles the step's body as one cluster that the session does not inline, so a
            // constant mask folds nothing there (measured: the same executed graph and time).
            StepKind::Specialized if contract.jit_compile == Some(true) => {
                log::info!("running the XLA-compiled `{TRAIN_STEP}` as exported: its body is not inlined, so specializing it on the mask would drop nothing");
                (plain_step, StepKind::Plain)
            }
            StepKind::Specialized => specialized_step(&mut model, &plain_step, &values)?,
            StepKind::Plain => (plain_step, StepKind::Plain),
        };
        let mask_input = match step {
            StepKind::Specialized => None,
            StepKind::Plain => Some(mask_input(&train_step, &mask)?),
        };
        let input_key = match steps {
            StepSet::Head => FEATURES.to_string(),
            StepSet::Full | StepSet::Allreduce => contract.input_key().to_string(),
        };
        Ok(Trainer {
            source: dir.to_path_buf(),
            model,
            contract,
            mask,
            mask_input,
            step,
            steps,
            rate_input: Mutex::new(None),
            spare: SparePool::default(),
            train_step,
            frozen_base,
            eval_step,
            data_signature,
            collective,
            collective_input,
            input_key,
        })
    }

    /// The steps this trainer runs, which are the signatures its session loaded.
    pub fn steps(&self) -> StepSet {
        self.steps
    }

    /// The key of the step signature this trainer runs: `train_step`, or the frozen-base step
    /// that its mask allows (see [`crate::train::frozen_base_step`]), `head_train_step` under the
    /// feature cache, `train_step_allreduce` on a cluster.
    pub fn train_signature(&self) -> &str {
        train_signature(self.steps, self.frozen_base.as_ref())
    }

    /// The frozen-base step this trainer runs instead of `train_step`, when its mask allows one.
    pub fn frozen_base_step(&self) -> Option<&FrozenBaseStep> {
        self.frozen_base.as_ref()
    }

    /// The directory the model was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The model's contract record.
    pub fn contract(&self) -> &TrainContract {
        &self.contract
    }

    /// The mask in use.
    pub fn mask(&self) -> &Mask {
        &self.mask
    }

    /// The `train_step` this trainer runs: specialized on its mask, or the exported one as it is
    /// (asked for, or the export's step could not be specialized).
    pub fn step_kind(&self) -> StepKind {
        self.step
    }

    /// The `train_step` this trainer runs, bound to the graph (the specialized copy, or the
    /// exported signature).
    pub fn train_step(&self) -> &BoundSignature {
        &self.train_step
    }

    /// The loaded model (its session holds the current weights).
    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    /// Checks that a batch fits `train_step` (input shape and dtype, label dtype) without running
    /// it, so that bad data fails before the first step with a message about the data.
    pub fn check_batch(&self, batch: &Batch, what: &str) -> Result<()> {
        let signature = &self.data_signature;
        let mut inputs = batch_inputs(self.contract.input_key(), batch);
        if let Some(weights) = step_weights(signature, batch)? {
            inputs.insert(SAMPLE_WEIGHT.to_string(), weights.into_owned());
        }
        inputs.insert("mask".to_string(), TensorData::Float32(ArrayD::zeros(IxDyn(&[self.mask.entries().len()]))));
        inputs.insert("learning_rate".to_string(), learning_rate(0.0));
        inputs.extend(self.collective.iter().flatten().map(|(k, v)| (k.clone(), v.clone())));
        check_inputs(signature, &inputs).map_err(|error| match error {
            Error::InputMismatch { problem, .. } => Error::DataMismatch(format!(
                "{what} does not fit the model: {problem}. The model takes `{}` as {} and labels as {}",
                self.contract.input_key(),
                signature
                    .input(self.contract.input_key())
                    .map(|s| format!("{} {}", s.dtype, s.shape))
                    .unwrap_or_default(),
                signature.input("labels").map(|s| format!("{} {}", s.dtype, s.shape)).unwrap_or_default(),
            )),
            other => other,
        })
    }

    /// What turns batches into `train_step` feeds; cheap to clone, usable on a loader thread.
    /// Its batches' tensors, once dropped, are reused for the next batches of this trainer.
    pub fn preparer(&self) -> BatchPreparer {
        BatchPreparer {
            signature: self.train_step.clone(),
            input_key: self.input_key.clone(),
            spare: self.spare.clone(),
        }
    }

    /// Runs one `train_step` on `batch` at learning rate `lr`; returns its loss and metrics.
    pub fn train_batch(&self, batch: &Batch, lr: f32) -> Result<Metrics> {
        self.train_prepared(&self.preparer().prepare(batch)?, lr)
    }

    /// Runs one `train_step` on a batch prepared by [`BatchPreparer::prepare`] (the fast path:
    /// no copy of the batch between the loader and TensorFlow).
    pub fn train_prepared(&self, batch: &PreparedBatch, lr: f32) -> Result<Metrics> {
        self.train_with(batch, lr, false).map(|(metrics, _)| metrics)
    }

    /// Like [`Trainer::train_prepared`], also returning the ops TensorFlow executed for the step
    /// (after inlining and graph optimization): what the step really costs.
    pub fn train_prepared_counting_ops(&self, batch: &PreparedBatch, lr: f32) -> Result<(Metrics, ExecutedOps)> {
        let (metrics, ops) = self.train_with(batch, lr, true)?;
        Ok((metrics, ops.unwrap_or_default()))
    }

    fn train_with(&self, batch: &PreparedBatch, lr: f32, count_ops: bool) -> Result<(Metrics, Option<ExecutedOps>)> {
        let mut rate = self.rate_input.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if rate.as_ref().map(|(bits, _)| *bits) != Some(lr.to_bits()) {
            let input = self.train_step.prepare(&Tensors::from([("learning_rate".to_string(), learning_rate(lr))]))?;
            *rate = Some((lr.to_bits(), input));
        }
        let (_, rate) = rate.as_ref().expect("set above");
        let mut parts = vec![&batch.inputs, rate];
        parts.extend(&self.mask_input);
        parts.extend(self.collective_input.as_ref());
        if count_ops {
            let (outputs, ops) = self.train_step.run_prepared_counting_ops(&self.model, &parts, None)?;
            return Ok((scalars(&outputs), Some(ops)));
        }
        Ok((scalars(&self.train_step.run_prepared(&self.model, &parts, None)?), None))
    }

    /// Loss and metrics over every batch of `loader` through `eval_step`, each batch weighted by
    /// its size (what Keras `evaluate` reports). `None` when the model has no `eval_step`.
    pub fn evaluate(&self, loader: &BatchLoader) -> Result<Option<Metrics>> {
        let Some(eval_step) = &self.eval_step else {
            return Ok(None);
        };
        let preparer = BatchPreparer {
            signature: eval_step.clone(),
            input_key: self.input_key.clone(),
            spare: SparePool::default(),
        };
        let mut totals = WeightedMean::default();
        for batch in loader.epoch_map(0, 0, move |batch| preparer.prepare(batch)) {
            let batch = batch?;
            let outputs = eval_step.run_prepared(&self.model, &[&batch.inputs], None)?;
            totals.add(&scalars(&outputs), batch.len);
        }
        Ok(Some(totals.mean()))
    }
}

/// The pair of step signatures a [`Trainer`] runs; its session loads only those (with
/// `features` for [`StepSet::Head`]), so that a run does not pay for the rest of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepSet {
    /// `train_step` (or, specialized, the frozen-base step that the mask allows: see
    /// [`crate::train::frozen_base_step`]) and `eval_step`, fed the model's inputs.
    Full,
    /// The feature cache's `head_train_step` and `head_eval_step`, fed the output of
    /// `features` (the base's, computed once per example).
    Head,
    /// `train_step_allreduce` and `eval_step`, a multi-worker run's.
    Allreduce,
}

impl StepSet {
    /// The keys of the train and eval signatures.
    fn keys(self) -> (&'static str, &'static str) {
        match self {
            StepSet::Full => (TRAIN_STEP, EVAL_STEP),
            StepSet::Head => (HEAD_TRAIN_STEP, HEAD_EVAL_STEP),
            StepSet::Allreduce => (TRAIN_STEP_ALLREDUCE, EVAL_STEP),
        }
    }

    /// The signature whose inputs the training data must fit.
    fn data_step(self) -> &'static str {
        match self {
            StepSet::Full | StepSet::Head => TRAIN_STEP,
            StepSet::Allreduce => TRAIN_STEP_ALLREDUCE,
        }
    }
}

/// Which `train_step` a [`Trainer`] runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// The exported `train_step` with its mask bound to the run's mask as a constant, so that
    /// TensorFlow's graph optimizer drops what the mask decides: a frozen variable's weight
    /// gradient, its optimizer update and its `tf.where`s. (Input gradients that pass through a
    /// frozen BatchNormalization layer's gradient `cond` stay: see BENCHMARKS.md, "Training with
    /// frozen layers".) The same function runs on the same variables: losses and weights are those
    /// of the plain step, bit for bit. Where the export has a frozen-base step that the mask
    /// allows, that step is the one specialized (no backward pass below its cut; the full step's
    /// losses and weights within 1e-5, see [`crate::train::frozen_base_step`]).
    #[default]
    Specialized,
    /// The exported `train_step` as it is, the mask fed at every step.
    Plain,
}

/// The key of the step signature that `steps` trains through: the frozen-base step's when there
/// is one, else the set's own train step.
fn train_signature(steps: StepSet, frozen_base: Option<&FrozenBaseStep>) -> &str {
    frozen_base.map_or(steps.keys().0, |frozen| frozen.signature.as_str())
}

/// `plain` specialized on the mask `values`, or `plain` itself (with a log line saying why)
/// when its signature is not a single function call taking the mask as it is.
fn specialized_step(
    model: &mut LoadedModel,
    plain: &BoundSignature,
    values: &[f32],
) -> Result<(BoundSignature, StepKind)> {
    match plain.with_constant_input(model, "mask", values, &[values.len() as u64])? {
        Ok(specialized) => Ok((specialized, StepKind::Specialized)),
        Err(why) => {
            log::info!(
                "running `{TRAIN_STEP}` with the mask fed at every step: it cannot be specialized on the mask ({})",
                why.0
            );
            Ok((plain.clone(), StepKind::Plain))
        }
    }
}

/// Turns batches into the feeds of a step signature (inputs and labels), off the training thread.
#[derive(Clone)]
pub struct BatchPreparer {
    signature: BoundSignature,
    input_key: String,
    spare: SparePool,
}

impl BatchPreparer {
    /// Checks and converts `batch`, into the tensors of a batch already used where one is spare.
    pub fn prepare(&self, batch: &Batch) -> Result<PreparedBatch> {
        let weights = step_weights(self.signature.signature(), batch)?;
        let mut inputs = vec![(self.input_key.as_str(), &batch.inputs), ("labels", &batch.labels)];
        inputs.extend(weights.as_deref().map(|w| (SAMPLE_WEIGHT, w)));
        let inputs = self.signature.prepare_reusing(&inputs, self.spare.take())?;
        Ok(PreparedBatch { len: batch.len(), inputs, spare: self.spare.clone() })
    }
}

/// A batch converted to TensorFlow tensors for a step signature. Dropped after its step, it
/// leaves its tensors to the batches after it (see [`BoundSignature::prepare_reusing`]).
pub struct PreparedBatch {
    /// Examples in the batch.
    pub len: usize,
    inputs: PreparedInputs,
    spare: SparePool,
}

impl Drop for PreparedBatch {
    fn drop(&mut self) {
        self.spare.give(std::mem::take(&mut self.inputs));
    }
}

/// Tensors of finished batches, shared by a trainer's preparers. It holds at most as many as
/// were ever in flight at once (prepared and not yet dropped), which the loader bounds: its
/// prefetch queue, or the look-ahead of an in-memory data set.
#[derive(Clone, Default)]
struct SparePool(Arc<Mutex<Vec<PreparedInputs>>>);

impl SparePool {
    fn take(&self) -> PreparedInputs {
        self.lock().pop().unwrap_or_default()
    }

    fn give(&self, inputs: PreparedInputs) {
        self.lock().push(inputs);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PreparedInputs>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The `mask` feed of `step`, prepared once for every step of a run.
fn mask_input(step: &BoundSignature, mask: &Mask) -> Result<PreparedInputs> {
    let values = mask.values();
    let mask_tensor = TensorData::Float32(ArrayD::from_shape_vec(IxDyn(&[values.len()]), values).expect("1-d"));
    step.prepare(&Tensors::from([("mask".to_string(), mask_tensor)]))
}

/// The `sample_weight` input of a step signature (train-step contract version 2).
pub const SAMPLE_WEIGHT: &str = "sample_weight";

/// What a step takes as `sample_weight` for `batch`: its weights, or ones when it has none; `None`
/// when the step takes no weights (and then the batch must have none).
pub fn step_weights<'a>(signature: &Signature, batch: &'a Batch) -> Result<Option<Cow<'a, TensorData>>> {
    if signature.input(SAMPLE_WEIGHT).is_none() {
        return match batch.weights {
            Some(_) => Err(Error::WeightsNotTaken { signature: signature.key.clone() }),
            None => Ok(None),
        };
    }
    Ok(Some(match &batch.weights {
        Some(weights) => Cow::Borrowed(weights),
        None => Cow::Owned(TensorData::Float32(ArrayD::ones(IxDyn(&[batch.len()])))),
    }))
}

fn batch_inputs(input_key: &str, batch: &Batch) -> Tensors {
    Tensors::from([(input_key.to_string(), batch.inputs.clone()), ("labels".to_string(), batch.labels.clone())])
}

fn learning_rate(lr: f32) -> TensorData {
    TensorData::Float32(arr0(lr).into_dyn())
}

/// Scalar outputs as f64 by key.
fn scalars(outputs: &Tensors) -> Metrics {
    outputs
        .iter()
        .filter_map(|(key, value)| {
            value.to_f32().and_then(|a| a.iter().next().copied()).map(|v| (key.clone(), f64::from(v)))
        })
        .collect()
}
