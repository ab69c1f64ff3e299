//! `sg2 bench metrics`: images/s of a detector's own forward pass against the extraction pipeline (host records ->
//! batch -> device -> detector -> features), so per-image overhead shows as a gap; and with FID's float64
//! mean/covariance accumulation (2 x 2048^2 flops per image, as the official), which a tiny test detector on a CPU
//! makes visible and the real Inception (about 6 GFLOPs per image) does not.

use super::detector::Detector;
use super::features::{extract, FeaturePass};
use super::stats::Capture;
use anyhow::{ensure, Result};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn sync(device: Device, t: &Tensor) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
    let _ = t.sum(Kind::Float).double_value(&[]);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Measures `batches` batches of `batch` random 256x256 RGB images, 3 runs each; returns the report.
pub fn bench_metrics(detector: &Path, batch: usize, batches: usize, device: Device) -> Result<String> {
    ensure!(batch >= 1 && batches >= 1, "batch and batches must be >= 1");
    let det = Detector::load(detector, device)?;
    let kwargs: Vec<(&str, bool)> =
        if det.params.iter().any(|p| p.name == "return_features") { vec![("return_features", true)] } else { vec![] };
    let res = 256i64;
    let n = batch * batches;
    let record = (3 * res * res) as usize;
    let host: Vec<u8> = (0..n * record).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let img = Tensor::from_slice(&host[..batch * record]).reshape([batch as i64, 3, res, res]).to_device(device);
    // Warm-up (lazy initialisation, cuDNN autotuning).
    let warm = det.run_u8(&img, &kwargs)?;
    sync(device, &warm);
    // FID's mean/covariance is Inception's (2048 pool3 features); for another detector (VGG16's 4096 features serve
    // precision/recall) that line would time nothing a metric does.
    let fid = warm.size().get(1) == Some(&2048);
    let (mut raw, mut all, mut cov) = (vec![], vec![], vec![]);
    for _ in 0..3 {
        let t0 = Instant::now();
        let mut last = None;
        for _ in 0..batches {
            last = Some(det.run_u8(&img, &kwargs)?);
        }
        sync(device, last.as_ref().unwrap());
        raw.push(n as f64 / t0.elapsed().as_secs_f64());
        let captures = if fid {
            vec![(Capture::All, &mut all), (Capture::MeanCov, &mut cov)]
        } else {
            vec![(Capture::All, &mut all)]
        };
        for (capture, out) in captures {
            let t0 = Instant::now();
            let pass = FeaturePass { det: &det, kwargs: &kwargs, capture, count: n, batch, show: false, dist: None };
            let stats = extract(&pass, "", |s, k| {
                let bytes = &host[s * record..(s + k) * record];
                Ok(Tensor::from_slice(bytes).reshape([k as i64, 3, res, res]))
            })?;
            let done = if capture == Capture::All { stats.all()? } else { stats.mean_cov()?.0 };
            sync(device, &done);
            out.push(n as f64 / t0.elapsed().as_secs_f64());
        }
    }
    let (r, a) = (median(raw.clone()), median(all.clone()));
    let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>().join(" / ");
    let mut report = format!(
        "detector {} ({}) on {device:?}, batch {batch}, {n} images of 256x256 per run, median of 3\n\
         raw forward (images on the device):       {r:.1} images/s (runs {})\n\
         extraction (host records -> features):    {a:.1} images/s (runs {}), {:.1}% of the forward",
        det.path.display(),
        det.hash,
        fmt(&raw),
        fmt(&all),
        100.0 * a / r,
    );
    if fid {
        let c = median(cov.clone());
        report += &format!(
            "\nextraction + float64 mean/cov (FID):      {c:.1} images/s (runs {}), {:.1}% of the forward",
            fmt(&cov),
            100.0 * c / r
        );
    }
    Ok(report)
}
