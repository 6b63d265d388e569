//! What a training run keeps on disk between steps: its working directory (`OUT.partial` until
//! the run completes), checkpoints (complete SavedModels, each with the `state.json` needed to
//! resume exactly), and the metrics log.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::output_dir::io_error as io;
use crate::train::mask::MaskSpec;
use crate::train::plateau::PlateauState;
use crate::train::trainer::{Metrics, WeightedMean};

/// File name of a checkpoint's resume state.
pub const STATE_FILE: &str = "state.json";
/// File name of the metrics log (JSON lines).
pub const METRICS_FILE: &str = "metrics.jsonl";
/// Folder of the checkpoints inside the working and the output directory.
pub const CHECKPOINTS: &str = "checkpoints";
/// Name of the best checkpoint (early stopping).
pub const BEST: &str = "best";

/// Where an unfinished run of `--out OUT` keeps its work: `OUT.partial`.
pub fn partial_dir(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    out.with_file_name(format!("{name}.partial"))
}

/// The order-relevant settings of a run; a resumed run must use the same ones to see the same
/// batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataOrder {
    /// Examples per batch.
    pub batch_size: usize,
    /// Shuffled each epoch.
    pub shuffle: bool,
    /// Shuffle seed.
    pub seed: u64,
    /// Number of training examples.
    pub examples: usize,
    /// The augmentation, in `--augment` form (none: not augmented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augmentation: Option<String>,
}

/// The best validation result so far (early stopping).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestRecord {
    /// The monitored metric (`val_loss`).
    pub monitor: String,
    /// Its best value.
    pub value: f64,
    /// The 1-based epoch that reached it.
    pub epoch: u64,
    /// All validation results of that epoch.
    pub validation: Metrics,
}

/// Everything needed to continue a run exactly where a checkpoint was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Format version of this file.
    pub format: u32,
    /// Epochs completed.
    pub epochs_done: u64,
    /// Batches completed in the epoch after `epochs_done` (mid-epoch checkpoints).
    pub batches_done: usize,
    /// Training steps completed.
    pub global_step: u64,
    /// The mask rules the run started with.
    pub mask: MaskSpec,
    /// The data order.
    pub order: DataOrder,
    /// Best validation result, where monitored.
    pub best: Option<BestRecord>,
    /// Epochs since the best one.
    pub epochs_since_best: u64,
    /// The batch-weighted sums of the current epoch's steps so far, so that a run resumed from a
    /// mid-epoch checkpoint reports the same epoch means as an uninterrupted one.
    #[serde(default)]
    pub epoch_so_far: WeightedMean,
    /// Where `--lr-schedule plateau` is (runs without it, and older states, have the default).
    #[serde(default)]
    pub plateau: PlateauState,
}

/// The checkpoints of a working directory.
pub struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    /// The checkpoints under `work/checkpoints`.
    pub fn in_dir(work: &Path) -> Checkpoints {
        Checkpoints { dir: work.join(CHECKPOINTS) }
    }

    /// The folder of the checkpoint taken after `global_step` steps.
    pub fn path_for(&self, global_step: u64) -> PathBuf {
        self.dir.join(format!("step-{global_step:09}"))
    }

    /// The folder of the best checkpoint.
    pub fn best(&self) -> PathBuf {
        self.dir.join(BEST)
    }

    /// Step checkpoints that are complete (have a state file), oldest first.
    pub fn complete(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("step-")))
            .filter(|p| p.join(STATE_FILE).is_file())
            .collect();
        found.sort();
        found
    }

    /// The newest complete checkpoint and its state.
    pub fn latest(&self) -> Result<Option<(PathBuf, TrainState)>> {
        match self.complete().pop() {
            None => Ok(None),
            Some(path) => Ok(Some((path.clone(), read_state(&path)?))),
        }
    }

    /// Removes the temporary folders of checkpoints whose writing was interrupted
    /// (`.step-N.tfload-tmp-PID`). Only call this while holding the run's lock.
    pub fn remove_unfinished(&self) -> Result<()> {
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tfload-tmp-") {
                let path = entry.path();
                log::info!("removing {}, an interrupted checkpoint", path.display());
                std::fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        Ok(())
    }

    /// Removes all but the newest `keep` step checkpoints.
    pub fn prune(&self, keep: usize) -> Result<()> {
        let complete = self.complete();
        let excess = complete.len().saturating_sub(keep.max(1));
        for old in &complete[..excess] {
            std::fs::remove_dir_all(old).map_err(io(old))?;
        }
        Ok(())
    }
}

/// Reads a checkpoint's state file.
pub fn read_state(checkpoint: &Path) -> Result<TrainState> {
    let path = checkpoint.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|e| Error::Output {
        path,
        problem: format!(
            "the resume state does not parse ({e}); remove this checkpoint folder to resume from the one before"
        ),
    })
}

/// Writes a checkpoint's state file.
pub fn write_state(checkpoint: &Path, state: &TrainState) -> Result<()> {
    let path = checkpoint.join(STATE_FILE);
    let text = serde_json::to_string_pretty(state).expect("state serializes");
    std::fs::write(&path, text).map_err(io(&path))
}

/// One line of the metrics log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LogLine {
    /// After a training step.
    Step {
        /// 1-based epoch.
        epoch: u64,
        /// 1-based global step.
        step: u64,
        /// Learning rate used.
        lr: f32,
        /// Loss and metrics of this batch.
        metrics: Metrics,
    },
    /// After an epoch.
    Epoch {
        /// 1-based epoch.
        epoch: u64,
        /// Global steps done.
        step: u64,
        /// Batch-weighted means over the epoch's training batches.
        train: Metrics,
        /// Validation results, where there is validation data.
        validation: Option<Metrics>,
        /// Learning rate at the epoch's last step.
        lr: f32,
        /// Training examples per second over the epoch's steps.
        samples_per_sec: f64,
        /// Wall time of the epoch's training steps in seconds (validation not included).
        seconds: f64,
    },
}

impl LogLine {
    fn step(&self) -> u64 {
        match self {
            LogLine::Step { step, .. } | LogLine::Epoch { step, .. } => *step,
        }
    }
}

/// The metrics log of a run, appended line by line.
pub struct MetricsLog {
    writer: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
}

impl MetricsLog {
    /// Opens the log in `work`, keeping only the lines up to `global_step` (a resumed run redoes
    /// the steps after its checkpoint).
    pub fn open(work: &Path, global_step: u64) -> Result<MetricsLog> {
        let path = work.join(METRICS_FILE);
        let kept: Vec<String> = match std::fs::File::open(&path) {
            Ok(file) => std::io::BufReader::new(file)
                .lines()
                .map_while(|line| line.ok())
                .filter(|line| serde_json::from_str::<LogLine>(line).is_ok_and(|l| l.step() <= global_step))
                .collect(),
            Err(_) => Vec::new(),
        };
        let file = std::fs::File::create(&path).map_err(io(&path))?;
        let mut writer = std::io::BufWriter::new(file);
        for line in kept {
            writeln!(writer, "{line}").map_err(io(&path))?;
        }
        Ok(MetricsLog { writer, path })
    }

    /// Appends a line.
    pub fn write(&mut self, line: &LogLine) -> Result<()> {
        let text = serde_json::to_string(line).expect("log line serializes");
        writeln!(self.writer, "{text}").map_err(io(&self.path))
    }

    /// Flushes to disk (at epoch ends and checkpoints).
    pub fn flush(&mut self) -> Result<()> {
        self.writer.flush().map_err(io(&self.path))
    }
}
