//! The ranges and combinations a config must satisfy, as `key = value: reason`.

use super::{AugmentMode, Config, AUGMENT_KINDS, AUGMENT_PIPES};

fn check(ok: bool, key: &str, value: impl std::fmt::Display, reason: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{key} = {value}: {reason}"))
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        let (m, t, l) = (&self.model, &self.training, &self.logging);
        // NaN passes every `>` test and infinity most: refuse both first.
        let floats = [
            ("model.mapping_lr_mul", m.mapping_lr_mul),
            ("model.conv_clamp", m.conv_clamp.unwrap_or(0.0)),
            ("training.total_kimg", t.total_kimg),
            ("training.g_lr", t.g_lr),
            ("training.d_lr", t.d_lr),
            ("training.adam_eps", t.adam_eps),
            ("training.r1_gamma", t.r1_gamma),
            ("training.pl_weight", t.pl_weight),
            ("training.ema_kimg", t.ema_kimg),
            ("training.ema_rampup", t.ema_rampup.unwrap_or(0.0)),
            ("logging.tick_kimg", l.tick_kimg),
            ("logging.collapse_factor", l.collapse_factor),
        ];
        for (key, v) in floats {
            check(v.is_finite(), key, v, "must be a finite number")?;
        }
        for (key, sched) in [
            ("training.g_lr_schedule", &t.g_lr_schedule),
            ("training.d_lr_schedule", &t.d_lr_schedule),
            ("training.r1_gamma_schedule", &t.r1_gamma_schedule),
        ] {
            let finite = sched.iter().flatten().all(|v| v.is_finite());
            check(finite, key, format!("{sched:?}"), "must hold finite numbers")?;
        }
        check(
            m.resample_filter.iter().all(|v| v.is_finite()) && m.resample_filter.len() <= 16,
            "model.resample_filter",
            format!("{:?}", m.resample_filter),
            "must hold at most 16 finite numbers",
        )?;
        // Upper bounds keep a typo from asking for terabytes (sizes grow with these).
        let max_res = crate::data::shards::MAX_RESOLUTION as u32;
        check(
            m.resolution >= 8 && m.resolution <= max_res && m.resolution.is_power_of_two(),
            "model.resolution",
            m.resolution,
            &format!("must be a power of two from 8 to {max_res}"),
        )?;
        check(m.channels == 1 || m.channels == 3, "model.channels", m.channels, "must be 1 or 3 (grayscale or RGB)")?;
        check(m.c_dim <= crate::data::shards::MAX_CLASSES, "model.c_dim", m.c_dim, "must be at most 1048576")?;
        check((1..=8192).contains(&m.z_dim), "model.z_dim", m.z_dim, "must be from 1 to 8192")?;
        check((1..=8192).contains(&m.w_dim), "model.w_dim", m.w_dim, "must be from 1 to 8192")?;
        check((1..=64).contains(&m.mapping_layers), "model.mapping_layers", m.mapping_layers, "must be from 1 to 64")?;
        check(m.mapping_lr_mul > 0.0, "model.mapping_lr_mul", m.mapping_lr_mul, "must be > 0")?;
        check((1..=1 << 24).contains(&m.fmap_base), "model.fmap_base", m.fmap_base, "must be from 1 to 16777216")?;
        check((1..=8192).contains(&m.fmap_max), "model.fmap_max", m.fmap_max, "must be from 1 to 8192")?;
        check(m.mbstd_group >= 1, "model.mbstd_group", m.mbstd_group, "must be >= 1")?;
        let c4 = m.channels_at(4) as u32;
        check(
            m.mbstd_features == 0 || c4.is_multiple_of(m.mbstd_features),
            "model.mbstd_features",
            m.mbstd_features,
            "must divide the channel count at 4x4",
        )?;
        check(
            !m.resample_filter.is_empty() && m.resample_filter.iter().sum::<f64>() != 0.0,
            "model.resample_filter",
            format!("{:?}", m.resample_filter),
            "must be a non-empty filter with a non-zero sum",
        )?;
        check(
            m.num_fp16_res <= m.resolution_log2(),
            "model.num_fp16_res",
            m.num_fp16_res,
            "cannot exceed the number of resolutions",
        )?;
        if let Some(c) = m.conv_clamp {
            check(c > 0.0, "model.conv_clamp", c, "must be > 0 (omit the key for no clamping)")?;
        }

        check((1..=65536).contains(&t.batch), "training.batch", t.batch, "must be from 1 to 65536")?;
        // D's minibatch-std splits the batch into groups of min(mbstd_group, batch), as the official.
        let group = m.mbstd_group.min(t.batch);
        check(
            m.mbstd_features == 0 || t.batch.is_multiple_of(group),
            "training.batch",
            t.batch,
            &format!("must be a multiple of model.mbstd_group = {} (D's minibatch-std groups)", m.mbstd_group),
        )?;
        check(t.total_kimg > 0.0, "training.total_kimg", t.total_kimg, "must be > 0")?;
        check(t.g_lr > 0.0, "training.g_lr", t.g_lr, "must be > 0")?;
        check(t.d_lr > 0.0, "training.d_lr", t.d_lr, "must be > 0")?;
        check((0.0..1.0).contains(&t.adam_beta1), "training.adam_beta1", t.adam_beta1, "must be in [0, 1)")?;
        check((0.0..1.0).contains(&t.adam_beta2), "training.adam_beta2", t.adam_beta2, "must be in [0, 1)")?;
        check(t.adam_eps > 0.0, "training.adam_eps", t.adam_eps, "must be > 0")?;
        check(t.r1_gamma >= 0.0, "training.r1_gamma", t.r1_gamma, "must be >= 0")?;
        check(t.pl_weight >= 0.0, "training.pl_weight", t.pl_weight, "must be >= 0")?;
        check((0.0..=1.0).contains(&t.pl_decay), "training.pl_decay", t.pl_decay, "must be in [0, 1]")?;
        check(t.pl_batch_shrink >= 1, "training.pl_batch_shrink", t.pl_batch_shrink, "must be >= 1")?;
        check(
            (0.0..=1.0).contains(&t.style_mixing_prob),
            "training.style_mixing_prob",
            t.style_mixing_prob,
            "must be in [0, 1]",
        )?;
        check(t.ema_kimg >= 0.0, "training.ema_kimg", t.ema_kimg, "must be >= 0")?;
        if let Some(r) = t.ema_rampup {
            check(r > 0.0, "training.ema_rampup", r, "must be > 0 (omit the key for none)")?;
        }
        check(
            t.rollback_lr_factor > 0.0 && t.rollback_lr_factor <= 1.0,
            "training.rollback_lr_factor",
            t.rollback_lr_factor,
            "must be in (0, 1]",
        )?;
        let d_layers = m.d_layer_order().len() as u32;
        check(
            t.freeze_d <= d_layers,
            "training.freeze_d",
            t.freeze_d,
            &format!("D has {d_layers} layers before its epilogue at this resolution"),
        )?;
        for (key, sched, positive) in [
            ("training.g_lr_schedule", &t.g_lr_schedule, true),
            ("training.d_lr_schedule", &t.d_lr_schedule, true),
            ("training.r1_gamma_schedule", &t.r1_gamma_schedule, false),
        ] {
            let shown = format!("{sched:?}");
            for w in sched.windows(2) {
                check(w[0][0] <= w[1][0], key, &shown, "points must be sorted by kimg")?;
            }
            for p in sched {
                check(p[0] >= 0.0, key, &shown, "kimg must be >= 0")?;
                let ok = if positive { p[1] > 0.0 } else { p[1] >= 0.0 };
                check(ok, key, &shown, if positive { "values must be > 0" } else { "values must be >= 0" })?;
            }
        }

        let a = &self.augment;
        check(
            AUGMENT_PIPES.contains(&a.pipe.as_str()),
            "augment.pipe",
            &a.pipe,
            &format!("one of {}", AUGMENT_PIPES.join(" ")),
        )?;
        check((0.0..=1.0).contains(&a.p), "augment.p", a.p, "must be in [0, 1]")?;
        check((0.0..=1.0).contains(&a.target), "augment.target", a.target, "must be in [0, 1]")?;
        check(a.interval >= 1, "augment.interval", a.interval, "must be >= 1")?;
        check(a.kimg > 0.0, "augment.kimg", a.kimg, "must be > 0")?;
        for (k, v) in &a.multipliers {
            check(
                AUGMENT_KINDS.contains(&k.as_str()),
                "augment.multipliers",
                k,
                &format!("unknown kind; known: {}", AUGMENT_KINDS.join(" ")),
            )?;
            check(*v >= 0.0 && v.is_finite(), &format!("augment.multipliers.{k}"), v, "must be >= 0")?;
        }
        if a.mode == AugmentMode::Fixed {
            check(a.p > 0.0, "augment.p", a.p, "mode = \"fixed\" needs p > 0")?;
        }

        check(l.tick_kimg > 0.0, "logging.tick_kimg", l.tick_kimg, "must be > 0")?;
        // A ratio of at most 1 would flag every tick.
        let cf = l.collapse_factor;
        check(cf == 0.0 || cf > 1.0, "logging.collapse_factor", cf, "must be above 1, or 0 (off)")?;
        for (key, n) in
            [("logging.metrics_num_gen", l.metrics_num_gen), ("logging.metrics_num_real", l.metrics_num_real)]
        {
            if let Some(n) = n {
                check((1..=10_000_000).contains(&n), key, n, "must be from 1 to 10000000")?;
            }
        }
        for (key, n) in [("logging.grid_w", l.grid_w), ("logging.grid_h", l.grid_h)] {
            check((1..=32).contains(&n), key, n, "must be from 1 to 32")?;
        }
        Ok(())
    }
}
