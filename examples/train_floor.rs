//! The floor of a training benchmark: how fast TensorFlow itself runs a model's `train_step`
//! when nothing but `Session::run` sits in the loop. `scripts/bench/bench_train.py` runs it beside
//! `tfload train`, Keras `fit` and Python calling the signature.
//!
//!     cargo run --release --example train_floor -- DIR DATA.npz --batch-size 64 --epochs 4 [--train-all]
//!
//! Loops (`--mode`), each adding one layer of tfload on top of the previous one, so that the
//! difference between two of them is the cost of that layer:
//!
//! * `floor`: `tensorflow::Tensor`s built once per batch before timing starts; each step is one
//!   `SessionRunArgs` with the four feeds and the signature's outputs fetched (the loss must come
//!   back to the host in any real loop).
//! * `trainer`: `Trainer::train_prepared` on batches gathered and prepared (checked, converted to
//!   tensors) once before timing: what the training thread of `tfload train` pays per step.
//! * `loader`: the same, with batches from `BatchLoader::epoch_map` (shuffled; an in-memory data
//!   set is gathered and prepared on the training thread, several batches at a time, into the
//!   tensors of batches already used), as `tfload::train::fit` gets them.
//! * `layers`: all of the above plus `tfload::train::fit` (what `tfload train` runs: the epoch
//!   loop, the per-step metrics log line, checkpoints at epoch ends), epoch after epoch in turn
//!   in ONE process, `--epochs` cycles of them. The first three share one session; `fit` loads
//!   its own for each cycle and only its third epoch is timed. On a machine whose load changes
//!   from second to second, neighbouring epochs of one process compare far better than
//!   processes run one after the other.
//!
//! Every loop runs the `train_step` that `tfload train` runs: specialized on the mask (see
//! `tfload::train::StepKind`), or the exported one with `--plain-step`. `--count-ops` prints the
//! ops TensorFlow executes for one step of each kind and exits:
//! `{"event":"ops","step":"plain","nodes":..,"weight_gradients":..,"input_gradients":..,"selects":..,"by_type":{..}}`
//! (`by_type`: the executed nodes by op type).
//!
//! Prints one JSON line per timed epoch on stdout:
//! `{"event":"epoch","layer":"floor","epoch":1,"seconds":..,"samples_per_sec":..}`.
//! Batches are whole: the data set's size is cut down to a multiple of the batch size.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use tensorflow::{Operation, SessionRunArgs, Tensor};
use tfload::data::{ArrayDataset, Batch, BatchLoader, Dataset, LoaderOptions, Subset};
use tfload::train::trainer::PreparedBatch;
use tfload::train::{
    fit, step_threads, EpochReport, FitOptions, FitOutcome, LrSchedule, MaskSpec, MaskStart, RunData, RunPaths,
    StepKind, TrainCallback, TrainContract, TrainableModel, Trainer,
};
use tfload::{LoadedModel, SavedModel, SessionConfig, TensorData};

/// Loop over `train_step` with as little as possible around `Session::run`.
#[derive(Debug, Parser)]
struct Args {
    /// A trainable SavedModel (tfload-export).
    dir: PathBuf,
    /// A .npz with float32 `x` and int64 `y`.
    data: PathBuf,
    /// Examples per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Epochs to run (the first is a warm-up for the caller to leave out); cycles with `layers`.
    #[arg(long, default_value_t = 3)]
    epochs: u64,
    /// Train every mask variable (else the model's default mask).
    #[arg(long)]
    train_all: bool,
    /// Train only the last N layers (`tfload train --train-last-layers`).
    #[arg(long, value_name = "N")]
    train_last_layers: Option<usize>,
    /// Run the exported `train_step` as it is (`tfload train --no-specialize-step`).
    #[arg(long)]
    plain_step: bool,
    /// Print the executed graph's op counts of the plain and the specialized step, and exit.
    #[arg(long)]
    count_ops: bool,
    /// Learning rate fed at every step (default: the model's).
    #[arg(long)]
    lr: Option<f32>,
    /// Which loop to time.
    #[arg(long, value_enum, default_value_t = Mode::Floor)]
    mode: Mode,
}

/// The loops, from the bare floor up to what `tfload train` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Raw `Session::run` on tensors built once.
    Floor,
    /// `Trainer::train_prepared` on batches prepared once.
    Trainer,
    /// `Trainer::train_prepared` on batches from `BatchLoader::epoch_map`.
    Loader,
    /// Every layer in turn, `fit` included, in one process.
    Layers,
}

