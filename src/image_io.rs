//! The program's one 8-bit image type, and how images leave the program: the official float -> uint8 conversion,
//! PNG files, grids and animated GIFs.

use crate::util::{progress_bar, write_atomic, write_bytes_atomic, Progress};
use anyhow::{bail, ensure, Context, Result};
use image::codecs::gif::{GifEncoder, Repeat};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{Delay, ExtendedColorType, Frame, ImageEncoder, ImageFormat, RgbaImage};
use std::io::Write;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Float images in [-1, 1] to uint8 as the official tools do: `(img * 127.5 + 128).clamp(0, 255).to(uint8)`. The
/// cast truncates, so the `+ 128` (not 127.5) is what rounds to nearest. Computed in float32 like the reference;
/// same layout and device as the input.
pub fn to_uint8(img: &Tensor) -> Tensor {
    (img.detach().to_kind(Kind::Float) * 127.5 + 128.0).clamp(0.0, 255.0).to_kind(Kind::Uint8)
}

/// NCHW float images in [-1, 1] to NHWC uint8 on the CPU, as the official `generate.py` saves them.
pub fn to_uint8_nhwc(img: &Tensor) -> Tensor {
    assert_eq!(img.dim(), 4, "to_uint8_nhwc: expected NCHW images, got shape {:?}", img.size());
    to_uint8(img).permute([0, 2, 3, 1]).to_device(Device::Cpu).contiguous()
}

/// An 8-bit image with interleaved channels (HWC): 1 = grayscale, 3 = RGB. Sizes are stored as the image formats
/// take them (u32); [`ImageU8::new`] and [`ImageU8::dims`] work in memory sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageU8 {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    pub data: Vec<u8>,
}

