//! Temporary stand-in for the TensorBoard event writer (same API); it records nothing.

use anyhow::Result;
use std::path::{Path, PathBuf};

pub struct EventWriter {
    path: PathBuf,
}

impl EventWriter {
    pub fn create(dir: &Path) -> Result<EventWriter> {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Ok(EventWriter { path: dir.join(format!("events.out.tfevents.{secs}.local.sg2")) })
    }
    pub fn scalar(&mut self, _tag: &str, _value: f64, _step: i64) -> Result<()> {
        Ok(())
    }
    pub fn image(&mut self, _tag: &str, _img: &crate::image_io::ImageU8, _step: i64) -> Result<()> {
        Ok(())
    }
    pub fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}