/// What every loop needs.
struct Setup {
    args: Args,
    spec: MaskSpec,
    contract: TrainContract,
    lr: f32,
    batches: Vec<Batch>,
    loader: BatchLoader,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dataset = ArrayDataset::from_npz(&args.data, None, None).context("reading the data")?;
    let steps = dataset.len() / args.batch_size;
    if steps == 0 {
        bail!("{} examples make no whole batch of {}", dataset.len(), args.batch_size);
    }
    let batches: Vec<Batch> = (0..steps)
        .map(|i| dataset.gather(&((i * args.batch_size)..((i + 1) * args.batch_size)).collect::<Vec<_>>()))
        .collect::<tfload::Result<_>>()?;
    let whole: Vec<usize> = (0..steps * args.batch_size).collect();
    let subset: Arc<dyn Dataset> = Arc::new(Subset::new(Arc::new(dataset), whole, &args.data.display().to_string()));
    // What `tfload train` uses (src/cli/train.rs).
    let loader = BatchLoader::new(
        subset,
        LoaderOptions { batch_size: args.batch_size, prefetch: 4, ..LoaderOptions::default() },
    );
    let spec = MaskSpec {
        start: if args.train_all { MaskStart::AllTrainable } else { MaskStart::ModelDefault },
        train_last_layers: args.train_last_layers,
        ..MaskSpec::default()
    };
    let meta_graph = SavedModel::open(&args.dir)?.meta_graph(&["serve"])?;
    let contract = TrainContract::read(&args.dir, &meta_graph)?;
    let lr = args.lr.unwrap_or(contract.learning_rate.default);
    let setup = Setup { args, spec, contract, lr, batches, loader };
    let samples = (steps * setup.args.batch_size) as f64;
    let report = |layer: &str, epoch: u64, seconds: f64| {
        println!(
            "{{\"event\":\"epoch\",\"layer\":\"{layer}\",\"epoch\":{epoch},\"steps\":{steps},\"seconds\":{seconds},\"samples_per_sec\":{}}}",
            samples / seconds
        );
    };
    let timed = |run: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        let started = Instant::now();
        run()?;
        Ok(started.elapsed().as_secs_f64())
    };
    let step = if setup.args.plain_step { StepKind::Plain } else { StepKind::Specialized };
    if setup.args.count_ops {
        return count_ops(&setup);
    }
    let opened = TrainableModel::open(&setup.args.dir)?;
    // The session settings `fit` gives this model's step (one intra-op thread for a small one).
    let session = step_threads::for_step(SessionConfig::default(), opened.contract(), setup.args.batch_size);
    let trainer = Trainer::from_model_with(&opened, opened.mask(&setup.spec)?, session, step)?;
    let floor = Floor::new(&setup, &trainer)?;
    let preparer = trainer.preparer();
    let prepared: Vec<PreparedBatch> =
        setup.batches.iter().map(|b| preparer.prepare(b)).collect::<tfload::Result<_>>()?;
    let (mode, epochs) = (setup.args.mode, setup.args.epochs);
    for epoch in 1..=epochs {
        let layers: &[Mode] =
            if mode == Mode::Layers { &[Mode::Floor, Mode::Trainer, Mode::Loader, Mode::Layers] } else { &[mode] };
        for &layer in layers {
            let (name, seconds) = match layer {
                Mode::Floor => ("floor", timed(&mut || floor.epoch(trainer.model()))?),
                Mode::Trainer => ("trainer", timed(&mut || trainer_epoch(&setup, &trainer, &prepared))?),
                Mode::Loader => ("loader", timed(&mut || loader_epoch(&setup, &trainer, epoch))?),
                Mode::Layers => ("fit", fit_epoch_seconds(&setup)?),
            };
            report(name, epoch, seconds);
        }
    }
    Ok(())
}

/// One step of each kind on the first batch, with the executed graph's op counts as JSON lines.
fn count_ops(setup: &Setup) -> Result<()> {
    let opened = TrainableModel::open(&setup.args.dir)?;
    for step in [StepKind::Plain, StepKind::Specialized] {
        let trainer = Trainer::from_model_with(&opened, opened.mask(&setup.spec)?, SessionConfig::default(), step)?;
        let batch = trainer.preparer().prepare(&setup.batches[0])?;
        let (_, ops) = trainer.train_prepared_counting_ops(&batch, setup.lr)?;
        println!(
            "{{\"event\":\"ops\",\"step\":\"{}\",\"nodes\":{},\"weight_gradients\":{},\"input_gradients\":{},\"selects\":{},\"by_type\":{}}}",
            if trainer.step_kind() == StepKind::Plain { "plain" } else { "specialized" },
            ops.total(),
            ops.count_containing("BackpropFilter"),
            ops.count_containing("BackpropInput"),
            ops.count_containing("Select"),
            serde_json::to_string(&ops.by_type)?,
        );
    }
    Ok(())
}

fn trainer_epoch(setup: &Setup, trainer: &Trainer, prepared: &[PreparedBatch]) -> Result<()> {
    for batch in prepared {
        trainer.train_prepared(batch, setup.lr)?;
    }
    Ok(())
}