impl ImageU8 {
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), width * height * channels, "ImageU8: {width}x{height}x{channels} buffer size");
        let dim = |v: usize| u32::try_from(v).expect("ImageU8: dimension above u32");
        ImageU8 { width: dim(width), height: dim(height), channels: dim(channels), data }
    }

    /// (width, height, channels).
    pub fn dims(&self) -> (usize, usize, usize) {
        (self.width as usize, self.height as usize, self.channels as usize)
    }

    /// Rows `y0..y0+h`, columns `x0..x0+w`.
    pub fn crop(&self, x0: usize, y0: usize, w: usize, h: usize) -> ImageU8 {
        let (width, height, c) = self.dims();
        assert!(x0 + w <= width && y0 + h <= height, "crop out of bounds");
        let mut data = Vec::with_capacity(w * h * c);
        for y in y0..y0 + h {
            let row = (y * width + x0) * c;
            data.extend_from_slice(&self.data[row..row + w * c]);
        }
        ImageU8::new(w, h, c, data)
    }

    /// Grayscale to RGB by repeating the channel; RGB to grayscale with ITU-R 601-2 luma as Pillow's `convert('L')`.
    pub fn with_channels(self, channels: usize) -> ImageU8 {
        let (w, h, c) = self.dims();
        match (c, channels) {
            (a, b) if a == b => self,
            (1, 3) => ImageU8::new(w, h, 3, self.data.iter().flat_map(|&v| [v, v, v]).collect()),
            (3, 1) => {
                // Pillow: L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16.
                let data = self
                    .data
                    .chunks_exact(3)
                    .map(|p| ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8)
                    .collect();
                ImageU8::new(w, h, 1, data)
            }
            (a, b) => panic!("unsupported channel conversion {a} -> {b}"),
        }
    }

    /// An all-black image.
    pub fn black(width: u32, height: u32, channels: u32) -> Self {
        assert!(channels == 1 || channels == 3, "ImageU8: {channels} channels (expected 1 or 3)");
        Self { width, height, channels, data: vec![0; width as usize * height as usize * channels as usize] }
    }

    /// Image `index` of a uint8 NHWC tensor (as made by [`to_uint8_nhwc`]).
    pub fn from_nhwc(t: &Tensor, index: i64) -> Self {
        let size = t.size();
        assert!(
            t.kind() == Kind::Uint8 && size.len() == 4 && (size[3] == 1 || size[3] == 3),
            "ImageU8::from_nhwc: expected uint8 [N, H, W, 1 or 3], got {:?} {size:?}",
            t.kind()
        );
        assert!((0..size[0]).contains(&index), "ImageU8::from_nhwc: index {index} out of 0..{}", size[0]);
        let one = t.select(0, index).to_device(Device::Cpu).contiguous().flatten(0, -1);
        let data = Vec::<u8>::try_from(&one).expect("uint8 tensor to bytes");
        Self { width: size[2] as u32, height: size[1] as u32, channels: size[3] as u32, data }
    }

    fn color_type(&self) -> ExtendedColorType {
        if self.channels == 1 {
            ExtendedColorType::L8
        } else {
            ExtendedColorType::Rgb8
        }
    }

    fn check(&self) -> Result<()> {
        ensure!(self.channels == 1 || self.channels == 3, "image has {} channels (expected 1 or 3)", self.channels);
        let n = self.width as usize * self.height as usize * self.channels as usize;
        ensure!(
            self.data.len() == n,
            "image data has {} bytes, {}x{}x{} needs {n}",
            self.data.len(),
            self.width,
            self.height,
            self.channels
        );
        Ok(())
    }

    /// The PNG file's bytes (grayscale for 1 channel, RGB for 3).
    pub fn encode_png(&self) -> Result<Vec<u8>> {
        self.check()?;
        let mut bytes = Vec::new();
        PngEncoder::new(&mut bytes).write_image(&self.data, self.width, self.height, self.color_type())?;
        Ok(bytes)
    }

    /// The JPEG file's bytes (quality 95; grayscale for 1 channel, RGB for 3).
    pub fn encode_jpeg(&self) -> Result<Vec<u8>> {
        self.check()?;
        ensure!(
            self.width <= 65535 && self.height <= 65535,
            "{}x{} is larger than JPEG allows",
            self.width,
            self.height
        );
        let mut bytes = Vec::new();
        JpegEncoder::new_with_quality(&mut bytes, 95).write_image(
            &self.data,
            self.width,
            self.height,
            self.color_type(),
        )?;
        Ok(bytes)
    }

    /// Writes the image atomically in the format its extension names (see [`format_of`]): JPEG for `.jpg` and
    /// `.jpeg`, PNG otherwise.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = match format_of(path) {
            Some(ImageFormat::Jpeg) => self.encode_jpeg(),
            _ => self.encode_png(),
        }
        .with_context(|| format!("{}: cannot save", path.display()))?;
        write_bytes_atomic(path, &bytes)
    }

    /// Writes a PNG (grayscale for 1 channel, RGB for 3) atomically.
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.encode_png().with_context(|| format!("{}: cannot save", path.display()))?;
        write_bytes_atomic(path, &bytes)
    }

    /// Reads a PNG: grayscale ones (with or without alpha, any depth) as 1 channel, all others as RGB.
    pub fn load_png(path: impl AsRef<Path>) -> Result<ImageU8> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let img = image::load_from_memory_with_format(&bytes, ImageFormat::Png)
            .with_context(|| format!("{}: not a readable PNG", path.display()))?;
        let (width, height) = (img.width(), img.height());
        Ok(if img.color().has_color() {
            ImageU8 { width, height, channels: 3, data: img.to_rgb8().into_raw() }
        } else {
            ImageU8 { width, height, channels: 1, data: img.to_luma8().into_raw() }
        })
    }
}

