//! TensorBoard event files, written natively: `tensorboard --logdir runs` reads them.
//!
//! An event file is a sequence of TFRecords (`u64` length, masked CRC-32C of the length, the payload, masked
//! CRC-32C of the payload, all little-endian) whose payloads are `tensorflow.Event` protocol buffers. Only the
//! handful of fields sg2 writes are encoded, by hand: no protobuf dependency is needed for that.
//!
//! `Event`: wall_time (1, double), step (2, int64), file_version (3, string), summary (5, Summary), session_log (7,
//! SessionLog: status (1, enum; START = 1)).
//! `Summary`: repeated value (1, Value). `Value`: tag (1, string), simple_value (2, float), image (4, Image).
//! `Image`: height (1), width (2), colorspace (3), encoded_image_string (4, PNG bytes).

use crate::image_io::ImageU8;
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const MASK_DELTA: u32 = 0xa282_ead8;

/// The CRC-32C as TFRecord stores it: rotated and offset so that a CRC of data that contains CRCs stays strong.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Writes one run's events; every `scalar`/`image` call is one event, flushed at `flush` and on drop.
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates `events.out.tfevents.<unix seconds>.<host>.sg2` in `dir` (a new file per process, as TensorBoard
    /// expects: a resumed run adds a file beside the old ones and TensorBoard merges them).
    pub fn create(dir: &Path) -> Result<EventWriter> {
        crate::util::create_dir(dir)?;
        let secs = wall_time() as u64;
        let host = hostname();
        let mut n = 0;
        let path = loop {
            // Two writers started in the same second must not share a file.
            let suffix = if n == 0 { String::new() } else { format!(".{n}") };
            let p = dir.join(format!("events.out.tfevents.{secs}.{host}.sg2{suffix}"));
            if !p.exists() {
                break p;
            }
            n += 1;
        };
        let file = File::create(&path).with_context(|| format!("{}: cannot create event file", path.display()))?;
        let mut w = EventWriter { path, out: BufWriter::new(file) };
        let mut ev = Vec::new();
        put_f64(&mut ev, 1, wall_time());
        put_bytes(&mut ev, 3, b"brain.Event:2");
        w.record(&ev)?;
        w.flush()?;
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn scalar(&mut self, tag: &str, value: f64, step: i64) -> Result<()> {
        let mut v = Vec::new();
        put_bytes(&mut v, 1, tag.as_bytes());
        put_f32(&mut v, 2, value as f32);
        self.summary_event(&v, step)
    }

    /// An image summary (PNG-encoded): grayscale, RGB and RGBA are stored as they are.
    pub fn image(&mut self, tag: &str, img: &ImageU8, step: i64) -> Result<()> {
        let png = img.encode_png()?;
        let mut im = Vec::new();
        put_varint_field(&mut im, 1, img.height as u64);
        put_varint_field(&mut im, 2, img.width as u64);
        put_varint_field(&mut im, 3, img.channels as u64);
        put_bytes(&mut im, 4, &png);
        let mut v = Vec::new();
        put_bytes(&mut v, 1, tag.as_bytes());
        put_bytes(&mut v, 4, &im);
        self.summary_event(&v, step)
    }

    /// A `SessionLog` START at `step`: TensorBoard then discards every earlier-written event at this step or later
    /// (`purge_orphaned_data`), i.e. work a resume or rollback threw away.
    pub fn session_start(&mut self, step: i64) -> Result<()> {
        let mut log = Vec::new();
        put_varint_field(&mut log, 1, 1);
        let mut ev = Vec::new();
        put_f64(&mut ev, 1, wall_time());
        put_varint_field(&mut ev, 2, step as u64);
        put_bytes(&mut ev, 7, &log);
        self.record(&ev)?;
        self.flush()
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().with_context(|| format!("{}: cannot write", self.path.display()))?;
        Ok(())
    }

    fn summary_event(&mut self, value: &[u8], step: i64) -> Result<()> {
        let mut summary = Vec::new();
        put_bytes(&mut summary, 1, value);
        let mut ev = Vec::new();
        put_f64(&mut ev, 1, wall_time());
        put_varint_field(&mut ev, 2, step as u64);
        put_bytes(&mut ev, 5, &summary);
        self.record(&ev)
    }

    fn record(&mut self, payload: &[u8]) -> Result<()> {
        let len = (payload.len() as u64).to_le_bytes();
        let mut buf = Vec::with_capacity(payload.len() + 16);
        buf.extend_from_slice(&len);
        buf.extend_from_slice(&masked_crc(&len).to_le_bytes());
        buf.extend_from_slice(payload);
        buf.extend_from_slice(&masked_crc(payload).to_le_bytes());
        self.out.write_all(&buf).with_context(|| format!("{}: cannot write", self.path.display()))
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

fn wall_time() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name: String = raw.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(buf, ((field as u64) << 3) | wire as u64);
}

fn put_varint_field(buf: &mut Vec<u8>, field: u32, v: u64) {
    put_key(buf, field, 0);
    put_varint(buf, v);
}

fn put_f64(buf: &mut Vec<u8>, field: u32, v: f64) {
    put_key(buf, field, 1);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_f32(buf: &mut Vec<u8>, field: u32, v: f32) {
    put_key(buf, field, 5);
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(buf, field, 2);
    put_varint(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// One event as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub wall_time: f64,
    pub step: i64,
    pub file_version: Option<String>,
    pub summary: Vec<(String, SummaryValue)>,
    /// A SessionLog START: events written before it at this step or later are orphans.
    pub session_start: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SummaryValue {
    Scalar(f32),
    Image {
        width: u32,
        height: u32,
        channels: u32,
        png: Vec<u8>,
    },
    /// A value kind sg2 does not write (histogram, tensor, ...).
    Other,
}

/// Reads an event file, checking both CRCs of every record; a truncated last record (a writer killed
/// mid-write) ends the list, as TensorBoard treats it.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let mut events = Vec::new();
    let mut pos = 0;
    while pos + 12 <= bytes.len() {
        let len_bytes = &bytes[pos..pos + 8];
        let stored = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap());
        if masked_crc(len_bytes) != stored {
            bail!("{}: record at byte {pos}: length CRC mismatch", path.display());
        }
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let start = pos + 12;
        if start + len + 4 > bytes.len() {
            break;
        }
        let payload = &bytes[start..start + len];
        let stored = u32::from_le_bytes(bytes[start + len..start + len + 4].try_into().unwrap());
        if masked_crc(payload) != stored {
            bail!("{}: record at byte {pos}: data CRC mismatch", path.display());
        }
        events.push(parse_event(payload).with_context(|| format!("{}: record at byte {pos}", path.display()))?);
        pos = start + len + 4;
    }
    Ok(events)
}

/// A protobuf field as found on the wire.
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

fn fields(mut buf: &[u8]) -> Result<Vec<(u32, Field<'_>)>> {
    fn varint(buf: &mut &[u8]) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first().context("truncated varint")?;
            *buf = rest;
            v |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        bail!("varint longer than 10 bytes")
    }
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
        if buf.len() < n {
            bail!("truncated field");
        }
        let (head, rest) = buf.split_at(n);
        *buf = rest;
        Ok(head)
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let field = (key >> 3) as u32;
        let f = match key & 7 {
            0 => Field::Varint(varint(&mut buf)?),
            1 => Field::Fixed64(u64::from_le_bytes(take(&mut buf, 8)?.try_into().unwrap())),
            2 => {
                let n = varint(&mut buf)? as usize;
                Field::Bytes(take(&mut buf, n)?)
            }
            5 => Field::Fixed32(u32::from_le_bytes(take(&mut buf, 4)?.try_into().unwrap())),
            w => bail!("unsupported wire type {w}"),
        };
        out.push((field, f));
    }
    Ok(out)
}

fn parse_event(buf: &[u8]) -> Result<Event> {
    let mut ev = Event { wall_time: 0.0, step: 0, file_version: None, summary: vec![], session_start: false };
    for (num, f) in fields(buf)? {
        match (num, f) {
            (1, Field::Fixed64(v)) => ev.wall_time = f64::from_bits(v),
            (2, Field::Varint(v)) => ev.step = v as i64,
            (3, Field::Bytes(b)) => ev.file_version = Some(String::from_utf8_lossy(b).into_owned()),
            (5, Field::Bytes(b)) => {
                for (num, f) in fields(b)? {
                    if let (1, Field::Bytes(v)) = (num, f) {
                        ev.summary.push(parse_value(v)?);
                    }
                }
            }
            (7, Field::Bytes(b)) => {
                ev.session_start = fields(b)?.iter().any(|(n, f)| *n == 1 && matches!(f, Field::Varint(1)));
            }
            _ => {}
        }
    }
    Ok(ev)
}

/// The events of a run folder as TensorBoard shows them: every event file in write order (by name), with the events
/// a later SessionLog START orphaned (an equal or larger step, written before it) removed.
pub fn read_run_events(dir: &Path) -> Result<Vec<Event>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("events.out.tfevents.")))
        .collect();
    files.sort();
    let mut out: Vec<Event> = vec![];
    for f in files {
        for ev in read_events(&f)? {
            if ev.session_start {
                out.retain(|e| e.step < ev.step || e.file_version.is_some());
            }
            out.push(ev);
        }
    }
    Ok(out)
}

