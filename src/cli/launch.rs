//! The launcher options `sg2 train` and `sg2 metrics` share (torchrun's, in sg2's spelling).

use crate::dist::launch::Launch;
use anyhow::Result;

#[derive(clap::Args, Debug, Clone)]
pub struct LaunchArgs {
    /// Start N worker processes of this command on this machine and wait for them, as torchrun does: one per GPU on
    /// CUDA (cuda:LOCAL_RANK), N CPU processes otherwise (each with cores / N threads unless --threads is given).
    /// When one worker fails or is killed, the others are stopped and this command exits non-zero. Without it, a
    /// process started by an external launcher joins the group its RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and
    /// MASTER_PORT describe.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub nproc_per_node: usize,
    /// Machines taking part; each runs the same command with its own --node-rank.
    #[arg(long, value_name = "M", default_value_t = 1)]
    pub nnodes: usize,
    /// This machine's index among --nnodes (0 hosts rank 0).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub node_rank: usize,
    /// Host of rank 0, reachable from every machine (default $MASTER_ADDR, else 127.0.0.1 on one machine).
    #[arg(long, value_name = "HOST")]
    pub master_addr: Option<String>,
    /// Port rank 0 listens on (default $MASTER_PORT, else a free port on one machine).
    #[arg(long, value_name = "PORT")]
    pub master_port: Option<u16>,
}

impl LaunchArgs {
    /// Whether these options ask for a launch.
    pub fn launches(&self) -> bool {
        self.nproc_per_node != 1 || self.nnodes != 1
    }

    /// Runs this command line as the workers of this machine when asked to; Some(exit status) once they have
    /// ended, None when this process is to do the work itself.
    pub fn launch(&self) -> Result<Option<i32>> {
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
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let threads = (cores / self.nproc_per_node.max(1)).max(1);
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
        launch.run(&args, Some(threads)).map(Some)
    }
}
