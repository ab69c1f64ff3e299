//! The trainer's state in and out: resumable snapshots, `--init` weights, resuming, and making every rank's state
//! rank 0's.

use super::Trainer;
use crate::model::checkpoint::{ensure_finite, Checkpoint};
use crate::train::log::StatSums;
use crate::train::snapshot::{self, Parts, TrainState};
use anyhow::{bail, Context, Result};
use std::path::Path;
use tch::{Kind, Tensor};

impl Trainer {
    /// Saves a resumable snapshot (the state's optimizer steps are filled in here). A collective (ADA's signs are
    /// summed over ranks): every rank calls it; only rank 0 writes.
    pub fn save(&mut self, path: &Path, dataset: &str) -> Result<()> {
        // ADA's pending signs go into the state, so a resumed run adjusts p exactly as this one will.
        self.state.ada_signs = self.take_ada_signs()?;
        self.state.opt_g_step = self.opt_g.step;
        self.state.opt_d_step = self.opt_d.step;
        if !self.dist.is_main() {
            return Ok(());
        }
        let parts = Parts {
            g: &self.g_vs,
            g_ema: &self.g_ema_vs,
            d: &self.d_vs,
            opt_g: &self.opt_g,
            opt_d: &self.opt_d,
            pl_mean: &self.pl_mean,
        };
        snapshot::save(path, &self.cfg, &parts, &self.state, dataset)
    }

    /// Starts from another network's weights (`--init`, transfer learning): G, D and G_ema from `ckpt` (G_ema from G
    /// and G from G_ema when the file has only one), everything else fresh. Names and shapes must match the config.
    pub fn init_from(&mut self, ckpt: &Checkpoint) -> Result<()> {
        let g = match (ckpt.has("G"), ckpt.has("G_ema")) {
            (true, _) => "G",
            (false, true) => "G_ema",
            _ => bail!("holds no generator"),
        };
        let g_ema = if ckpt.has("G_ema") { "G_ema" } else { g };
        if !ckpt.has("D") {
            bail!("holds no discriminator (D); `sg2 import` with the official D (or --d) makes one that does");
        }
        let fit = |r: Result<()>| r.context("the network does not fit the config's [model]");
        fit(ckpt.load_into(g, &mut self.g_vs))?;
        fit(ckpt.load_into(g_ema, &mut self.g_ema_vs))?;
        fit(ckpt.load_into("D", &mut self.d_vs))?;
        ensure_finite(&self.g_vs, g)?;
        ensure_finite(&self.g_ema_vs, g_ema)?;
        ensure_finite(&self.d_vs, "D")
    }

    /// Restores networks, optimizers, `pl_mean` and the loop state from a loaded snapshot.
    pub fn restore(&mut self, ckpt: &Checkpoint, state: &TrainState) -> Result<()> {
        if ckpt.config.model != self.cfg.model {
            // Name the first key that differs (an absent optional key shows as "absent").
            let table = |m: &crate::config::ModelConfig| toml::Table::try_from(m).unwrap_or_default();
            let (snap, cfg) = (table(&ckpt.config.model), table(&self.cfg.model));
            let shown = |t: &toml::Table, k: &str| t.get(k).map_or("absent".to_string(), |v| v.to_string());
            let key = snap.keys().chain(cfg.keys()).find(|k| snap.get(*k) != cfg.get(*k)).cloned().unwrap_or_default();
            // Each key has an option that sets it on its own; the resolution also has --resolution.
            let how = if key == "resolution" {
                format!("pass --resolution {}", shown(&snap, &key))
            } else {
                format!("pass --set model.{key}={}, or the config it was trained with", shown(&snap, &key))
            };
            bail!(
                "the snapshot's model.{key} = {} differs from the config's {} (to resume it, {how})",
                shown(&snap, &key),
                shown(&cfg, &key)
            );
        }
        ckpt.load_into("G", &mut self.g_vs)?;
        ckpt.load_into("G_ema", &mut self.g_ema_vs)?;
        ckpt.load_into("D", &mut self.d_vs)?;
        self.opt_g.load_state(&ckpt.tensors, "opt_G", state.opt_g_step)?;
        self.opt_d.load_state(&ckpt.tensors, "opt_D", state.opt_d_step)?;
        let pl = ckpt.tensors.get("pl_mean").ok_or_else(|| anyhow::anyhow!("snapshot lacks pl_mean"))?;
        tch::no_grad(|| self.pl_mean.copy_(&pl.to_kind(Kind::Float).to_device(self.device).reshape([])));
        self.state = state.clone();
        self.stats = StatSums::default();
        self.nonfinite = None;
        self.ada_acc = None;
        self.ada_count = 0.0;
        Ok(())
    }

    /// Makes every rank's networks, optimizers, `pl_mean` and loop state rank 0's (at the start, which covers a
    /// resume and `--init`, and after a rollback). A collective; a no-op for one process.
    pub fn sync_from_main(&mut self) -> Result<()> {
        if self.dist.world == 1 {
            return Ok(());
        }
        let mut tensors: Vec<Tensor> = vec![];
        for vs in [&self.g_vs, &self.g_ema_vs, &self.d_vs] {
            let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            vars.sort_by(|a, b| a.0.cmp(&b.0));
            tensors.extend(vars.into_iter().map(|(_, t)| t));
        }
        for opt in [&self.opt_g, &self.opt_d] {
            tensors.extend(opt.state_tensors("").into_iter().map(|(_, t)| t));
        }
        tensors.push(self.pl_mean.shallow_clone());
        tch::no_grad(|| self.dist.broadcast_(&tensors.iter().collect::<Vec<_>>()))?;
        let steps = self.dist.broadcast_json(&(self.opt_g.step, self.opt_d.step))?;
        (self.opt_g.step, self.opt_d.step) = steps;
        self.state = self.dist.broadcast_json(&self.state)?;
        self.stats = StatSums::default();
        self.nonfinite = None;
        self.ada_acc = None;
        self.ada_count = 0.0;
        Ok(())
    }
}
