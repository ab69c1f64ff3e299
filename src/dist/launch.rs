//! `--nproc-per-node N`: starts N worker processes of this same command on this machine with torchrun's variables
//! set, and watches them. When one fails (an error, a signal, a kill) the others are stopped, so a run never hangs
//! on a dead peer; the launcher exits with the first failure's status (128 + signal for a signal, as a shell).

use super::env::VARS;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

/// Where the workers of this machine sit in the whole group.
#[derive(Debug, Clone)]
pub struct Launch {
    pub nproc_per_node: usize,
    pub nnodes: usize,
    pub node_rank: usize,
    pub master_addr: Option<String>,
    pub master_port: Option<u16>,
}

/// The launcher's own options, removed from the command line the workers get.
pub const FLAGS: [&str; 5] = ["--nproc-per-node", "--nnodes", "--node-rank", "--master-addr", "--master-port"];

/// How long stopped workers get to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

static SIGNALLED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNALLED.store(sig, Ordering::SeqCst);
}

/// `args` without the launcher's flags (and their values, given as `--flag V` or `--flag=V`).
pub fn worker_args(args: &[OsString]) -> Vec<OsString> {
    let mut out = vec![];
    let mut skip_value = false;
    for a in args {
        if skip_value {
            skip_value = false;
            continue;
        }
        let s = a.to_string_lossy();
        if let Some(f) = FLAGS.iter().find(|f| s == **f || s.starts_with(&format!("{f}="))) {
            skip_value = s == *f;
            continue;
        }
        out.push(a.clone());
    }
    out
}

fn describe(status: ExitStatus) -> (String, i32) {
    match (status.code(), status.signal()) {
        (Some(c), _) => (format!("exit status {c}"), c),
        (None, Some(sig)) => (format!("signal {sig}"), 128 + sig),
        _ => ("an unknown status".into(), 1),
    }
}

impl Launch {
    /// Checks the options against each other and the environment.
    pub fn check(&self) -> Result<()> {
        if self.nproc_per_node == 0 {
            bail!("--nproc-per-node 0: must be >= 1");
        }
        if self.nnodes == 0 || self.node_rank >= self.nnodes {
            bail!("--node-rank {} must be below --nnodes {}", self.node_rank, self.nnodes);
        }
        let world = self.nproc_per_node * self.nnodes;
        if world > crate::ffi::c10d::MAX_WORLD {
            bail!("{world} processes: at most {}", crate::ffi::c10d::MAX_WORLD);
        }
        if let Some(v) = ["RANK", "WORLD_SIZE", "LOCAL_RANK"].iter().find(|v| std::env::var_os(v).is_some()) {
            bail!(
                "--nproc-per-node starts its own workers, but {v} is already set (this process was started by a \
                 launcher): drop --nproc-per-node or unset {v}"
            );
        }
        Ok(())
    }