/// Tiles equal-sized images row-major into `cols` columns with no gaps; a partial last row is left black.
pub fn grid(images: &[ImageU8], cols: usize) -> Result<ImageU8> {
    ensure!(!images.is_empty(), "image grid: no images");
    ensure!(cols > 0, "image grid: 0 columns");
    let first = &images[0];
    for (i, im) in images.iter().enumerate() {
        im.check().with_context(|| format!("image grid: image {i}"))?;
        if (im.width, im.height, im.channels) != (first.width, first.height, first.channels) {
            bail!(
                "image grid: image {i} is {}x{}x{}, image 0 is {}x{}x{}",
                im.width,
                im.height,
                im.channels,
                first.width,
                first.height,
                first.channels
            );
        }
    }
    let rows = images.len().div_ceil(cols);
    let (w, h, c) = (first.width as usize, first.height as usize, first.channels as usize);
    let mut out = ImageU8::black((cols * w) as u32, (rows * h) as u32, first.channels);
    let row_bytes = w * c;
    let out_row_bytes = cols * row_bytes;
    for (i, im) in images.iter().enumerate() {
        let (gy, gx) = (i / cols, i % cols);
        for y in 0..h {
            let dst = (gy * h + y) * out_row_bytes + gx * row_bytes;
            out.data[dst..dst + row_bytes].copy_from_slice(&im.data[y * row_bytes..(y + 1) * row_bytes]);
        }
    }
    Ok(out)
}

/// Still images a user may ask for: the extension of the output names the format.
pub const STILL: &[ImageFormat] = &[ImageFormat::Png, ImageFormat::Jpeg];

/// The format that a file's extension names: `.png`, `.jpg` / `.jpeg` or `.gif`, in any case.
pub fn format_of(path: &Path) -> Option<ImageFormat> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "png" => Some(ImageFormat::Png),
        "jpg" | "jpeg" => Some(ImageFormat::Jpeg),
        "gif" => Some(ImageFormat::Gif),
        _ => None,
    }
}

/// Checks, before any work, that the output `path` given as `option` ends in an extension of one of `allowed`, so
/// a file's name never disagrees with its content.
pub fn check_extension(path: &Path, option: &str, allowed: &[ImageFormat]) -> Result<()> {
    if format_of(path).is_some_and(|f| allowed.contains(&f)) {
        return Ok(());
    }
    let names: Vec<&str> = allowed
        .iter()
        .map(|f| match f {
            ImageFormat::Png => ".png",
            ImageFormat::Jpeg => ".jpg",
            _ => ".gif",
        })
        .collect();
    bail!("{option} {}: the extension names the format: end the name in {}", path.display(), names.join(" or "))
}

/// Writes an infinitely looping animated GIF atomically. Grayscale frames become RGB. GIF stores delays in
/// hundredths of a second, so rates that do not divide 100 play slightly faster.
pub fn save_gif(path: impl AsRef<Path>, frames: &[ImageU8], fps: u32) -> Result<()> {
    let path = path.as_ref();
    ensure!(!frames.is_empty(), "{}: cannot write GIF: no frames", path.display());
    for (i, f) in frames.iter().enumerate() {
        check_frame(path, f, i, (frames[0].width, frames[0].height))?;
    }
    save_gif_with(path, frames.len(), fps, |i| Ok(frames[i].clone()))
}

fn check_frame(path: &Path, f: &ImageU8, i: usize, (w, h): (u32, u32)) -> Result<()> {
    let context = || format!("{}: cannot write GIF", path.display());
    f.check().with_context(|| format!("{}: frame {i}", context()))?;
    ensure!((f.width, f.height) == (w, h), "{}: frame {i} is {}x{}, frame 0 is {w}x{h}", context(), f.width, f.height);
    ensure!(w <= 65535 && h <= 65535, "{}: {w}x{h} is larger than GIF allows (65535)", context());
    Ok(())
}

