//! The cluster of a multi-worker run, as TensorFlow's `MultiWorkerMirroredStrategy` users write
//! it: `TF_CONFIG` (`{"cluster": {"chief": [...], "worker": [...]}, "task": {"type", "index"}}`)
//! or `--cluster host:port,host:port --task-index I` (all tasks `worker`, task 0 the chief).
//! Ranks follow TensorFlow: the chief is rank 0, `worker:i` is rank `i + number of chief tasks`.
//! Without a `chief` job, `worker:0` is the chief (it writes the outputs).

use std::collections::{BTreeMap, HashSet};

use prost::Message;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::proto;

/// A job of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// The `chief` job (at most one task).
    Chief,
    /// The `worker` job.
    Worker,
}

impl Job {
    /// TensorFlow's job name.
    pub fn name(self) -> &'static str {
        match self {
            Job::Chief => "chief",
            Job::Worker => "worker",
        }
    }
}

/// The tasks of a cluster and which one this process is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Where it came from (`TF_CONFIG`, `--cluster`), for messages.
    pub origin: String,
    /// Addresses of the `chief` job (0 or 1).
    pub chief: Vec<String>,
    /// Addresses of the `worker` job.
    pub worker: Vec<String>,
    /// This task's job.
    pub job: Job,
    /// This task's index in its job.
    pub index: usize,
}

#[derive(Deserialize)]
struct TfConfig {
    cluster: BTreeMap<String, Vec<String>>,
    task: TfTask,
}

#[derive(Deserialize)]
struct TfTask {
    #[serde(rename = "type")]
    job: String,
    index: usize,
}

impl ClusterSpec {
    /// The cluster from `TF_CONFIG`'s JSON text.
    pub fn from_tf_config(text: &str) -> Result<ClusterSpec> {
        let fail = |problem: String| Error::ClusterConfig { origin: "TF_CONFIG".into(), problem };
        let config: TfConfig = serde_json::from_str(text).map_err(|e| {
            fail(format!(
                "is not valid: {e}. Expected {{\"cluster\": {{\"chief\": [\"host:port\"], \"worker\": [\"host:port\", ...]}}, \"task\": {{\"type\": \"worker\", \"index\": 0}}}}"
            ))
        })?;
        let mut chief = Vec::new();
        let mut worker = Vec::new();
        for (name, tasks) in config.cluster {
            match name.as_str() {
                "chief" => chief = tasks,
                "worker" => worker = tasks,
                other => {
                    return Err(fail(format!(
                        "has a `{other}` job; tfload trains data-parallel with all-reduce, on `chief` and `worker` tasks only (no parameter servers or evaluators)"
                    )))
                }
            }
        }
        let job = match config.task.job.as_str() {
            "chief" => Job::Chief,
            "worker" => Job::Worker,
            other => return Err(fail(format!("gives this task the type `{other}`; it must be `chief` or `worker`"))),
        };
        let spec = ClusterSpec { origin: "TF_CONFIG".into(), chief, worker, job, index: config.task.index };
        spec.validate()?;
        Ok(spec)
    }

    /// The cluster from `--cluster` (comma-separated addresses, all `worker` tasks) and
    /// `--task-index`.
    pub fn from_addresses(list: &str, index: usize) -> Result<ClusterSpec> {
        let worker: Vec<String> = list.split(',').map(|a| a.trim().to_string()).collect();
        let spec = ClusterSpec { origin: "--cluster".into(), chief: Vec::new(), worker, job: Job::Worker, index };
        spec.validate()?;
        Ok(spec)
    }

    fn fail(&self, problem: String) -> Error {
        Error::ClusterConfig { origin: self.origin.clone(), problem }
    }

    fn validate(&self) -> Result<()> {
        if self.chief.len() > 1 {
            return Err(self.fail(format!("lists {} chief tasks; there can be at most one", self.chief.len())));
        }
        if self.size() == 0 {
            return Err(self.fail("lists no tasks".into()));
        }
        let own = self.tasks_of(self.job);
        if self.index >= own.len() {
            return Err(self.fail(format!(
                "has no task {}:{} (this task): the `{}` job has {} task(s), indices 0..{}",
                self.job.name(),
                self.index,
                self.job.name(),
                own.len(),
                own.len().saturating_sub(1)
            )));
        }
        let mut seen = HashSet::new();
        for (rank, address) in self.addresses().iter().enumerate() {
            check_address(address)
                .map_err(|why| self.fail(format!("lists `{address}` ({}): {why}", self.task_name(rank))))?;
            if !seen.insert(address.to_ascii_lowercase()) {
                return Err(
                    self.fail(format!("lists the address `{address}` twice; every task needs its own host:port"))
                );
            }
        }
        Ok(())
    }

    fn tasks_of(&self, job: Job) -> &[String] {
        match job {
            Job::Chief => &self.chief,
            Job::Worker => &self.worker,
        }
    }

    /// Number of tasks (the all-reduce group size).
    pub fn size(&self) -> usize {
        self.chief.len() + self.worker.len()
    }

    /// This task's rank: 0 for the chief, `index + chief tasks` for a worker.
    pub fn rank(&self) -> usize {
        match self.job {
            Job::Chief => self.index,
            Job::Worker => self.index + self.chief.len(),
        }
    }

    /// Whether this task writes the run's outputs (rank 0).
    pub fn is_chief(&self) -> bool {
        self.rank() == 0
    }

    /// Every task's address, by rank.
    pub fn addresses(&self) -> Vec<&str> {
        self.chief.iter().chain(&self.worker).map(String::as_str).collect()
    }

