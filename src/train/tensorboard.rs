//! TensorBoard event files: scalars of a training run written as Keras 3's `TensorBoard`
//! callback writes them, so tfload runs sit beside Keras runs in the same TensorBoard.
//!
//! The event files are written by [`EventWriter`](crate::formats::events::EventWriter).
//!
//! [`TensorBoard`] is a [`TrainCallback`] writing, under its log folder:
//!
//! | run | tag | step |
//! |---|---|---|
//! | `train` | `batch_loss`, `batch_<metric>` | global step (1-based) |
//! | `train` | `batch_learning_rate`, `batch_samples_per_second` | global step |
//! | `train` | `epoch_loss`, `epoch_<metric>`, `epoch_learning_rate`, `epoch_samples_per_second` | epoch (0-based) |
//! | `validation` | `epoch_loss`, `epoch_<metric>` | epoch (0-based) |
//! | `validation` | `evaluation_loss_vs_iterations`, `evaluation_<metric>_vs_iterations` | global step |
//!
//! As in Keras 3, `batch_*` values are the running means over the epoch so far (each batch's own
//! loss is in `metrics.jsonl`), and epochs count from 0. The learning-rate and samples-per-second
//! batch tags are tfload's additions. A resumed run first writes a `SessionLog.START` event at the
//! step it resumes from, which makes TensorBoard drop the steps an interrupted run logged after
//! its last checkpoint.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::formats::events::EventWriter;
use crate::train::callbacks::{Control, EpochReport, RunPlan, StepReport, TrainCallback};

/// A training callback writing Keras-style scalars to `LOGDIR/train` and `LOGDIR/validation`.
///
/// A callback cannot fail a run, so the first write error stops the logging (with a warning)
/// and is returned by [`TensorBoard::finish`].
pub struct TensorBoard {
    logdir: PathBuf,
    train: Option<EventWriter>,
    validation: Option<EventWriter>,
    global_step: u64,
    lr: f32,
    error: Option<Error>,
}

impl TensorBoard {
    /// Writes the run's events under `logdir`. The training run's file is created at once, so
    /// that a folder that cannot be written fails before training starts; the validation run's
    /// when there is something to write.
    pub fn create(logdir: &Path) -> Result<TensorBoard> {
        let train = EventWriter::create(&logdir.join("train"))?;
        Ok(TensorBoard {
            logdir: logdir.to_path_buf(),
            train: Some(train),
            validation: None,
            global_step: 0,
            lr: 0.0,
            error: None,
        })
    }

    /// Flushes the files; the first error met while writing, if any.
    pub fn finish(mut self) -> Result<()> {
        for writer in [self.train.as_mut(), self.validation.as_mut()].into_iter().flatten() {
            if let Err(error) = writer.flush() {
                self.error.get_or_insert(error);
            }
        }
        self.error.map_or(Ok(()), Err)
    }

    /// Runs `write` on the writer of `run` (created on first use) unless an error stopped logging.
    fn with(&mut self, run: &str, write: impl FnOnce(&mut EventWriter) -> Result<()>) {
        if self.error.is_some() {
            return;
        }
        let slot = if run == "train" { &mut self.train } else { &mut self.validation };
        let result = match slot {
            Some(writer) => write(writer),
            None => EventWriter::create(&self.logdir.join(run)).and_then(|writer| write(slot.insert(writer))),
        };
        if let Err(error) = result {
            log::warn!("TensorBoard logging stopped: {error}");
            self.error = Some(error);
        }
    }
}

fn scalars<'a>(
    writer: &mut EventWriter,
    step: u64,
    values: impl IntoIterator<Item = (String, f64)> + 'a,
) -> Result<()> {
    values.into_iter().try_for_each(|(tag, value)| writer.scalar(&tag, step, value))
}

impl TrainCallback for TensorBoard {
    fn on_begin(&mut self, plan: &RunPlan) {
        self.global_step = plan.global_step;
        self.with("train", |writer| match plan.global_step {
            0 => Ok(()),
            done => writer.restart_at(done + 1),
        });
    }

    fn on_step(&mut self, report: &StepReport) -> Control {
        (self.global_step, self.lr) = (report.global_step, report.lr);
        let extra = [
            ("learning_rate".to_string(), f64::from(report.lr)),
            ("samples_per_second".to_string(), report.samples_per_sec),
        ];
        let values = report.running.clone().into_iter().chain(extra).map(|(k, v)| (format!("batch_{k}"), v));
        self.with("train", |writer| scalars(writer, report.global_step, values));
        Control::Continue
    }

