//! Data-parallel processes, as PyTorch runs them: torchrun's environment (`env`), libtorch's c10d process group
//! with the collectives training and metrics use (this file), and a local launcher (`launch`). With no
//! environment a [`Dist`] is a group of one and every collective is a no-op, so single-process code needs no
//! branches.

pub mod env;
pub mod launch;

pub use env::DistEnv;

use crate::ffi::c10d::{self, CommBackend, ProcessGroup};
use anyhow::{ensure, Context, Result};
use std::time::Duration;
use tch::{Device, Kind, Tensor};

/// How long a collective waits for its peers before failing (`SG2_DIST_TIMEOUT`, seconds; torch's default 30
/// minutes). A dead peer usually fails the collective at once (its connection closes); the timeout bounds a hung one.
pub fn timeout() -> Result<Duration> {
    match std::env::var("SG2_DIST_TIMEOUT") {
        Err(_) => Ok(Duration::from_secs(1800)),
        Ok(v) => {
            let s: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| *s > 0.0 && s.is_finite())
                .with_context(|| format!("SG2_DIST_TIMEOUT={v}: expected a positive number of seconds"))?;
            Ok(Duration::from_secs_f64(s.min(7.0 * 86400.0)))
        }
    }
}

/// NCCL for CUDA work where the build has it, else Gloo (as PyTorch's default backends).
pub fn auto_backend(device: Device) -> CommBackend {
    if device.is_cuda() && c10d::has_nccl() {
        CommBackend::Nccl
    } else {
        CommBackend::Gloo
    }
}

/// This process's place in a data-parallel group (a group of one without torchrun's variables).
pub struct Dist {
    pg: Option<ProcessGroup>,
    pub rank: usize,
    pub local_rank: usize,
    pub world: usize,
}

impl std::fmt::Debug for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dist {{ rank: {}, local_rank: {}, world: {} }}", self.rank, self.local_rank, self.world)
    }
}

impl Dist {
    /// A group of one: every collective returns its input.
    pub fn single() -> Dist {
        Dist { pg: None, rank: 0, local_rank: 0, world: 1 }
    }

    /// Joins the group `env` describes over Gloo (a group of one needs no rendezvous).
    pub fn join(env: &DistEnv, timeout: Duration) -> Result<Dist> {
        Self::join_with(env, timeout, CommBackend::Gloo, false)
    }

    /// Joins over `backend`; a group of one is made only when `always` (to exercise a backend).
    pub fn join_with(env: &DistEnv, timeout: Duration, backend: CommBackend, always: bool) -> Result<Dist> {
        let pg = if env.world > 1 || always {
            Some(ProcessGroup::with_backend(&env.master_addr, env.master_port, env.rank, env.world, timeout, backend)?)
        } else {
            None
        };
        Ok(Dist { pg, rank: env.rank, local_rank: env.local_rank, world: env.world })
    }

    /// The group torchrun's variables describe, or a group of one when they are absent, for work on `device`:
    /// NCCL on CUDA (where the build has it), Gloo on the CPU; `SG2_DIST_BACKEND=gloo|nccl` chooses (and then a
    /// group of one is made too, which checks the backend on one device).
    pub fn from_env(device: Device) -> Result<Dist> {
        let Some(env) = DistEnv::from_env()? else { return Ok(Dist::single()) };
        let (backend, chosen) = match std::env::var("SG2_DIST_BACKEND").ok().as_deref().map(str::trim) {
            None | Some("") | Some("auto") => (auto_backend(device), false),
            Some("gloo") => (CommBackend::Gloo, true),
            Some("nccl") if c10d::has_nccl() => (CommBackend::Nccl, true),
            Some("nccl") => anyhow::bail!("SG2_DIST_BACKEND=nccl: this build's libtorch has no CUDA (no NCCL)"),
            Some(other) => anyhow::bail!("SG2_DIST_BACKEND={other}: expected auto, gloo or nccl"),
        };
        if backend == CommBackend::Nccl && !device.is_cuda() {
            anyhow::bail!("SG2_DIST_BACKEND=nccl needs a CUDA device (--device cuda)");
        }
        Dist::join_with(&env, timeout()?, backend, chosen)
    }

    /// Rank 0, the process that writes files and prints.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// The device this rank computes on: with several ranks on CUDA, `cuda:LOCAL_RANK` (one GPU per process).
    pub fn device(&self, asked: Device) -> Result<Device> {
        match asked {
            Device::Cuda(_) if self.world > 1 => {
                let n = tch::Cuda::device_count() as usize;
                ensure!(
                    self.local_rank < n,
                    "LOCAL_RANK {} has no GPU: libtorch sees {n} CUDA device(s) (start at most {n} processes per \
                     machine)",
                    self.local_rank
                );
                Ok(Device::Cuda(self.local_rank))
            }
            d => Ok(d),
        }
    }

    /// Element-wise sum over ranks, in place.
    pub fn sum_(&self, tensors: &[&Tensor]) -> Result<()> {
        match &self.pg {
            Some(pg) if !tensors.is_empty() => pg.allreduce_sum(tensors),
            _ => Ok(()),
        }
    }

    /// Element-wise mean over ranks, in place.
    pub fn mean_(&self, tensors: &[&Tensor]) -> Result<()> {
        if self.world > 1 {
            self.sum_(tensors)?;
            tch::no_grad(|| {
                for t in tensors {
                    let _ = t.shallow_clone().g_div_scalar_(self.world as f64);
                }
            });
        }
        Ok(())
    }

