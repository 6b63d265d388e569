//! Data-parallel training on TensorFlow's own distributed runtime: every task of a cluster
//! (configured as `MultiWorkerMirroredStrategy` users configure one, see [`cluster`]) starts a
//! TensorFlow gRPC server, loads the model into a session on it and calls the export's
//! `train_step_allreduce` on its shard of each global batch; one `CollectiveReduceV2` per step
//! makes the gradients, the loss and the metrics the cluster's means, so every task applies the
//! same update and the run equals single-process training on the global batch.
//!
//! What this module adds around the step: the server ([`ClusterWorker::start`]), a start-up
//! handshake that checks that every task runs the same settings on the same data (so that all
//! call the step equally often) under a watchdog of its own (TensorFlow retries an unreachable
//! leader forever), and errors that say which task failed and how to resume. The epoch loop is
//! `fit`'s; only the chief writes. [`local`] starts N tasks on this machine.

pub mod cluster;
pub mod local;

use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::Duration;

use prost::Message;
use tensorflow::{DataType, Graph, Output, Session, SessionOptions, SessionRunArgs, Tensor};

use crate::error::{Error, Result};
use crate::proto;
use crate::session::call::Tensors;
use crate::session::loaded_model::SessionConfig;
use crate::session::server::Server;
use crate::tensor::TensorData;

pub use cluster::{ClusterSpec, Job};

/// The export's all-reducing train step (contract extension `allreduce`).
pub const TRAIN_STEP_ALLREDUCE: &str = "train_step_allreduce";
/// The collective group of the training step (every task).
const STEP_GROUP_KEY: i32 = 1;
/// The collective group of the handshakes (every task, apart from the step's).
const HANDSHAKE_GROUP_KEY: i32 = 2;
/// Start-up timeout when none is given.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// This process's task of a cluster, its TensorFlow server started.
#[derive(Debug)]
pub struct ClusterWorker {
    spec: ClusterSpec,
    server: Server,
    startup_timeout: Duration,
}

impl ClusterWorker {
    /// Starts this task's TensorFlow server. `startup_timeout` bounds how long the tasks may take
    /// to find each other and agree (see [`ClusterWorker::agree`]).
    pub fn start(spec: ClusterSpec, startup_timeout: Duration) -> Result<ClusterWorker> {
        crate::session::libtensorflow::check_version()?;
        let server_def = spec.server_def(spec.session_config(proto::ConfigProto::default()));
        let server = Server::start(&server_def, &format!("starting the TensorFlow server of task {}", spec.me()))?;
        log::info!("task {} (rank {} of {}): server {}", spec.me(), spec.rank(), spec.size(), server.target());
        Ok(ClusterWorker { spec, server, startup_timeout })
    }

    /// The cluster and this task.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// This task's rank (0: the chief).
    pub fn rank(&self) -> usize {
        self.spec.rank()
    }

    /// Number of tasks.
    pub fn size(&self) -> usize {
        self.spec.size()
    }

    /// Whether this task writes the outputs.
    pub fn is_chief(&self) -> bool {
        self.spec.is_chief()
    }

    /// Options for a session on this task's server: `session`'s thread pools plus the collective
    /// group leader and this task's device filter.
    pub fn session_options(&self, session: SessionConfig) -> Result<SessionOptions> {
        let mut options = SessionOptions::new();
        options.set_target(self.server.target()).map_err(|e| Error::Server {
            what: format!("task {}: the server target", self.spec.me()),
            message: e.to_string(),
        })?;
        let config = self.spec.session_config(session.config_message()).encode_to_vec();
        options
            .set_config(&config)
            .map_err(|status| Error::from_tensorflow("setting the cluster session options".to_string(), &status))?;
        Ok(options)
    }

    /// The collective inputs `train_step_allreduce` takes on this cluster.
    pub fn step_inputs(&self) -> Tensors {
        let scalar = |v: i32| TensorData::Int32(ndarray::arr0(v).into_dyn());
        Tensors::from([
            ("group_size".to_string(), scalar(self.size() as i32)),
            ("group_key".to_string(), scalar(STEP_GROUP_KEY)),
            ("instance_key".to_string(), scalar(1)),
        ])
    }