/// [`save_gif`] for `n` frames made one at a time by `frame(i)`, so a long animation never sits in memory: the
/// file is encoded as the frames come (to a temp file, renamed into place at the end).
pub fn save_gif_with(
    path: impl AsRef<Path>,
    n: usize,
    fps: u32,
    mut frame: impl FnMut(usize) -> Result<ImageU8>,
) -> Result<()> {
    let path = path.as_ref();
    let context = || format!("{}: cannot write GIF", path.display());
    ensure!(n > 0, "{}: no frames", context());
    ensure!(fps > 0, "{}: fps must be positive", context());
    let bar = progress_bar(Progress::Frames, n as u64, &format!("writing {}", path.display()), true);
    let delay = Delay::from_numer_denom_ms(1000, fps);
    write_atomic(path, |file| {
        let mut out = std::io::BufWriter::new(file);
        let mut size = None;
        {
            // Palette quantisation (for frames with more than 256 colours) dominates; speed 10 is gif's own default.
            let mut enc = GifEncoder::new_with_speed(&mut out, 10);
            enc.set_repeat(Repeat::Infinite).with_context(context)?;
            for i in 0..n {
                let f = frame(i)?;
                let (w, h) = *size.get_or_insert((f.width, f.height));
                check_frame(path, &f, i, (w, h))?;
                let rgba: Vec<u8> =
                    f.clone().with_channels(3).data.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
                let buf = RgbaImage::from_raw(w, h, rgba).expect("frame size checked above");
                enc.encode_frame(Frame::from_parts(buf, 0, 0, delay)).with_context(context)?;
                bar.inc(1);
            }
            // The encoder writes the GIF trailer when dropped, here, before the flush that reports write errors.
        }
        out.flush().with_context(context)?;
        Ok(())
    })?;
    bar.finish_and_clear();
    Ok(())
}

/// Largest image assembled in memory (a grid, a style-mix figure, a GIF's frames together): 1 GiB of pixels.
pub const MAX_IMAGE_BYTES: u64 = 1 << 30;