    fn on_epoch(&mut self, report: &EpochReport) -> Control {
        let step = report.epoch - 1;
        let extra = [
            ("learning_rate".to_string(), f64::from(self.lr)),
            ("samples_per_second".to_string(), report.samples_per_sec),
        ];
        let values = report.train.clone().into_iter().chain(extra).map(|(k, v)| (format!("epoch_{k}"), v));
        self.with("train", |writer| scalars(writer, step, values).and_then(|()| writer.flush()));
        if let Some(validation) = &report.validation {
            let global_step = self.global_step;
            self.with("validation", |writer| {
                scalars(writer, step, validation.iter().map(|(k, v)| (format!("epoch_{k}"), *v)))?;
                scalars(
                    writer,
                    global_step,
                    validation.iter().map(|(k, v)| (format!("evaluation_{k}_vs_iterations"), *v)),
                )?;
                writer.flush()
            });
        }
        Control::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::events::FILE_VERSION;
    use crate::formats::tfrecord::{Compression, OnCorrupt, Shard};
    use crate::proto::{event, session_log, summary, Event};
    use crate::train::callbacks::Callbacks;
    use crate::train::feature_cache::FeatureCacheUse;
    use crate::train::Metrics;
    use prost::Message;

    fn read_events(path: &Path) -> Vec<Event> {
        let mut events = Vec::new();
        Shard::open(path, Compression::None, OnCorrupt::Fail, |_, _, data| {
            events.push(Event::decode(data).unwrap());
            Ok(())
        })
        .unwrap();
        events
    }

    fn only_file(dir: &Path) -> PathBuf {
        let files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        files[0].clone()
    }

    fn simple(event: &Event) -> (String, i64, f32) {
        let Some(event::What::Summary(summary)) = &event.what else { panic!("{event:?}") };
        let Some(summary::value::Value::SimpleValue(v)) = summary.value[0].value else { panic!() };
        (summary.value[0].tag.clone(), event.step, v)
    }

    fn metrics(pairs: &[(&str, f64)]) -> Metrics {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn steps_and_epochs_go_to_their_runs_with_keras_tags() {
        let dir = tempfile::tempdir().unwrap();
        let mut board = TensorBoard::create(dir.path()).unwrap();
        let plan = RunPlan {
            first_epoch: 1,
            epochs: 1,
            steps_per_epoch: 1,
            global_step: 0,
            trainable: 1,
            mask_size: 1,
            work_dir: dir.path().into(),
            feature_cache: FeatureCacheUse::Off { reason: String::new() },
            frozen_base_step: None,
        };
        board.on_begin(&plan);
        let running = metrics(&[("accuracy", 0.5), ("loss", 2.0)]);
        let step = StepReport {
            epoch: 1,
            step_in_epoch: 1,
            global_step: 1,
            batch: running.clone(),
            running,
            lr: 0.25,
            samples_per_sec: 8.0,
        };
        board.on_step(&step);
        let epoch = EpochReport {
            epoch: 1,
            train: metrics(&[("loss", 2.0)]),
            validation: Some(metrics(&[("loss", 3.0)])),
            samples_per_sec: 8.0,
            best: false,
        };
        board.on_epoch(&epoch);
        board.finish().unwrap();

        let train = read_events(&only_file(&dir.path().join("train")));
        assert_eq!(train[0].what, Some(event::What::FileVersion(FILE_VERSION.into())));
        let values: Vec<_> = train[1..].iter().map(simple).collect();
        let expected = [
            ("batch_accuracy", 1, 0.5),
            ("batch_loss", 1, 2.0),
            ("batch_learning_rate", 1, 0.25),
            ("batch_samples_per_second", 1, 8.0),
            ("epoch_loss", 0, 2.0),
            ("epoch_learning_rate", 0, 0.25),
            ("epoch_samples_per_second", 0, 8.0),
        ];
        assert_eq!(values, expected.map(|(t, s, v)| (t.to_string(), s, v)));
        let validation = read_events(&only_file(&dir.path().join("validation")));
        let values: Vec<_> = validation[1..].iter().map(simple).collect();
        assert_eq!(values, [("epoch_loss".to_string(), 0, 3.0), ("evaluation_loss_vs_iterations".to_string(), 1, 3.0)]);
    }

    #[test]
    fn a_resumed_run_marks_its_restart_step() {
        let dir = tempfile::tempdir().unwrap();
        let mut board = TensorBoard::create(dir.path()).unwrap();
        board.on_begin(&RunPlan {
            first_epoch: 2,
            epochs: 3,
            steps_per_epoch: 5,
            global_step: 5,
            trainable: 1,
            mask_size: 1,
            work_dir: dir.path().into(),
            feature_cache: FeatureCacheUse::Off { reason: String::new() },
            frozen_base_step: None,
        });
        board.finish().unwrap();
        let events = read_events(&only_file(&dir.path().join("train")));
        assert_eq!(events[1].step, 6);
        assert!(
            matches!(&events[1].what, Some(event::What::SessionLog(log)) if log.status == session_log::SessionStatus::Start as i32)
        );
    }

    #[test]
    fn an_unwritable_logdir_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let error = TensorBoard::create(&file).err().expect("a file is no folder").to_string();
        assert!(error.contains("file/train"), "{error}");
    }

    struct Stopper;
    impl TrainCallback for Stopper {
        fn on_epoch(&mut self, _report: &EpochReport) -> Control {
            Control::Stop
        }
    }

    #[test]
    fn callbacks_fan_out_and_any_can_stop() {
        let (mut a, mut b) = (crate::train::callbacks::Silent, Stopper);
        let mut both = Callbacks(vec![&mut a, &mut b]);
        let report =
            EpochReport { epoch: 1, train: Metrics::new(), validation: None, samples_per_sec: 1.0, best: false };
        assert_eq!(both.on_epoch(&report), Control::Stop);
    }
}