    /// Checks that every task of the cluster has the same `facts` (name, value), under the
    /// start-up watchdog: a task that is not up within the timeout ends this process with
    /// [`Error::StartupTimeout`]. `instance` tells apart the handshakes of one run (start, end).
    pub fn agree(&self, facts: &[(&str, f64)], instance: i32, waiting: &str) -> Result<()> {
        let watchdog = Watchdog::arm(
            self.startup_timeout,
            Error::StartupTimeout {
                task: self.spec.me(),
                seconds: self.startup_timeout.as_secs(),
                waiting: waiting.to_string(),
                tasks: self.spec.describe(),
            },
        );
        let range = self.max_and_min(facts, instance).map_err(|error| self.explain(error))?;
        drop(watchdog);
        for (i, (field, mine)) in facts.iter().enumerate() {
            let (highest, lowest) = (range[i], -range[facts.len() + i]);
            if highest != lowest {
                return Err(Error::ClusterMismatch {
                    task: self.spec.me(),
                    field: (*field).to_string(),
                    mine: mine.to_string(),
                    lowest: lowest.to_string(),
                    highest: highest.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Runs one `CollectiveReduceV2` (merge `Max`) of `[facts, -facts]` over every task in a
    /// session of its own: the cluster's maxima, then the negated minima.
    fn max_and_min(&self, facts: &[(&str, f64)], instance: i32) -> Result<Vec<f64>> {
        let values: Vec<f64> = facts.iter().map(|f| f.1).chain(facts.iter().map(|f| -f.1)).collect();
        let mut graph = Graph::new();
        let input =
            constant(&mut graph, "values", Tensor::new(&[values.len() as u64]).with_values(&values).map_err(tf)?)
                .map_err(tf)?;
        let size = constant(&mut graph, "group_size", Tensor::from(self.size() as i32)).map_err(tf)?;
        let key = constant(&mut graph, "group_key", Tensor::from(HANDSHAKE_GROUP_KEY)).map_err(tf)?;
        let instance = constant(&mut graph, "instance_key", Tensor::from(instance)).map_err(tf)?;
        let reduce = {
            let mut op = graph.new_operation("CollectiveReduceV2", "handshake").map_err(tf)?;
            for input in [&input, &size, &key, &instance] {
                op.add_input(Output { operation: input.clone(), index: 0 });
            }
            op.add_input_list(&[]);
            op.set_attr_type("T", DataType::Double).map_err(tf)?;
            op.set_attr_string("merge_op", "Max").map_err(tf)?;
            op.set_attr_string("final_op", "Id").map_err(tf)?;
            op.set_attr_float("timeout_seconds", self.startup_timeout.as_secs_f32()).map_err(tf)?;
            op.finish().map_err(tf)?
        };
        let session = Session::new(&self.session_options(SessionConfig::default())?, &graph).map_err(tf)?;
        let mut run = SessionRunArgs::new();
        let token = run.request_fetch(&reduce, 0);
        session.run(&mut run).map_err(tf)?;
        let out: Tensor<f64> = run.fetch(token).map_err(tf)?;
        Ok(out.to_vec())
    }

    /// `error`, from a step or a handshake, as a [`Error::Collective`] naming the peer and what
    /// happened when it is a collective failure; other errors unchanged.
    pub fn explain(&self, error: Error) -> Error {
        let Error::TensorFlow { message, .. } = &error else {
            return error;
        };
        let peer = self.peer_named_in(message);
        let resume = "A collective failure leaves every task unusable: stop all tasks, then start the same command on every task with --resume to continue from the chief's last checkpoint";
        let (what, advice) = if message.contains("is joining a group with size") || message.contains("group size") {
            (
                "the tasks disagree on the cluster's size (a group-size mismatch)".to_string(),
                "Give every task the same cluster (--cluster list or TF_CONFIG), then start them all again",
            )
        } else if message.contains("timed out") || message.contains("DeadlineExceeded") {
            let what = format!(
                "{} did not take its step within the all-reduce timeout (it is stalled or much slower; the timeout is the export's `allreduce.timeout_seconds`)",
                peer.clone().unwrap_or_else(|| "a peer task".into())
            );
            (what, resume)
        } else if [
            "aborted",
            "Socket closed",
            "Connection reset",
            "UNAVAILABLE",
            "Connection refused",
            "failed to connect",
        ]
        .iter()
        .any(|needle| message.contains(needle))
        {
            let what = format!(
                "{} left the cluster (it died, was killed or lost its network)",
                peer.unwrap_or_else(|| "a peer task".into())
            );
            (what, resume)
        } else {
            return error;
        };
        let short: String = message.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(400).collect();
        Error::Collective { task: self.spec.me(), what, message: short, advice: advice.to_string() }
    }

    /// The other task whose address (or port, for loopback clusters) `message` mentions.
    fn peer_named_in(&self, message: &str) -> Option<String> {
        let addresses = self.spec.addresses();
        (0..self.size()).filter(|rank| *rank != self.rank()).find_map(|rank| {
            let address = addresses[rank];
            let port = address.rsplit_once(':').map(|(_, p)| format!(":{p}"))?;
            (message.contains(address) || message.contains(&port))
                .then(|| format!("task {}", self.spec.task_name(rank)))
        })
    }
}

/// A failed graph edit or run of the handshake as an error.
fn tf<E: Into<tensorflow::Status>>(status: E) -> Error {
    Error::from_tensorflow("the start-up handshake".to_string(), &status.into())
}

fn constant<T: tensorflow::TensorType>(
    graph: &mut Graph,
    name: &str,
    value: Tensor<T>,
) -> std::result::Result<tensorflow::Operation, tensorflow::Status> {
    let mut op = graph.new_operation("Const", name)?;
    op.set_attr_type("dtype", T::data_type())?;
    op.set_attr_tensor("value", value)?;
    op.finish()
}

/// Ends the process with an error unless dropped in time: the one bound on a TensorFlow call
/// that cannot be cancelled (a collective waiting for an unreachable leader retries forever).
struct Watchdog {
    disarm: Sender<()>,
}

impl Watchdog {
    fn arm(timeout: Duration, error: Error) -> Watchdog {
        let (disarm, armed) = channel::<()>();
        std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = armed.recv_timeout(timeout) {
                eprintln!("error: {error}");
                std::process::exit(EXIT_STARTUP_TIMEOUT);
            }
        });
        Watchdog { disarm }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.disarm.send(());
    }
}

/// The exit status of a task ended by the start-up watchdog.
pub const EXIT_STARTUP_TIMEOUT: i32 = 3;
