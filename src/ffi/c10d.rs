//! libtorch's c10d from Rust: a process group over a TCPStore rendezvous (rank 0 hosts the store) with the Gloo
//! backend, and the collectives data-parallel training needs. Gloo runs on CPU tensors, and on CUDA tensors where
//! libtorch was built with CUDA.

use super::call;
use anyhow::{bail, Result};
use std::os::raw::{c_char, c_int, c_void};
use std::time::Duration;
use tch::Tensor;

extern "C" {
    fn sg2_pg_new(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        timeout_ms: c_int,
        backend: c_int,
        err: *mut c_char,
        len: usize,
    ) -> *mut c_void;
    fn sg2_pg_has_nccl() -> c_int;
    fn sg2_pg_free(group: *mut c_void);
    fn sg2_pg_allreduce_sum(
        group: *mut c_void,
        tensors: *mut *mut c_void,
        n: c_int,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn sg2_pg_broadcast(
        group: *mut c_void,
        tensors: *mut *mut c_void,
        n: c_int,
        root: c_int,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn sg2_pg_all_gather(
        group: *mut c_void,
        input: *mut c_void,
        outputs: *mut *mut c_void,
        world: c_int,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn sg2_pg_barrier(group: *mut c_void, err: *mut c_char, len: usize) -> c_int;
}

/// The library that carries a group's collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommBackend {
    /// Gloo: CPU tensors (and CUDA tensors, staged through the host).
    Gloo,
    /// NCCL: CUDA tensors, GPU to GPU (libtorch_cuda builds only).
    Nccl,
}

impl CommBackend {
    pub fn name(self) -> &'static str {
        match self {
            CommBackend::Gloo => "gloo",
            CommBackend::Nccl => "nccl",
        }
    }
}

/// Whether this build can make NCCL groups (libtorch with CUDA).
pub fn has_nccl() -> bool {
    unsafe { sg2_pg_has_nccl() == 1 }
}

/// The most processes one group may hold.
pub const MAX_WORLD: usize = 4096;

/// The largest buffer one allreduce call carries.
pub const BUCKET_BYTES: usize = 32 << 20;

/// One process's membership of a group of `world` processes.
pub struct ProcessGroup {
    handle: *mut c_void,
    pub rank: usize,
    pub world: usize,
}

// The handle is only used through &self calls, and c10d's process groups may be called from any thread; sg2 issues
// a group's collectives from one thread at a time, in the same order on every rank.
unsafe impl Send for ProcessGroup {}
unsafe impl Sync for ProcessGroup {}

fn ptrs(tensors: &[&Tensor]) -> Vec<*mut c_void> {
    tensors.iter().map(|t| t.as_ptr() as *mut c_void).collect()
}

impl ProcessGroup {
    /// Joins the group whose rank 0 listens on `master_addr:port`; waits up to `timeout` for the others, and each
    /// later collective waits as long for its peers (a dead peer then becomes an error, not a hang).
    pub fn new(master_addr: &str, port: u16, rank: usize, world: usize, timeout: Duration) -> Result<ProcessGroup> {
        Self::with_backend(master_addr, port, rank, world, timeout, CommBackend::Gloo)
    }

    /// [`ProcessGroup::new`] with the given backend.
    pub fn with_backend(
        master_addr: &str,
        port: u16,
        rank: usize,
        world: usize,
        timeout: Duration,
        backend: CommBackend,
    ) -> Result<ProcessGroup> {
        if world == 0 || rank >= world {
            bail!("rank {rank} is not in a group of {world}");
        }
        let host = std::ffi::CString::new(master_addr)?;
        let ms = timeout.as_millis().min(i32::MAX as u128) as c_int;
        let mut buf = vec![0 as c_char; 1024];
        let handle = unsafe {
            let b = if backend == CommBackend::Nccl { 1 } else { 0 };
            sg2_pg_new(host.as_ptr(), port as c_int, rank as c_int, world as c_int, ms, b, buf.as_mut_ptr(), buf.len())
        };
        if handle.is_null() {
            let msg = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
            let first = msg.lines().next().unwrap_or("unknown error").to_string();
            bail!(
                "joining the {} process group at {master_addr}:{port} as rank {rank} of {world}: {first}",
                backend.name()
            );
        }
        Ok(ProcessGroup { handle, rank, world })
    }

    /// Element-wise sum over ranks, in place. Tensors of one dtype and device are flattened into buckets of up to
    /// [`BUCKET_BYTES`], one collective per bucket (Gloo reduces one buffer at a time).
    pub fn allreduce_sum(&self, tensors: &[&Tensor]) -> Result<()> {
        let mut groups: Vec<((tch::Kind, tch::Device), Vec<&Tensor>)> = vec![];
        for t in tensors {
            let key = (t.kind(), t.device());
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(t),
                None => groups.push((key, vec![t])),
            }
        }
        for (_, group) in groups {
            let mut bucket: Vec<&Tensor> = vec![];
            let mut bytes = 0;
            for t in group {
                let b = t.numel() * t.kind().elt_size_in_bytes();
                if !bucket.is_empty() && bytes + b > BUCKET_BYTES {
                    self.reduce_bucket(&bucket)?;
                    bucket.clear();
                    bytes = 0;
                }
                bucket.push(t);
                bytes += b;
            }
            if !bucket.is_empty() {
                self.reduce_bucket(&bucket)?;
            }
        }
        Ok(())
    }

    fn reduce_bucket(&self, bucket: &[&Tensor]) -> Result<()> {
        let flat = Tensor::cat(&bucket.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0);
        let mut p = ptrs(&[&flat]);
        call("allreduce", |e, n| unsafe { sg2_pg_allreduce_sum(self.handle, p.as_mut_ptr(), 1, e, n) })?;
        let mut offset = 0;
        tch::no_grad(|| {
            for t in bucket {
                let n = t.numel() as i64;
                t.shallow_clone().copy_(&flat.narrow(0, offset, n).view_as(t));
                offset += n;
            }
        });
        Ok(())
    }

    /// Overwrites the tensors with rank `root`'s, in place (one collective per tensor).
    pub fn broadcast(&self, tensors: &[&Tensor], root: usize) -> Result<()> {
        for t in tensors {
            let mut p = ptrs(&[t]);
            call("broadcast", |e, n| unsafe { sg2_pg_broadcast(self.handle, p.as_mut_ptr(), 1, root as c_int, e, n) })?;
        }
        Ok(())
    }

    /// Every rank's `input`, in rank order.
    pub fn all_gather(&self, input: &Tensor) -> Result<Vec<Tensor>> {
        let input = input.contiguous();
        let outs: Vec<Tensor> = (0..self.world).map(|_| input.empty_like()).collect();
        let mut p = ptrs(&outs.iter().collect::<Vec<_>>());
        call("all_gather", |e, n| unsafe {
            sg2_pg_all_gather(self.handle, input.as_ptr() as *mut c_void, p.as_mut_ptr(), self.world as c_int, e, n)
        })?;
        Ok(outs)
    }

    pub fn barrier(&self) -> Result<()> {
        call("barrier", |e, n| unsafe { sg2_pg_barrier(self.handle, e, n) })?;
        Ok(())
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        unsafe { sg2_pg_free(self.handle) };
    }
}

