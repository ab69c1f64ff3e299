//! TensorBoard event files: written by sg2, read back by sg2's record reader and by TensorBoard's own
//! EventAccumulator (the Python `tensorboard` package that the setup script installs).

mod common;

use sg2::image_io::ImageU8;
use sg2::train::tensorboard::{read_events, EventWriter, SummaryValue};
use std::process::Command;

fn sample_image() -> ImageU8 {
    let (w, h) = (6u32, 4u32);
    let data = (0..w * h * 3).map(|i| (i * 7 % 256) as u8).collect();
    ImageU8 { width: w, height: h, channels: 3, data }
}

fn write_sample(dir: &std::path::Path) -> std::path::PathBuf {
    let mut w = EventWriter::create(dir).unwrap();
    for step in 0..5i64 {
        w.scalar("Loss/G/loss", 0.5 + step as f64, step * 32).unwrap();
        w.scalar("Loss/D/loss", -1.25 * step as f64, step * 32).unwrap();
    }
    w.image("fakes", &sample_image(), 128).unwrap();
    w.flush().unwrap();
    w.path().to_path_buf()
}

#[test]
fn own_reader_gets_back_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_sample(dir.path());
    assert!(path.file_name().unwrap().to_str().unwrap().starts_with("events.out.tfevents."));
    let events = read_events(&path).unwrap();
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    let scalars: Vec<(String, i64, f32)> = events
        .iter()
        .flat_map(|e| {
            e.summary.iter().filter_map(move |(tag, v)| match v {
                SummaryValue::Scalar(x) => Some((tag.clone(), e.step, *x)),
                _ => None,
            })
        })
        .collect();
    assert_eq!(scalars.len(), 10);
    assert_eq!(scalars[2], ("Loss/G/loss".into(), 32, 1.5));
    assert_eq!(scalars[9], ("Loss/D/loss".into(), 128, -5.0));
    let (tag, img) = events.last().unwrap().summary[0].clone();
    assert_eq!(tag, "fakes");
    let SummaryValue::Image { width, height, channels, png } = img else { panic!("not an image: {img:?}") };
    assert_eq!((width, height, channels), (6, 4, 3));
    let decoded = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(decoded.into_raw(), sample_image().data);
    assert!(events.windows(2).all(|p| p[0].wall_time <= p[1].wall_time));
}

#[test]
fn a_truncated_last_record_is_ignored_and_a_corrupt_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_sample(dir.path());
    let full = read_events(&path).unwrap().len();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    assert_eq!(read_events(&path).unwrap().len(), full - 1);
    let mut bad = bytes.clone();
    bad[30] ^= 0xff;
    std::fs::write(&path, &bad).unwrap();
    let err = read_events(&path).unwrap_err().to_string();
    assert!(err.contains("CRC mismatch") && err.contains(path.to_str().unwrap()), "{err}");
}

#[test]
fn two_writers_in_one_folder_get_separate_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = EventWriter::create(dir.path()).unwrap();
    let b = EventWriter::create(dir.path()).unwrap();
    assert_ne!(a.path(), b.path());
}

#[test]
fn tensorboard_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_sample(dir.path());
    let script = r#"
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "images": 0})
acc.Reload()
tags = acc.Tags()
for tag in sorted(tags["scalars"]):
    for e in acc.Scalars(tag):
        print("scalar", tag, e.step, repr(e.value))
for tag in tags["images"]:
    for e in acc.Images(tag):
        print("image", tag, e.step, e.width, e.height, len(e.encoded_image_string))
"#;
    let out = Command::new(common::python()).arg("-c").arg(script).arg(dir.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "TensorBoard's reader failed (the setup script installs the `tensorboard` package): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 11, "{stdout}");
    assert!(lines.contains(&"scalar Loss/D/loss 96 -3.75"), "{stdout}");
    assert!(lines.contains(&"scalar Loss/G/loss 0 0.5"), "{stdout}");
    let png_len = sample_image().encode_png().unwrap().len();
    assert!(lines.contains(&format!("image fakes 128 6 4 {png_len}").as_str()), "{stdout}");
}
