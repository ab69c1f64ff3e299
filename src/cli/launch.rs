//! The launcher flags a subcommand takes to run as several processes (torchrun's, with the same names).

use crate::dist::launch::Launch;
use anyhow::Result;

#[derive(clap::Args, Debug, Clone)]
pub struct LaunchArgs {
    /// Worker processes to start on this machine (one per GPU; on the CPU each gets an equal share of the cores).
    /// With more than 1, this process starts the workers, which split the work, and exits with their status
    /// (the first failure stops the others). 1: this process does the work itself.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub nproc_per_node: usize,
    /// Machines taking part; start the same command on each with its own --node-rank (needs --master-addr and
    /// --master-port when above 1).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub nnodes: usize,
    /// This machine's place among the --nnodes machines, from 0 (machine 0 holds rank 0, which prints and writes).
    #[arg(long, value_name = "I", default_value_t = 0)]
    pub node_rank: usize,
    /// Address of machine 0, where the workers meet (default with one machine: 127.0.0.1, or $MASTER_ADDR).
    #[arg(long, value_name = "HOST")]
    pub master_addr: Option<String>,
    /// Free TCP port on machine 0 for the workers' rendezvous (default with one machine: a free port, or
    /// $MASTER_PORT).
    #[arg(long, value_name = "PORT")]
    pub master_port: Option<u16>,
}

impl LaunchArgs {
    /// Whether these flags ask for worker processes.
    pub fn launches(&self) -> bool {
        self.nproc_per_node != 1 || self.nnodes != 1
    }

    /// The flags against each other, whether or not they start workers.
    pub fn check(&self) -> Result<()> {
        anyhow::ensure!(self.nproc_per_node >= 1, "--nproc-per-node 0: must be >= 1");
        anyhow::ensure!(self.nnodes >= 1, "--nnodes 0: must be >= 1");
        anyhow::ensure!(
            self.node_rank < self.nnodes,
            "--node-rank {} must be below --nnodes {}",
            self.node_rank,
            self.nnodes
        );
        Ok(())
    }

    /// Starts this machine's workers with this program's command line (launcher flags removed) when the flags ask
    /// for several processes, waits for them and returns Some(their exit status); None when this process should do
    /// the work itself. On the CPU (`device`) each worker gets max(1, cores / N) threads unless --threads is given.
    pub fn maybe_launch(&self, device: tch::Device) -> Result<Option<i32>> {
        self.check()?;
        if !self.launches() {
            return Ok(None);
        }
        let launch = Launch {
            nproc_per_node: self.nproc_per_node,
            nnodes: self.nnodes,
            node_rank: self.node_rank,
            master_addr: self.master_addr.clone(),
            master_port: self.master_port,
        };
        let threads = (device == tch::Device::Cpu).then(|| {
            let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
            (cores / self.nproc_per_node.max(1)).max(1)
        });
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        Ok(Some(launch.run(&args, threads)?))
    }
}

/// Ends this process with the workers' status when it is not 0 (the failing worker has said why).
pub fn exit_on_failure(code: i32) {
    if code != 0 {
        std::process::exit(code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        launch: LaunchArgs,
    }

    #[test]
    fn flags_are_checked_against_each_other() {
        let check = |args: &[&str]| Cli::try_parse_from([&["x"], args].concat()).unwrap().launch.check();
        assert!(check(&[]).is_ok() && check(&["--nnodes", "2", "--node-rank", "1"]).is_ok());
        for (args, want) in [
            (&["--nproc-per-node", "0"][..], "--nproc-per-node 0: must be >= 1"),
            (&["--nnodes", "0"][..], "--nnodes 0: must be >= 1"),
            (&["--node-rank", "5"][..], "--node-rank 5 must be below --nnodes 1"),
        ] {
            assert_eq!(check(args).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn one_process_unless_asked() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["x"], args].concat()).unwrap().launch;
        assert!(!parse(&[]).launches());
        assert!(!parse(&["--nproc-per-node", "1"]).launches());
        assert!(parse(&["--nproc-per-node", "2"]).launches());
        assert!(parse(&["--nnodes", "2", "--node-rank", "1"]).launches());
        // --nproc-per-node 0 reaches the launcher, which refuses it.
        assert!(parse(&["--nproc-per-node", "0"]).launches());
        assert!(parse(&["--nproc-per-node", "0"]).maybe_launch(tch::Device::Cpu).is_err());
    }
}