/// A free TCP port on this machine (for tests and single-machine launches).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_ranks_reduce_broadcast_and_gather() {
        let port = free_port().unwrap();
        let run = move |rank: usize| {
            let pg = ProcessGroup::new("127.0.0.1", port, rank, 2, Duration::from_secs(60)).unwrap();
            let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]) * (rank as f64 + 1.0);
            let b = Tensor::from_slice(&[10i64]) + rank as i64;
            pg.allreduce_sum(&[&a, &b]).unwrap();
            let c = Tensor::from_slice(&[rank as f32; 2]);
            let d = Tensor::from_slice(&[rank as i64]);
            pg.broadcast(&[&c, &d], 1).unwrap();
            assert_eq!(d.int64_value(&[0]), 1);
            let g = pg.all_gather(&Tensor::from_slice(&[rank as f32 * 5.0])).unwrap();
            pg.barrier().unwrap();
            (Vec::<f32>::try_from(&a).unwrap(), Vec::<i64>::try_from(&b).unwrap(), Vec::<f32>::try_from(&c).unwrap(), {
                g.iter().map(|t| t.double_value(&[0])).collect::<Vec<_>>()
            })
        };
        let other = std::thread::spawn(move || run(1));
        let mine = run(0);
        let theirs = other.join().unwrap();
        for r in [mine, theirs] {
            assert_eq!(r.0, vec![3.0, 6.0, 9.0]);
            assert_eq!(r.1, vec![21]);
            assert_eq!(r.2, vec![1.0, 1.0]);
            assert_eq!(r.3, vec![0.0, 5.0]);
        }
    }

    #[test]
    fn a_missing_peer_is_an_error_within_the_timeout() {
        let port = free_port().unwrap();
        let t0 = std::time::Instant::now();
        let err = ProcessGroup::new("127.0.0.1", port, 0, 2, Duration::from_secs(2)).err().unwrap().to_string();
        assert!(err.starts_with("joining the gloo process group at 127.0.0.1:"), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    }

    #[test]
    fn nccl_without_a_gpu_is_an_error_not_an_abort() {
        if tch::Cuda::is_available() || !has_nccl() {
            return;
        }
        let port = free_port().unwrap();
        let r = ProcessGroup::with_backend("127.0.0.1", port, 0, 1, Duration::from_secs(10), CommBackend::Nccl);
        let err = r.err().expect("no NCCL group without a GPU").to_string();
        assert!(err.starts_with("joining the nccl process group at 127.0.0.1:"), "{err}");
    }
}
