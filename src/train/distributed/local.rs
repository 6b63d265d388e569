//! A cluster on this machine, for trying multi-worker training without machines: N child
//! processes of the same program, each given `--cluster` (free loopback ports) and its
//! `--task-index`, their stderr prefixed with `[task I]`. The chief's stdout is passed through as
//! it is (so `--json` output stays parseable). When one task fails, the others get a grace period
//! to notice (a peer's death aborts their collective at once) and are killed after it.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long the other tasks may take to exit by themselves after one failed.
pub const GRACE: Duration = Duration::from_secs(20);

/// `n` loopback addresses on ports that were free a moment ago.
pub fn free_loopback_addresses(n: usize) -> Result<Vec<String>> {
    // All bound at once, so that no two are the same port; released just before the tasks start.
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|source| Error::Io { path: "127.0.0.1:0".into(), source })?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| format!("localhost:{}", a.port())))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|source| Error::Io { path: "127.0.0.1:0".into(), source })
}

/// Runs `program args --cluster ... --task-index I` for I in 0..n and waits for all of them;
/// `Ok` when every task succeeded, else the first failure (by time).
pub fn run_local_workers(program: &Path, args: &[OsString], n: usize) -> Result<()> {
    let addresses = free_loopback_addresses(n)?;
    let cluster = addresses.join(",");
    let mut children = Vec::with_capacity(n);
    for (index, address) in addresses.iter().enumerate() {
        let mut command = Command::new(program);
        command
            .args(args)
            .args(["--cluster", &cluster, "--task-index", &index.to_string()])
            .env_remove("TF_CONFIG")
            .stdin(Stdio::null())
            .stdout(if index == 0 { Stdio::inherit() } else { Stdio::piped() })
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|source| Error::Io { path: program.to_path_buf(), source })?;
        eprintln!("[launcher] task {index}: pid {} at {address}", child.id());
        prefix_output(&mut child, index);
        children.push(child);
    }
    wait_all(children)
}

/// Copies the child's piped stdout and stderr to ours, each line prefixed with its task.
fn prefix_output(child: &mut Child, index: usize) {
    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(std::result::Result::ok) {
                let _ = writeln!(std::io::stdout(), "[task {index}] {line}");
            }
        });
    }
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(std::result::Result::ok) {
                let _ = writeln!(std::io::stderr(), "[task {index}] {line}");
            }
        });
    }
}

fn wait_all(mut children: Vec<Child>) -> Result<()> {
    let mut status: Vec<Option<ExitStatus>> = vec![None; children.len()];
    let mut first_failure: Option<(usize, ExitStatus)> = None;
    let mut deadline: Option<Instant> = None;
    while status.iter().any(Option::is_none) {
        for (index, child) in children.iter_mut().enumerate() {
            if status[index].is_some() {
                continue;
            }
            if let Ok(Some(exit)) = child.try_wait() {
                status[index] = Some(exit);
                if !exit.success() && first_failure.is_none() {
                    first_failure = Some((index, exit));
                    deadline = Some(Instant::now() + GRACE);
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            for (index, child) in children.iter_mut().enumerate() {
                if status[index].is_none() {
                    eprintln!(
                        "[launcher] task {index} still runs {} s after a task failed: killing it",
                        GRACE.as_secs()
                    );
                    let _ = child.kill();
                }
            }
            deadline = None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match first_failure {
        None => Ok(()),
        Some((index, exit)) => Err(Error::LocalWorker { index, problem: describe(exit) }),
    }
}

fn describe(exit: ExitStatus) -> String {
    match (exit.code(), exit.signal()) {
        (Some(code), _) => format!("exited with status {code} (its messages are above, prefixed [task N])"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "ended abnormally".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_addresses_are_distinct_loopback_ports() {
        let addresses = free_loopback_addresses(3).unwrap();
        assert_eq!(addresses.len(), 3);
        assert!(addresses.iter().all(|a| a.starts_with("localhost:")));
        assert_ne!(addresses[0], addresses[1]);
    }

    #[test]
    fn a_failing_task_is_reported_by_index() {
        let sh = Path::new("/bin/sh");
        // `sh -c SCRIPT --cluster L --task-index I`: $3 is the index; task 1 fails.
        let args: Vec<OsString> = ["-c", "test \"$3\" != 1"].iter().map(OsString::from).collect();
        let error = run_local_workers(sh, &args, 3).unwrap_err().to_string();
        assert!(error.contains("local worker 1 exited with status 1"), "{error}");
        assert!(run_local_workers(sh, &[OsString::from("-c"), OsString::from("true")], 2).is_ok());
    }
}
