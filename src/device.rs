//! Device selection: `auto | cpu | cuda | cuda:N`.

use anyhow::{bail, Result};
use tch::Device;

/// Parses a device name; `auto` picks the first CUDA device when libtorch sees one.
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    let dev = match name.as_str() {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" | "gpu" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(i) => Device::Cuda(i),
            None => bail!("--device {name}: expected auto, cpu, cuda or cuda:N"),
        },
    };
    if let Device::Cuda(i) = dev {
        let n = tch::Cuda::device_count() as usize;
        if i >= n {
            bail!("--device {name}: libtorch sees {n} CUDA device(s)");
        }
    }
    Ok(dev)
}

pub fn describe(dev: Device) -> String {
    match dev {
        Device::Cpu => format!("cpu ({} threads)", tch::get_num_threads()),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu").unwrap_err().to_string().contains("expected auto"));
        if !tch::Cuda::is_available() {
            assert_eq!(parse_device("auto").unwrap(), Device::Cpu);
            assert!(parse_device("cuda:0").is_err());
        }
    }
}
