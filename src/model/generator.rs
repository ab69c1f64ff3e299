//! The official `Generator`: mapping network followed by the synthesis network.

use super::mapping::{MappingNetwork, MappingSpec};
use super::synthesis::{LayerNoise, NoiseMode, SynthesisNetwork};
use crate::config::ModelConfig;
use crate::nn::ModConv;
use tch::nn::Path;
use tch::Tensor;

#[derive(Debug)]
pub struct Generator {
    pub mapping: MappingNetwork,
    pub synthesis: SynthesisNetwork,
    cfg: ModelConfig,
    /// How modulated convolutions run; both forms give the official values (see `nn::ops::ModConv`). None: the
    /// faster form for inference on the device the forward runs on (`ModConv::inference_default`).
    pub modconv: Option<ModConv>,
}

impl Generator {
    pub fn new(p: &Path, cfg: &ModelConfig) -> Self {
        let synthesis = SynthesisNetwork::new(&(p / "synthesis"), cfg);
        let spec = MappingSpec {
            z_dim: cfg.z_dim as i64,
            c_dim: cfg.c_dim as i64,
            w_dim: cfg.w_dim as i64,
            num_ws: Some(synthesis.num_ws),
            num_layers: cfg.mapping_layers as i64,
            lr_mul: cfg.mapping_lr_mul,
        };
        let mapping = MappingNetwork::new(&(p / "mapping"), spec);
        Generator { mapping, synthesis, cfg: cfg.clone(), modconv: None }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    pub fn z_dim(&self) -> i64 {
        self.cfg.z_dim as i64
    }
    pub fn c_dim(&self) -> i64 {
        self.cfg.c_dim as i64
    }
    pub fn w_dim(&self) -> i64 {
        self.cfg.w_dim as i64
    }
    pub fn num_ws(&self) -> i64 {
        self.synthesis.num_ws
    }
    pub fn img_resolution(&self) -> i64 {
        self.cfg.resolution as i64
    }
    pub fn img_channels(&self) -> i64 {
        self.cfg.channels as i64
    }

    /// z [N, z_dim], c one-hot [N, c_dim] -> ws [N, num_ws, w_dim], truncated toward `w_avg`.
    pub fn mapping(
        &self,
        z: &Tensor,
        c: Option<&Tensor>,
        truncation_psi: f64,
        truncation_cutoff: Option<i64>,
    ) -> Tensor {
        let w = self.mapping.forward_w(Some(z), c);
        self.mapping.broadcast_truncate(&w, truncation_psi, truncation_cutoff)
    }

    /// Training-mode mapping: also moves `w_avg` toward this batch's mean w.
    pub fn mapping_train(&self, z: &Tensor, c: Option<&Tensor>, w_avg_beta: f64) -> Tensor {
        let w = self.mapping.forward_w(Some(z), c);
        self.mapping.update_w_avg(&w, w_avg_beta);
        self.mapping.broadcast_truncate(&w, 1.0, None)
    }

    /// ws [N, num_ws, w_dim] -> images [N, C, H, W].
    pub fn synthesis(&self, ws: &Tensor, noise_mode: NoiseMode) -> Tensor {
        self.synthesis.forward(ws, &[LayerNoise::Mode(noise_mode)], self.modconv_on(ws), false)
    }

    /// Synthesis with one explicit noise tensor per convolution (`synthesis.noise_resolutions()` gives the shapes);
    /// `force_fp32` runs fp16 layers in fp32 (PPL, as the official).
    pub fn synthesis_with_noise(&self, ws: &Tensor, noise: Vec<Tensor>, force_fp32: bool) -> Tensor {
        assert_eq!(noise.len(), self.synthesis.num_noise(), "one noise tensor per convolution");
        let noise: Vec<LayerNoise> = noise.into_iter().map(LayerNoise::Given).collect();
        self.synthesis.forward(ws, &noise, self.modconv_on(ws), force_fp32)
    }

    fn modconv_on(&self, ws: &Tensor) -> ModConv {
        self.modconv.unwrap_or_else(|| ModConv::inference_default(ws.device()))
    }

    pub fn forward(&self, z: &Tensor, c: Option<&Tensor>, truncation_psi: f64, noise_mode: NoiseMode) -> Tensor {
        let ws = self.mapping(z, c, truncation_psi, None);
        self.synthesis(&ws, noise_mode)
    }
}