/// Refuses an output of `images` images of `width x height x channels` above [`MAX_IMAGE_BYTES`], saying its size
/// and the limit (`what` names the options that set it).
pub fn ensure_fits(what: &str, images: u64, width: u64, height: u64, channels: u64) -> Result<()> {
    let bytes = width.saturating_mul(height).saturating_mul(channels).saturating_mul(images);
    let count = if images == 1 { String::new() } else { format!("{images} images of ") };
    ensure!(
        bytes <= MAX_IMAGE_BYTES,
        "{what}: the output would be {count}{width}x{height} pixels x {channels} channels = {}, above the limit of {}",
        crate::util::human_bytes(bytes),
        crate::util::human_bytes(MAX_IMAGE_BYTES)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::AnimationDecoder;

    /// Deterministic varied bytes (a small LCG), so round trips see every kind of value.
    fn pattern(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect()
    }

    fn solid(w: u32, h: u32, rgb: [u8; 3]) -> ImageU8 {
        ImageU8 { width: w, height: h, channels: 3, data: (0..w * h).flat_map(|_| rgb).collect() }
    }

    #[test]
    fn conversion_rounds_like_the_official_generate() {
        // value * 127.5 + 128, clamped, truncated: -1 -> 0.5 -> 0; 1 -> 255.5 -> 255; 0 -> 128; -1.01 -> clamp 0;
        // 0.5 -> 191.75 -> 191; -0.5 -> 64.25 -> 64; 1.5 -> clamp 255; -0.996 -> 1.01 -> 1.
        let v = [-1.0f32, 1.0, 0.0, -1.01, 0.5, -0.5, 1.5, -0.996];
        let img = Tensor::from_slice(&v).reshape([1, 1, 2, 4]);
        let u = to_uint8_nhwc(&img);
        assert_eq!(u.size(), [1, 2, 4, 1]);
        assert_eq!(u.kind(), Kind::Uint8);
        assert_eq!(Vec::<u8>::try_from(u.flatten(0, -1)).unwrap(), [0, 255, 128, 0, 191, 64, 255, 1]);
    }

    #[test]
    fn conversion_moves_channels_last() {
        // [1, 3, 1, 2]: channel c of pixel x holds 0.1 * (c + 3 * x) -> 128 + 12.75 * (c + 3x), truncated.
        let img = Tensor::from_slice(&[0.0f32, 0.3, 0.1, 0.4, 0.2, 0.5]).reshape([1, 3, 1, 2]);
        let u = to_uint8_nhwc(&img);
        assert_eq!(u.size(), [1, 1, 2, 3]);
        assert_eq!(Vec::<u8>::try_from(u.flatten(0, -1)).unwrap(), [128, 140, 153, 166, 179, 191]);
        let nchw = to_uint8(&img);
        assert_eq!(nchw.size(), [1, 3, 1, 2]);
        assert!(nchw.permute([0, 2, 3, 1]).eq_tensor(&u).all().int64_value(&[]) == 1);
        let im = ImageU8::from_nhwc(&u, 0);
        assert_eq!((im.width, im.height, im.channels), (2, 1, 3));
        assert_eq!(im.data, [128, 140, 153, 166, 179, 191]);
    }

    #[test]
    fn conversion_matches_the_reference_images() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tiny32-io.safetensors");
        let (io, _) = crate::model::checkpoint::read_safetensors(&path).unwrap();
        for psi in ["1.0", "0.5"] {
            let ours = to_uint8_nhwc(&io[&format!("img_const_psi{psi}")]);
            let reference = &io[&format!("uint8_const_psi{psi}")];
            assert_eq!(ours.size(), reference.size());
            assert!(ours.eq_tensor(reference).all().int64_value(&[]) == 1, "psi {psi}");
        }
    }

    #[test]
    fn from_nhwc_picks_the_indexed_image() {
        let bytes = pattern(2 * 3 * 5 * 3, 1);
        let t = Tensor::from_slice(&bytes).reshape([2, 3, 5, 3]);
        let im = ImageU8::from_nhwc(&t, 1);
        assert_eq!((im.width, im.height, im.channels), (5, 3, 3));
        assert_eq!(im.data, bytes[45..]);
        let gray = ImageU8::from_nhwc(&Tensor::from_slice(&bytes[..12]).reshape([2, 2, 3, 1]), 0);
        assert_eq!((gray.width, gray.height, gray.channels, gray.data.as_slice()), (3, 2, 1, &bytes[..6]));
    }

    #[test]
    fn png_round_trip_gray_and_rgb() {
        let dir = tempfile::tempdir().unwrap();
        for (channels, color) in [(1, image::ColorType::L8), (3, image::ColorType::Rgb8)] {
            let im = ImageU8 { width: 7, height: 5, channels, data: pattern(35 * channels as usize, channels) };
            let p = dir.path().join(format!("sub/c{channels}.png"));
            im.save_png(&p).unwrap();
            // An independent decoder sees the intended colour type.
            assert_eq!(image::open(&p).unwrap().color(), color);
            assert_eq!(ImageU8::load_png(&p).unwrap(), im);
        }
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temp files left: {names:?}");
    }

    #[test]
    fn png_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("bogus.png");
        std::fs::write(&bogus, b"not a png").unwrap();
        let e = format!("{:#}", ImageU8::load_png(&bogus).unwrap_err());
        assert!(e.contains("bogus.png") && e.contains("PNG"), "{e}");
        let bad = ImageU8 { width: 4, height: 4, channels: 3, data: vec![0; 10] };
        let e = format!("{:#}", bad.save_png(dir.path().join("bad.png")).unwrap_err());
        assert!(e.contains("bad.png") && e.contains("10 bytes"), "{e}");
        assert!(!dir.path().join("bad.png").exists());
    }

    #[test]
    fn grid_places_tiles_row_major_and_fills_black() {
        // Five 2x3 tiles, each pixel encodes (tile, x, y, channel), in 3 columns: 2 rows, the last slot black.
        let tiles: Vec<ImageU8> = (0..5u8)
            .map(|t| {
                let data = (0..3u8)
                    .flat_map(|y| (0..2u8).flat_map(move |x| (0..3u8).map(move |c| 1 + t * 50 + x * 20 + y * 6 + c)));
                ImageU8 { width: 2, height: 3, channels: 3, data: data.collect() }
            })
            .collect();
        let g = grid(&tiles, 3).unwrap();
        assert_eq!((g.width, g.height, g.channels), (6, 6, 3));
        for gy in 0..6usize {
            for gx in 0..6usize {
                let (t, x, y) = ((gy / 3) * 3 + gx / 2, gx % 2, gy % 3);
                for c in 0..3usize {
                    let want = if t < 5 { (1 + t * 50 + x * 20 + y * 6 + c) as u8 } else { 0 };
                    assert_eq!(g.data[(gy * 6 + gx) * 3 + c], want, "pixel ({gx}, {gy}) channel {c}");
                }
            }
        }
        // One column stacks vertically; gray stays gray.
        let gray: Vec<ImageU8> =
            (1..=2).map(|v| ImageU8 { width: 2, height: 1, channels: 1, data: vec![v; 2] }).collect();
        assert_eq!(grid(&gray, 1).unwrap(), ImageU8 { width: 2, height: 2, channels: 1, data: vec![1, 1, 2, 2] });
    }

    #[test]
    fn grid_rejects_bad_input() {
        assert!(grid(&[], 2).unwrap_err().to_string().contains("no images"));
        let a = solid(2, 2, [1, 2, 3]);
        assert!(grid(std::slice::from_ref(&a), 0).is_err());
        let e = grid(&[a.clone(), solid(3, 2, [0; 3])], 2).unwrap_err().to_string();
        assert!(e.contains("image 1 is 3x2x3"), "{e}");
        let e = grid(&[a, ImageU8::black(2, 2, 1)], 2).unwrap_err().to_string();
        assert!(e.contains("2x2x1"), "{e}");
    }

    #[test]
    fn gif_decodes_back_with_every_frame_looping() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("anim.gif");
        let gray = ImageU8 { width: 6, height: 4, channels: 1, data: vec![77; 24] };
        let frames = [solid(6, 4, [255, 0, 0]), solid(6, 4, [0, 200, 30]), gray, solid(6, 4, [9, 9, 250])];
        save_gif(&p, &frames, 10).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..6], b"GIF89a");
        // NETSCAPE2.0 application block: sub-block of 3 bytes, id 1, loop count 0 (forever), little endian.
        let ext = b"NETSCAPE2.0\x03\x01\x00\x00";
        assert!(bytes.windows(ext.len()).any(|w| w == ext), "no infinite-loop extension");
        let decoded = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(bytes)).unwrap();
        let decoded = decoded.into_frames().collect_frames().unwrap();
        assert_eq!(decoded.len(), 4);
        let expect = [[255, 0, 0], [0, 200, 30], [77, 77, 77], [9, 9, 250]];
        for (f, rgb) in decoded.iter().zip(expect) {
            assert_eq!(f.buffer().dimensions(), (6, 4));
            assert_eq!(f.delay().numer_denom_ms(), (100, 1));
            // Few colours: the palette is exact.
            assert!(f.buffer().pixels().all(|p| p.0 == [rgb[0], rgb[1], rgb[2], 255]));
        }
    }

    #[test]
    fn gif_rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.gif");
        assert!(save_gif(&p, &[], 10).unwrap_err().to_string().contains("no frames"));
        assert!(save_gif(&p, &[solid(2, 2, [0; 3])], 0).unwrap_err().to_string().contains("fps"));
        let e = save_gif(&p, &[solid(2, 2, [0; 3]), solid(2, 3, [0; 3])], 5).unwrap_err().to_string();
        assert!(e.contains("x.gif") && e.contains("frame 1 is 2x3"), "{e}");
        assert!(!p.exists());
    }
}