    /// Overwrites the tensors with rank 0's, in place.
    pub fn broadcast_(&self, tensors: &[&Tensor]) -> Result<()> {
        match &self.pg {
            Some(pg) => pg.broadcast(tensors, 0),
            None => Ok(()),
        }
    }

    /// Rank 0's bytes on every rank (the others' `bytes` are ignored).
    pub fn broadcast_bytes(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        if self.world == 1 {
            return Ok(bytes.to_vec());
        }
        let len = Tensor::from_slice(&[bytes.len() as i64]);
        self.broadcast_(&[&len])?;
        let n = len.int64_value(&[0]) as usize;
        let buf = if self.is_main() {
            Tensor::from_slice(bytes)
        } else {
            Tensor::zeros([n as i64], (Kind::Uint8, Device::Cpu))
        };
        self.broadcast_(&[&buf])?;
        Ok(Vec::<u8>::try_from(&buf)?)
    }

    /// Rank 0's value of a serialisable thing on every rank.
    pub fn broadcast_json<T: serde::Serialize + serde::de::DeserializeOwned>(&self, value: &T) -> Result<T> {
        let bytes = self.broadcast_bytes(&serde_json::to_vec(value)?)?;
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Every rank's rows, concatenated in rank order along dim 0 (ranks may hold different numbers of rows).
    pub fn gather_rows(&self, rows: &Tensor) -> Result<Tensor> {
        let Some(pg) = &self.pg else { return Ok(rows.shallow_clone()) };
        let rows = rows.contiguous();
        let counts = pg.all_gather(&Tensor::from_slice(&[rows.size()[0]]).to_device(rows.device()))?;
        let counts: Vec<i64> = counts.iter().map(|c| c.int64_value(&[0])).collect();
        let most = counts.iter().copied().max().unwrap_or(0);
        let mut shape = rows.size();
        let pad = most - shape[0];
        let padded = if pad > 0 {
            shape[0] = pad;
            Tensor::cat(&[rows.shallow_clone(), Tensor::zeros(shape.as_slice(), (rows.kind(), rows.device()))], 0)
        } else {
            rows
        };
        let parts = pg.all_gather(&padded)?;
        Ok(Tensor::cat(&parts.iter().zip(&counts).map(|(p, &n)| p.narrow(0, 0, n)).collect::<Vec<_>>(), 0))
    }

    /// Waits until every rank gets here.
    pub fn barrier(&self) -> Result<()> {
        match &self.pg {
            Some(pg) => pg.barrier(),
            None => Ok(()),
        }
    }

    /// Whether any rank says `flag` (for decisions every rank must take together).
    pub fn any(&self, flag: bool) -> Result<bool> {
        if self.world == 1 {
            return Ok(flag);
        }
        let t = Tensor::from_slice(&[flag as i64]);
        self.sum_(&[&t])?;
        Ok(t.int64_value(&[0]) > 0)
    }
}

/// Helpers for tests of code that runs on several ranks.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Runs `f(dist)` on `world` threads joined into one group.
    pub(crate) fn on_ranks<T: Send + 'static>(
        world: usize,
        f: impl Fn(Dist) -> T + Send + Sync + Copy + 'static,
    ) -> Vec<T> {
        let port = crate::ffi::c10d::free_port().unwrap();
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                std::thread::spawn(move || {
                    let env =
                        DistEnv { rank, local_rank: rank, world, master_addr: "127.0.0.1".into(), master_port: port };
                    f(Dist::join(&env, Duration::from_secs(60)).unwrap())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::on_ranks;
    use super::*;

    #[test]
    fn a_group_of_one_returns_its_inputs() {
        let d = Dist::single();
        let t = Tensor::from_slice(&[1.0f32, 2.0]);
        d.mean_(&[&t]).unwrap();
        d.broadcast_(&[&t]).unwrap();
        assert_eq!(Vec::<f32>::try_from(&d.gather_rows(&t).unwrap()).unwrap(), vec![1.0, 2.0]);
        assert_eq!(d.broadcast_bytes(b"abc").unwrap(), b"abc");
        assert!(!d.any(false).unwrap() && d.any(true).unwrap());
    }

    #[test]
    fn two_ranks_average_agree_and_gather_uneven_rows() {
        let out = on_ranks(2, |d| {
            let t = Tensor::from_slice(&[1.0f32, 3.0]) * (d.rank as f64 * 2.0 + 1.0);
            d.mean_(&[&t]).unwrap();
            let bytes = d.broadcast_bytes(format!("rank {}", d.rank).as_bytes()).unwrap();
            let rows = Tensor::full([d.rank as i64 + 1, 2], d.rank as f64, (Kind::Float, Device::Cpu));
            let g = d.gather_rows(&rows).unwrap();
            let any = d.any(d.rank == 1).unwrap();
            (
                Vec::<f32>::try_from(&t).unwrap(),
                String::from_utf8(bytes).unwrap(),
                g.size(),
                g.sum(Kind::Float).double_value(&[]),
                any,
            )
        });
        for (mean, text, shape, sum, any) in out {
            assert_eq!(mean, vec![2.0, 6.0]);
            assert_eq!(text, "rank 0");
            assert_eq!(shape, vec![3, 2]);
            assert_eq!(sum, 4.0);
            assert!(any);
        }
    }
}