    /// Runs `args` (this program's arguments, launcher flags removed) as this machine's workers; returns the exit
    /// status for the launcher (0 when every worker succeeded).
    pub fn run(&self, args: &[OsString], threads_per_worker: Option<usize>) -> Result<i32> {
        self.check()?;
        let world = self.nproc_per_node * self.nnodes;
        let env_addr = std::env::var("MASTER_ADDR").ok().filter(|a| !a.trim().is_empty());
        let env_port = std::env::var("MASTER_PORT").ok().and_then(|p| p.trim().parse::<u16>().ok());
        let master_addr = self.master_addr.clone().or(env_addr);
        let master_port = self.master_port.or(env_port);
        let (master_addr, master_port) = if self.nnodes == 1 {
            let port = match master_port {
                Some(p) => p,
                None => crate::ffi::c10d::free_port()?,
            };
            (master_addr.unwrap_or_else(|| "127.0.0.1".into()), port)
        } else {
            match (master_addr, master_port) {
                (Some(a), Some(p)) => (a, p),
                _ => bail!("--nnodes {}: give --master-addr and --master-port (rank 0's host)", self.nnodes),
            }
        };
        // An address that does not resolve would leave the workers retrying until the rendezvous timeout.
        std::net::ToSocketAddrs::to_socket_addrs(&(master_addr.as_str(), master_port))
            .with_context(|| format!("--master-addr {master_addr}: cannot resolve"))?;
        let exe = std::env::current_exe().context("cannot find this program's path to start workers")?;
        let mut worker_args = worker_args(args);
        let has_threads = worker_args.iter().any(|a| a.to_string_lossy().starts_with("--threads"));
        if let (Some(t), false) = (threads_per_worker, has_threads) {
            worker_args.insert(0, format!("--threads={t}").into());
        }
        unsafe {
            libc::signal(libc::SIGINT, on_signal as *const () as usize);
            libc::signal(libc::SIGTERM, on_signal as *const () as usize);
        }
        let mut children: Vec<(usize, Child)> = vec![];
        for local in 0..self.nproc_per_node {
            let rank = self.node_rank * self.nproc_per_node + local;
            let mut cmd = Command::new(&exe);
            cmd.args(&worker_args);
            for v in VARS {
                cmd.env_remove(v);
            }
            cmd.env("RANK", rank.to_string())
                .env("LOCAL_RANK", local.to_string())
                .env("WORLD_SIZE", world.to_string())
                .env("LOCAL_WORLD_SIZE", self.nproc_per_node.to_string())
                .env("MASTER_ADDR", &master_addr)
                .env("MASTER_PORT", master_port.to_string());
            // A worker dies with its launcher, whatever kills the launcher.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            match cmd.spawn() {
                Ok(c) => children.push((rank, c)),
                Err(e) => {
                    stop(&mut children);
                    bail!("starting worker rank {rank} ({}): {e}", exe.display());
                }
            }
        }
        watch(children)
    }
}

/// SIGTERM to every running worker, SIGKILL to those still running after [`GRACE`].
fn stop(children: &mut [(usize, Child)]) {
    for (_, c) in children.iter_mut() {
        if matches!(c.try_wait(), Ok(None)) {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
    }
    let t0 = Instant::now();
    while t0.elapsed() < GRACE && children.iter_mut().any(|(_, c)| matches!(c.try_wait(), Ok(None))) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for (_, c) in children.iter_mut() {
        if matches!(c.try_wait(), Ok(None)) {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
}

/// Waits for the workers; the first failure stops the rest.
fn watch(mut children: Vec<(usize, Child)>) -> Result<i32> {
    let mut running: Vec<bool> = vec![true; children.len()];
    loop {
        let sig = SIGNALLED.load(Ordering::SeqCst);
        if sig != 0 {
            eprintln!("launcher: signal {sig}: stopping the workers");
            stop(&mut children);
            return Ok(128 + sig);
        }
        for (i, (rank, child)) in children.iter_mut().enumerate() {
            if !running[i] {
                continue;
            }
            if let Some(status) = child.try_wait()? {
                running[i] = false;
                if !status.success() {
                    let (what, code) = describe(status);
                    let rank = *rank;
                    eprintln!("error: worker rank {rank} ended with {what}: stopping the other workers");
                    stop(&mut children);
                    return Ok(code);
                }
            }
        }
        if running.iter().all(|r| !r) {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_flags_are_removed_from_the_workers_command_line() {
        let args: Vec<OsString> =
            ["train", "--nproc-per-node", "2", "--config", "c.toml", "--master-port=1234", "--data", "d"]
                .iter()
                .map(OsString::from)
                .collect();
        let w: Vec<String> = worker_args(&args).iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(w, ["train", "--config", "c.toml", "--data", "d"]);
    }

    #[test]
    fn bad_launch_options_are_refused() {
        let l = Launch { nproc_per_node: 0, nnodes: 1, node_rank: 0, master_addr: None, master_port: None };
        assert!(l.check().unwrap_err().to_string().contains("--nproc-per-node 0"));
        let l = Launch { nproc_per_node: 2, nnodes: 2, node_rank: 2, master_addr: None, master_port: None };
        assert!(l.check().unwrap_err().to_string().contains("--node-rank 2 must be below --nnodes 2"));
    }
}
