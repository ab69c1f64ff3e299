//! Where images come from. Every source has a fixed, deterministic order and random access by position, so a run
//! can be shuffled with a seed and resumed after `consumed` items.

use crate::image_io::ImageU8;
use anyhow::{Context, Result};

pub mod cifar;
pub mod images;
pub mod lmdb_file;
pub mod lsun;
pub mod mnist;
pub mod pickle;

/// An image as the source holds it: encoded bytes (decoded in parallel later) or raw pixels.
pub enum Payload {
    Encoded(Vec<u8>),
    Raw(ImageU8),
    /// A file too large to read as an image (why), skipped like a decompression bomb.
    TooLarge(String),
    /// A file or archive entry that cannot be read (why): unreadable, damaged or in an unsupported compression,
    /// skipped and counted like an undecodable image.
    Unreadable(String),
}

/// One source item.
pub struct Item {
    /// Identifies the item in messages (LMDB key, file path, `train[123]`).
    pub key: String,
    pub payload: Payload,
    pub label: Option<u32>,
}

pub trait Source: Send {
    /// Number of items.
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Item at position `index` of the source's own order.
    fn get(&mut self, index: u64) -> Result<Item>;
    /// Items `start..` in the source's order; sources with a faster sequential path override this.
    fn read_range(&mut self, start: u64, n: u64) -> Result<Vec<Item>> {
        (start..(start + n).min(self.len())).map(|i| self.get(i)).collect()
    }
    /// Number of label classes (0: no labels).
    fn num_classes(&self) -> u32 {
        0
    }
    /// Entries left out while listing the source, by reason (counted in the summary's skips).
    fn listing_skips(&self) -> Vec<(&'static str, u64)> {
        vec![]
    }
    /// A description for the manifest (kind, path).
    fn describe(&self) -> serde_json::Value;
}

/// The container format of encoded image bytes, from their magic number.
pub fn sniff(bytes: &[u8]) -> Option<image::ImageFormat> {
    if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(image::ImageFormat::WebP)
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some(image::ImageFormat::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(image::ImageFormat::Png)
    } else if bytes.starts_with(b"GIF8") {
        Some(image::ImageFormat::Gif)
    } else {
        None
    }
}

/// An image whose pixels would exceed the decoder's memory limit (512 MiB): a decompression bomb or a huge scan,
/// told apart from damaged files in the summary.
#[derive(Debug, thiserror::Error)]
#[error("too large to decode: {0}")]
pub struct TooLarge(pub String);

/// Decodes PNG, JPEG, WebP or GIF bytes to 1 or 3 channels. With `channels` = 1, colour images are converted with
/// Pillow's luma weights; grayscale images are kept as they are. An image over the memory limit is a [`TooLarge`].
pub fn decode(bytes: &[u8], channels: usize) -> Result<ImageU8> {
    let fmt = sniff(bytes).context("not a PNG, JPEG, WebP or GIF image")?;
    if fmt == image::ImageFormat::WebP {
        if let Some(img) = decode_webp(bytes)? {
            return Ok(img.with_channels(channels));
        }
    }
    match image::load_from_memory_with_format(bytes, fmt) {
        Ok(img) => Ok(from_dynamic(img, channels)),
        Err(image::ImageError::Limits(e)) => {
            let dims = image::ImageReader::with_format(std::io::Cursor::new(bytes), fmt).into_dimensions();
            let size = dims.map_or(e.to_string(), |(w, h)| format!("{w}x{h} pixels"));
            Err(TooLarge(size).into())
        }
        Err(e) => Err(anyhow::Error::new(e).context("undecodable image")),
    }
}

/// Largest decoded image, in bytes of RGBA pixels (the `image` crate's default allocation limit).
pub const MAX_DECODED_BYTES: u64 = 512 << 20;

/// A still WebP through libwebp (the decoder Pillow uses, with its default fancy chroma upsampling, several times
/// faster than a pure-Rust one on LSUN's lossy files); alpha is dropped as Pillow's `convert("RGB")` does. None
/// for what libwebp's simple API does not take (animations, unparsable headers): the `image` crate then decodes
/// or names the damage.
fn decode_webp(bytes: &[u8]) -> Result<Option<ImageU8>> {
    let Some(features) = webp::BitstreamFeatures::new(bytes) else { return Ok(None) };
    if features.has_animation() {
        return Ok(None);
    }
    let (w, h) = (features.width() as usize, features.height() as usize);
    if w as u64 * h as u64 * 4 > MAX_DECODED_BYTES {
        return Err(TooLarge(format!("{w}x{h} pixels")).into());
    }
    let img =
        webp::Decoder::new(bytes).decode().context("undecodable image: libwebp could not decode the WebP data")?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let data =
        if img.is_alpha() { img.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect() } else { img.to_vec() };
    Ok(Some(ImageU8::new(w, h, 3, data)))
}

/// Whether the decoded image is grayscale (decides 1 or 3 channels for image folders).
pub fn is_grayscale(bytes: &[u8]) -> Result<bool> {
    Ok(shape(bytes)?.2)
}

/// Width, height and whether it is grayscale, of the decoded image.
pub fn shape(bytes: &[u8]) -> Result<(u32, u32, bool)> {
    let fmt = sniff(bytes).context("not a PNG, JPEG, WebP or GIF image")?;
    let img = image::load_from_memory_with_format(bytes, fmt).context("undecodable image")?;
    anyhow::ensure!(img.width() > 0 && img.height() > 0, "empty image (0 pixels)");
    Ok((img.width(), img.height(), !img.color().has_color()))
}

/// A decoded image as 1 or 3 channels (see [`decode`]).
pub fn from_dynamic(img: image::DynamicImage, channels: usize) -> ImageU8 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if channels == 1 && !img.color().has_color() {
        ImageU8::new(w, h, 1, img.into_luma8().into_raw())
    } else {
        ImageU8::new(w, h, 3, img.into_rgb8().into_raw()).with_channels(channels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(w: usize, h: usize, c: usize) -> Vec<u8> {
        (0..w * h * c).map(|i| ((i * 37 + i / (w * c) * 11) % 251) as u8).collect()
    }

    /// libwebp gives the `image` crate's pixels on lossy files and the exact pixels on lossless ones; alpha is
    /// dropped and grayscale uses Pillow's weights either way.
    #[test]
    fn webp_through_libwebp_matches_the_image_crate() {
        let (w, h) = (37, 21);
        let rgb = pattern(w, h, 3);
        let lossy = webp::Encoder::from_rgb(&rgb, w as u32, h as u32).encode(75.0).to_vec();
        let reference = from_dynamic(image::load_from_memory(&lossy).unwrap(), 3);
        for channels in [3, 1] {
            let ours = decode(&lossy, channels).unwrap();
            assert!(ours == reference.clone().with_channels(channels), "lossy, {channels} channel(s)");
        }
        // Alpha kept above 0: lossless WebP may drop the colour of fully transparent pixels.
        let rgba: Vec<u8> = pattern(w, h, 4).chunks_exact(4).flat_map(|p| [p[0], p[1], p[2], 1 + p[3] / 2]).collect();
        let lossless = webp::Encoder::from_rgba(&rgba, w as u32, h as u32).encode_lossless().to_vec();
        let ours = decode(&lossless, 3).unwrap();
        let expect: Vec<u8> = rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
        assert_eq!(ours.dims(), (w, h, 3));
        assert!(ours.data == expect, "lossless pixels differ");
        // Damage: a one-line error, never a panic.
        let cut = &lossy[..lossy.len() / 2];
        assert!(decode(cut, 3).is_err());
    }
}