    /// `job:index at address` of the task of `rank`.
    pub fn task_name(&self, rank: usize) -> String {
        let (job, index) =
            if rank < self.chief.len() { (Job::Chief, rank) } else { (Job::Worker, rank - self.chief.len()) };
        format!("{}:{index} at {}", job.name(), self.addresses().get(rank).copied().unwrap_or("?"))
    }

    /// This task, as [`ClusterSpec::task_name`] names it.
    pub fn me(&self) -> String {
        self.task_name(self.rank())
    }

    /// Every task, for messages.
    pub fn describe(&self) -> String {
        (0..self.size()).map(|rank| self.task_name(rank)).collect::<Vec<_>>().join(", ")
    }

    /// The collective group leader's device (the chief, or `worker:0`), which
    /// `ConfigProto.experimental.collective_group_leader` must name on every task.
    pub fn leader(&self) -> String {
        let job = if self.chief.is_empty() { Job::Worker } else { Job::Chief };
        format!("/job:{}/replica:0/task:0", job.name())
    }

    /// The devices this task's sessions use, so that creating one does not wait for every peer.
    pub fn device_filter(&self) -> String {
        format!("/job:{}/task:{}", self.job.name(), self.index)
    }

    /// The session settings every session of this task needs (leader and device filter), on top
    /// of `base`.
    pub fn session_config(&self, base: proto::ConfigProto) -> proto::ConfigProto {
        proto::ConfigProto {
            device_filters: vec![self.device_filter()],
            experimental: Some(proto::config_proto::Experimental { collective_group_leader: self.leader() }),
            ..base
        }
    }

    /// This task's serialized `tensorflow.ServerDef` (gRPC, the whole cluster), its default
    /// session config `session`.
    pub fn server_def(&self, session: proto::ConfigProto) -> Vec<u8> {
        let job = |job: Job| proto::JobDef {
            name: job.name().to_string(),
            tasks: self.tasks_of(job).iter().enumerate().map(|(i, a)| (i as i32, a.clone())).collect(),
        };
        let jobs = [Job::Chief, Job::Worker].into_iter().filter(|j| !self.tasks_of(*j).is_empty()).map(job).collect();
        let own = &self.tasks_of(self.job)[self.index];
        proto::ServerDef {
            cluster: Some(proto::ClusterDef { job: jobs }),
            job_name: self.job.name().to_string(),
            task_index: self.index as i32,
            default_session_config: Some(session),
            protocol: "grpc".to_string(),
            port: port_of(own).map_or(0, i32::from),
        }
        .encode_to_vec()
    }
}

/// Why `address` is not `host:port`, if it is not.
fn check_address(address: &str) -> std::result::Result<(), &'static str> {
    let Some((host, _)) = address.rsplit_once(':') else {
        return Err("not host:port");
    };
    if host.is_empty() {
        return Err("no host before the port");
    }
    match port_of(address) {
        Some(port) if port > 0 => Ok(()),
        _ => Err("the port is not a number in 1..65535"),
    }
}

fn port_of(address: &str) -> Option<u16> {
    address.rsplit_once(':').and_then(|(_, port)| port.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_config_with_a_chief_ranks_workers_after_it() {
        let text =
            r#"{"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]}, "task": {"type": "worker", "index": 1}}"#;
        let spec = ClusterSpec::from_tf_config(text).unwrap();
        assert_eq!((spec.size(), spec.rank(), spec.is_chief()), (3, 2, false));
        assert_eq!(spec.leader(), "/job:chief/replica:0/task:0");
        assert_eq!(spec.device_filter(), "/job:worker/task:1");
        assert_eq!(spec.me(), "worker:1 at c:3");
    }

    #[test]
    fn flags_make_worker_zero_the_chief_and_leader() {
        let spec = ClusterSpec::from_addresses("localhost:5000,localhost:5001", 0).unwrap();
        assert!(spec.is_chief());
        assert_eq!(spec.leader(), "/job:worker/replica:0/task:0");
        let def = proto::ServerDef::decode(spec.server_def(proto::ConfigProto::default()).as_slice()).unwrap();
        assert_eq!((def.job_name.as_str(), def.task_index, def.port), ("worker", 0, 5000));
        assert_eq!(def.cluster.unwrap().job[0].tasks[&1], "localhost:5001");
    }

    #[test]
    fn bad_configurations_are_named() {
        let err = |r: Result<ClusterSpec>| r.unwrap_err().to_string();
        assert!(err(ClusterSpec::from_addresses("a:1,b:2", 2)).contains("has no task worker:2"));
        assert!(err(ClusterSpec::from_addresses("a:1,a:1", 0)).contains("twice"));
        assert!(err(ClusterSpec::from_addresses("a:1,b", 0)).contains("not host:port"));
        assert!(err(ClusterSpec::from_addresses("a:1,b:x", 0)).contains("port is not a number"));
        assert!(err(ClusterSpec::from_tf_config("{not json")).contains("TF_CONFIG) is not valid"));
        let ps = r#"{"cluster": {"worker": ["a:1"], "ps": ["b:2"]}, "task": {"type": "worker", "index": 0}}"#;
        assert!(err(ClusterSpec::from_tf_config(ps)).contains("`ps` job"));
        let eval = r#"{"cluster": {"worker": ["a:1"]}, "task": {"type": "evaluator", "index": 0}}"#;
        assert!(err(ClusterSpec::from_tf_config(eval)).contains("`evaluator`"));
    }
}