/// As `fit` does it (src/train/fit.rs): batches from the loader, prepared as they are gathered.
fn loader_epoch(setup: &Setup, trainer: &Trainer, epoch: u64) -> Result<()> {
    let preparer = trainer.preparer();
    for batch in setup.loader.epoch_map(epoch, 0, move |b| preparer.prepare(b)) {
        trainer.train_prepared(&batch?, setup.lr)?;
    }
    Ok(())
}

/// Runs `fit` for three epochs in a fresh output folder (a fresh session, warmed up by two);
/// returns the third epoch's seconds as
/// `fit` itself measures them (training steps only, as in `metrics.jsonl`).
fn fit_epoch_seconds(setup: &Setup) -> Result<f64> {
    struct LastEpoch(f64);
    impl TrainCallback for LastEpoch {
        fn on_epoch(&mut self, report: &EpochReport) -> tfload::train::Control {
            self.0 = report.samples_per_sec;
            tfload::train::Control::Continue
        }
    }
    let out = std::env::temp_dir().join(format!("train_floor_fit_{}", std::process::id()));
    let paths = RunPaths { out: out.clone(), overwrite: true, resume: false };
    let options = FitOptions {
        epochs: 3,
        schedule: Some(LrSchedule::constant(setup.lr)),
        mask: setup.spec.clone(),
        step: if setup.args.plain_step { StepKind::Plain } else { StepKind::Specialized },
        ..FitOptions::default()
    };
    let mut last = LastEpoch(0.0);
    let model = TrainableModel::open(&setup.args.dir)?;
    let data = RunData { train: &setup.loader, validation: None };
    let outcome = fit(&model, &paths, &data, &options, &mut last, &AtomicBool::new(false));
    remove(&out);
    if !matches!(outcome?, FitOutcome::Completed { .. }) {
        bail!("fit did not complete");
    }
    Ok(setup.loader.dataset().len() as f64 / last.0)
}

fn remove(path: &Path) {
    let _ = std::fs::remove_dir_all(path);
    let _ = std::fs::remove_dir_all(path.with_extension("partial"));
}

/// The bare loop's endpoints and tensors, built once.
struct Floor {
    input: (Operation, i32),
    labels: (Operation, i32),
    /// The mask's feed, when the step is not specialized on it.
    mask_in: Option<(Operation, i32)>,
    lr_in: (Operation, i32),
    fetches: Vec<(Operation, i32)>,
    mask: Tensor<f32>,
    lr: Tensor<f32>,
    tensors: Vec<(Tensor<f32>, Tensor<i64>)>,
}

impl Floor {
    /// The loop over the step `trainer` runs (its graph nodes: the specialized copy, or the
    /// exported signature).
    fn new(setup: &Setup, trainer: &Trainer) -> Result<Floor> {
        let step = trainer.train_step();
        let input = |key: &str| step.input_tensor(key).with_context(|| format!("train_step has no input `{key}`"));
        let output = |key: &str| step.output_tensor(key).with_context(|| format!("train_step has no output `{key}`"));
        let mask_values = trainer.mask().values();
        let tensors = setup
            .batches
            .iter()
            .map(|batch| -> Result<_> {
                let (TensorData::Float32(x), TensorData::Int64(y)) = (&batch.inputs, &batch.labels) else {
                    bail!("the floor takes float32 inputs and int64 labels");
                };
                let dims = |shape: &[usize]| shape.iter().map(|&d| d as u64).collect::<Vec<_>>();
                let x = Tensor::new(&dims(x.shape())).with_values(x.as_slice().context("contiguous")?)?;
                let y = Tensor::new(&dims(y.shape())).with_values(y.as_slice().context("contiguous")?)?;
                Ok((x, y))
            })
            .collect::<Result<_>>()?;
        Ok(Floor {
            input: input(setup.contract.input_key())?,
            labels: input("labels")?,
            mask_in: step.input_tensor("mask"),
            lr_in: input("learning_rate")?,
            fetches: step.signature().outputs.iter().map(|s| output(&s.key)).collect::<Result<_>>()?,
            mask: Tensor::new(&[mask_values.len() as u64]).with_values(&mask_values)?,
            lr: Tensor::new(&[]).with_values(&[setup.lr])?,
            tensors,
        })
    }

    /// One `Session::run` per batch, nothing else.
    fn epoch(&self, model: &LoadedModel) -> Result<()> {
        for (x, y) in &self.tensors {
            let mut run = SessionRunArgs::new();
            run.add_feed(&self.input.0, self.input.1, x);
            run.add_feed(&self.labels.0, self.labels.1, y);
            if let Some((op, index)) = &self.mask_in {
                run.add_feed(op, *index, &self.mask);
            }
            run.add_feed(&self.lr_in.0, self.lr_in.1, &self.lr);
            let tokens: Vec<_> = self.fetches.iter().map(|(op, index)| run.request_fetch(op, *index)).collect();
            model.session().run(&mut run)?;
            for token in tokens {
                let value: Tensor<f32> = run.fetch(token)?;
                std::hint::black_box(value[0]);
            }
        }
        Ok(())
    }
}
