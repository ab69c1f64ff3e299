//! torchrun's environment variables, as `torchrun`, Kubeflow's PyTorchJob and indexed Kubernetes Jobs set them:
//! `RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` (and `LOCAL_WORLD_SIZE`, checked when set).

use anyhow::{bail, Context, Result};

/// Where this process sits in a data-parallel group and where the group meets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    /// This process's index on its machine: its GPU on CUDA.
    pub local_rank: usize,
    pub world: usize,
    pub master_addr: String,
    pub master_port: u16,
}

/// The variables that describe a group.
pub const VARS: [&str; 6] = ["RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"];

impl DistEnv {
    /// From the process environment: None when neither `RANK` nor `WORLD_SIZE` is set (a single process).
    pub fn from_env() -> Result<Option<DistEnv>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From any variable lookup (tests pass a map). Missing or conflicting values are one-line errors.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<DistEnv>> {
        let int = |k: &str| -> Result<Option<usize>> {
            match get(k) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .map(Some)
                    .ok()
                    .with_context(|| format!("{k}={v}: expected a whole number >= 0")),
            }
        };
        let (rank, world) = match (int("RANK")?, int("WORLD_SIZE")?) {
            (None, None) => return Ok(None),
            (Some(_), None) => bail!("RANK is set but WORLD_SIZE is not: set both (or neither, for one process)"),
            (None, Some(_)) => bail!("WORLD_SIZE is set but RANK is not: set both (or neither, for one process)"),
            (Some(r), Some(w)) => (r, w),
        };
        if world == 0 {
            bail!("WORLD_SIZE=0: must be >= 1");
        }
        if world > crate::ffi::c10d::MAX_WORLD {
            bail!("WORLD_SIZE={world}: at most {} processes", crate::ffi::c10d::MAX_WORLD);
        }
        if rank >= world {
            bail!("RANK={rank} is not below WORLD_SIZE={world}");
        }
        let local_world = int("LOCAL_WORLD_SIZE")?;
        let local_rank = int("LOCAL_RANK")?.unwrap_or(0);
        if let Some(lw) = local_world {
            if local_rank >= lw {
                bail!("LOCAL_RANK={local_rank} is not below LOCAL_WORLD_SIZE={lw}");
            }
            if lw > world {
                bail!("LOCAL_WORLD_SIZE={lw} exceeds WORLD_SIZE={world}");
            }
        }
        if local_rank > rank {
            bail!("LOCAL_RANK={local_rank} exceeds RANK={rank} (the local rank counts this machine's processes)");
        }
        let addr = get("MASTER_ADDR").map(|a| a.trim().to_string()).filter(|a| !a.is_empty());
        let port = get("MASTER_PORT");
        let (master_addr, master_port) = match (addr, port) {
            (a, p) if world == 1 => {
                (a.unwrap_or_else(|| "127.0.0.1".into()), p.and_then(|p| p.trim().parse().ok()).unwrap_or(29500))
            }
            (None, _) => bail!("WORLD_SIZE={world} needs MASTER_ADDR (the host of rank 0)"),
            (_, None) => bail!("WORLD_SIZE={world} needs MASTER_PORT (a free port on rank 0's host)"),
            (Some(a), Some(p)) => {
                let port = p
                    .trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .with_context(|| format!("MASTER_PORT={p}: expected a port from 1 to 65535"))?;
                (a, port)
            }
        };
        Ok(Some(DistEnv { rank, local_rank, world, master_addr, master_port }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Option<DistEnv>> {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        DistEnv::from_vars(|k| m.get(k).cloned())
    }

    fn err(vars: &[(&str, &str)]) -> String {
        parse(vars).unwrap_err().to_string()
    }

    #[test]
    fn torchrun_variables_are_read() {
        assert_eq!(parse(&[]).unwrap(), None);
        let env = parse(&[
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("WORLD_SIZE", "4"),
            ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "sg2-0.sg2"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            env,
            DistEnv { rank: 3, local_rank: 1, world: 4, master_addr: "sg2-0.sg2".into(), master_port: 29500 }
        );
        // One process needs no rendezvous.
        assert_eq!(parse(&[("RANK", "0"), ("WORLD_SIZE", "1")]).unwrap().unwrap().world, 1);
    }

    #[test]
    fn missing_or_conflicting_variables_are_named() {
        let base = [("MASTER_ADDR", "h"), ("MASTER_PORT", "1234")];
        assert!(err(&[("RANK", "0")]).contains("WORLD_SIZE is not"));
        assert!(err(&[("WORLD_SIZE", "2")]).contains("RANK is not"));
        assert!(err(&[("RANK", "2"), ("WORLD_SIZE", "2"), base[0], base[1]]).contains("RANK=2 is not below"));
        assert!(err(&[("RANK", "x"), ("WORLD_SIZE", "2")]).contains("RANK=x: expected"));
        assert!(err(&[("RANK", "0"), ("WORLD_SIZE", "0")]).contains("WORLD_SIZE=0"));
        assert!(err(&[("RANK", "1"), ("WORLD_SIZE", "2"), base[1]]).contains("needs MASTER_ADDR"));
        assert!(err(&[("RANK", "1"), ("WORLD_SIZE", "2"), base[0]]).contains("needs MASTER_PORT"));
        assert!(err(&[("RANK", "1"), ("WORLD_SIZE", "2"), base[0], ("MASTER_PORT", "70000")]).contains("70000"));
        let local =
            [("RANK", "1"), ("WORLD_SIZE", "2"), base[0], base[1], ("LOCAL_RANK", "2"), ("LOCAL_WORLD_SIZE", "2")];
        assert!(err(&local).contains("LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2"));
    }
}