fn parse_value(buf: &[u8]) -> Result<(String, SummaryValue)> {
    let mut tag = String::new();
    let mut value = SummaryValue::Other;
    for (num, f) in fields(buf)? {
        match (num, f) {
            (1, Field::Bytes(b)) => tag = String::from_utf8_lossy(b).into_owned(),
            (2, Field::Fixed32(v)) => value = SummaryValue::Scalar(f32::from_bits(v)),
            (4, Field::Bytes(b)) => {
                let (mut width, mut height, mut channels, mut png) = (0, 0, 0, Vec::new());
                for (num, f) in fields(b)? {
                    match (num, f) {
                        (1, Field::Varint(v)) => height = v as u32,
                        (2, Field::Varint(v)) => width = v as u32,
                        (3, Field::Varint(v)) => channels = v as u32,
                        (4, Field::Bytes(p)) => png = p.to_vec(),
                        _ => {}
                    }
                }
                value = SummaryValue::Image { width, height, channels, png };
            }
            _ => {}
        }
    }
    Ok((tag, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_crc_matches_the_tfrecord_definition() {
        // CRC-32C check value of "123456789" is 0xE3069283 (RFC 3720); masking is rotr 15 plus 0xa282ead8.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        // ((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xa282ead8 mod 2^32, worked out by hand.
        assert_eq!(masked_crc(b"123456789"), 0xC78A_B0E5);
    }

    #[test]
    fn varints_encode_as_protobuf_does() {
        let mut b = Vec::new();
        put_varint(&mut b, 300);
        assert_eq!(b, [0xAC, 0x02]); // the protobuf documentation's example
        let mut b = Vec::new();
        put_varint_field(&mut b, 2, 150);
        assert_eq!(b, [0x10, 0x96, 0x01]);
    }
}
