//! Loading, saving and resampling of RGB images as planar `f32` data.
//!
//! Images are held in [`RgbImageF32`]: three planes (R, G, B), each row-major
//! `height * width`, with values in `0.0..=255.0`. This is the layout of a
//! `[1, 3, H, W]` tensor, so [`RgbImageF32::to_tensor`] and
//! [`RgbImageF32::from_tensor`] are plain copies.
//!
//! * [`load_rgb`] decodes anything the `image` crate can (PNG, JPEG, WebP,
//!   TIFF, BMP, GIF first frame, ...), guessing the format from the content,
//!   honouring EXIF orientation, refusing over-large images before any
//!   pixel buffer is allocated and refusing files that end early (see
//!   [`load_rgb`]).
//! * [`save_rgb`] picks the format from the extension and writes atomically
//!   (temporary file in the same folder, synced, then renamed).
//! * [`resize`] and [`scale_to_long_side`] resample with Lanczos3 in `f32`.

use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, ErrorKind, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageEncoder, ImageFormat, ImageReader, Rgb32FImage};

/// Errors from loading or saving images. Each message is one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The input path does not exist.
    #[error("image file not found: {}", path.display())]
    NotFound { path: PathBuf },
    /// The input path is a directory.
    #[error("{} is a directory, not an image file", path.display())]
    IsDirectory { path: PathBuf },
    /// The input file has zero bytes.
    #[error("image file is empty (0 bytes): {}", path.display())]
    Empty { path: PathBuf },
    /// The file ends before the image data does: its structure (end marker, chunk or
    /// header lengths) says so, or the decoder ran out of bytes.
    #[error("image file is truncated or incomplete: {} ({detail})", path.display())]
    Truncated { path: PathBuf, detail: String },
    /// The content is not a recognised image format.
    #[error(
        "unrecognised image format (expected PNG, JPEG, WebP, TIFF, BMP, GIF, ...): {}",
        path.display()
    )]
    UnknownFormat { path: PathBuf },
    /// The header announces more pixels than [`LoadLimits::max_pixels`].
    #[error(
        "image too large: {} is {width}x{height} ({} pixels), the limit is {max_pixels} pixels",
        path.display(),
        *width as u64 * *height as u64
    )]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    /// The decoder refused the image because it would need too much memory.
    #[error("image exceeds the decoder's memory limits: {} ({detail})", path.display())]
    LimitExceeded { path: PathBuf, detail: String },
    /// The data is corrupt or uses a feature the decoder does not support.
    #[error("cannot decode image {}: {detail}", path.display())]
    Decode { path: PathBuf, detail: String },
    /// Any other I/O error while reading (permission denied, ...).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The output path has no extension or one we cannot write.
    #[error(
        "cannot save {}: unknown or missing extension (use .png, .jpg, .jpeg, .webp, .tif, .tiff or .bmp)",
        path.display()
    )]
    UnsupportedOutputFormat { path: PathBuf },
    /// The output folder does not exist (or is not a folder).
    #[error("cannot save {}: output folder {} does not exist", path.display(), dir.display())]
    OutputDirMissing { path: PathBuf, dir: PathBuf },
    /// The output folder exists but a file cannot be created in it.
    #[error("cannot save {}: output folder {} is not writable ({source})", path.display(), dir.display())]
    OutputDirNotWritable {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The image given to [`save_rgb`] is inconsistent (zero size, wrong data length).
    #[error("cannot save {}: invalid image ({detail})", path.display())]
    InvalidImage { path: PathBuf, detail: String },
    /// The encoder failed.
    #[error("cannot encode {}: {detail}", path.display())]
    Encode { path: PathBuf, detail: String },
    /// Writing, syncing or renaming the output failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Limits applied by [`load_rgb`] before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    /// Largest accepted `width * height`, checked against the header before decoding.
    pub max_pixels: u64,
}

impl Default for LoadLimits {
    /// 64 megapixels (e.g. 8192 x 8192).
    fn default() -> Self {
        LoadLimits {
            max_pixels: 64 * 1024 * 1024,
        }
    }
}

/// An RGB image as three planar `f32` channels with values in `0.0..=255.0`.
///
/// `data` has length `3 * width * height`: first the whole R plane, then G, then B,
/// each row-major. This is the memory layout of a `[1, 3, height, width]` tensor.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RgbImageF32 {
    pub width: u32,
    pub height: u32,
    pub data: Vec<f32>,
    /// Set by [`load_rgb`] when the source had an alpha channel with at least one
    /// pixel that was not fully opaque; that alpha was dropped (not composited).
    /// Always `false` for images built in memory.
    pub had_alpha: bool,
}

impl RgbImageF32 {
    /// Wraps planar data. Panics if `data.len() != 3 * width * height`.
    pub fn new(width: u32, height: u32, data: Vec<f32>) -> Self {
        assert_eq!(
            data.len(),
            3 * width as usize * height as usize,
            "RgbImageF32::new: data length does not match 3 x {width} x {height}"
        );
        RgbImageF32 {
            width,
            height,
            data,
            had_alpha: false,
        }
    }

    /// An image filled with one colour (`rgb` in `0..=255`).
    pub fn filled(width: u32, height: u32, rgb: [f32; 3]) -> Self {
        let plane = width as usize * height as usize;
        let mut data = Vec::with_capacity(3 * plane);
        for v in rgb {
            data.extend(std::iter::repeat_n(v, plane));
        }
        RgbImageF32::new(width, height, data)
    }

    /// Number of pixels (`width * height`).
    pub fn pixel_count(&self) -> usize {
        self.width as usize * self.height as usize
    }

    /// One channel plane (0 = R, 1 = G, 2 = B), row-major.
    pub fn plane(&self, c: usize) -> &[f32] {
        let n = self.pixel_count();
        &self.data[c * n..(c + 1) * n]
    }

    /// The value of channel `c` at `(x, y)`.
    pub fn get(&self, x: u32, y: u32, c: usize) -> f32 {
        self.data[c * self.pixel_count() + y as usize * self.width as usize + x as usize]
    }

    /// Copies the image into a `[1, 3, height, width]` `f32` tensor on `device`.
    pub fn to_tensor(&self, device: &Device) -> candle_core::Result<Tensor> {
        Tensor::from_slice(
            &self.data,
            (1, 3, self.height as usize, self.width as usize),
            device,
        )
    }

    /// Builds an image from a `[1, 3, H, W]` or `[3, H, W]` tensor (any float dtype,
    /// any device). Values are copied as they are, without clamping.
    pub fn from_tensor(t: &Tensor) -> candle_core::Result<RgbImageF32> {
        let (c, h, w) = match t.dims() {
            &[1, c, h, w] => (c, h, w),
            &[c, h, w] => (c, h, w),
            other => candle_core::bail!(
                "from_tensor: expected a [1, 3, H, W] or [3, H, W] tensor, got shape {other:?}"
            ),
        };
        if c != 3 {
            candle_core::bail!("from_tensor: expected 3 channels, got {c}");
        }
        if h == 0 || w == 0 || h > u32::MAX as usize || w > u32::MAX as usize {
            candle_core::bail!("from_tensor: invalid image size {w}x{h}");
        }
        let data = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(RgbImageF32::new(w as u32, h as u32, data))
    }

    /// Interleaves into an 8-bit RGB buffer: values clamped to `0..=255` and rounded
    /// (NaN becomes 0).
    pub fn to_rgb8(&self) -> image::RgbImage {
        let n = self.pixel_count();
        let (r, rest) = self.data.split_at(n);
        let (g, b) = rest.split_at(n);
        let mut out = Vec::with_capacity(3 * n);
        for i in 0..n {
            out.push(quantize(r[i]));
            out.push(quantize(g[i]));
            out.push(quantize(b[i]));
        }
        image::RgbImage::from_raw(self.width, self.height, out)
            .expect("buffer length matches dimensions")
    }

    fn from_interleaved<T: Copy>(
        width: u32,
        height: u32,
        src: &[T],
        convert: impl Fn(T) -> f32,
    ) -> RgbImageF32 {
        let n = width as usize * height as usize;
        debug_assert_eq!(src.len(), 3 * n);
        let mut data = vec![0.0f32; 3 * n];
        let (r, rest) = data.split_at_mut(n);
        let (g, b) = rest.split_at_mut(n);
        for (i, px) in src.chunks_exact(3).enumerate() {
            r[i] = convert(px[0]);
            g[i] = convert(px[1]);
            b[i] = convert(px[2]);
        }
        RgbImageF32::new(width, height, data)
    }
}

/// Alias kept for callers that prefer a free function.
pub fn to_tensor(img: &RgbImageF32, device: &Device) -> candle_core::Result<Tensor> {
    img.to_tensor(device)
}

/// Alias of [`RgbImageF32::from_tensor`].
pub fn from_tensor(t: &Tensor) -> candle_core::Result<RgbImageF32> {
    RgbImageF32::from_tensor(t)
}

fn quantize(v: f32) -> u8 {
    // `as u8` saturates and maps NaN to 0.
    v.clamp(0.0, 255.0).round() as u8
}

/// Loads an image file as RGB `f32` in `0..=255`.
///
/// The format is guessed from the content (the extension is ignored). Grey,
/// grey+alpha, palette and 16-bit images become RGB (16-bit values are scaled
/// to `0..=255` without rounding); alpha is dropped and reported in
/// [`RgbImageF32::had_alpha`]. EXIF orientation is applied. Images whose header
/// announces more than `limits.max_pixels` pixels are refused before decoding.
///
/// A file that ends early is refused, never decoded with filler where the data ran
/// out: some decoders return such images without an error (JPEG, and PNG, GIF, WebP
/// and ICO cut near their end), so the container structure of those formats is
/// walked first and must reach its end (JPEG end-of-image marker, PNG IEND chunk, GIF
/// trailer, the RIFF length of WebP, the images an ICO directory lists). The other
/// formats' decoders read every byte they need and fail when one is missing. Bytes
/// changed inside pixel data are caught only where the format has checksums (PNG).
pub fn load_rgb(path: &Path, limits: &LoadLimits) -> Result<RgbImageF32, ImageError> {
    let owned = || path.to_path_buf();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageError::NotFound { path: owned() },
        _ => ImageError::Read {
            path: owned(),
            source: e,
        },
    })?;
    if meta.is_dir() {
        return Err(ImageError::IsDirectory { path: owned() });
    }
    if meta.len() == 0 {
        return Err(ImageError::Empty { path: owned() });
    }

    let mut file = File::open(path).map_err(|e| ImageError::Read {
        path: owned(),
        source: e,
    })?;

    // Cheap pre-check of PNG headers: the IHDR chunk sits at a fixed offset, so a
    // file that is nothing but a header claiming huge dimensions is refused as
    // too large (rather than as truncated) without involving the decoder.
    let mut head = [0u8; 24];
    let got = read_up_to(&mut file, &mut head).map_err(|e| ImageError::Read {
        path: owned(),
        source: e,
    })?;
    if let Some((w, h)) = png_header_dimensions(&head[..got]) {
        check_pixels(path, w, h, limits)?;
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| ImageError::Read {
            path: owned(),
            source: e,
        })?;
    let mut reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| ImageError::Read {
            path: owned(),
            source: e,
        })?;
    let format = reader
        .format()
        .ok_or_else(|| ImageError::UnknownFormat { path: owned() })?;
    reader.limits(decoder_limits(limits));

    // Constructing the decoder reads only the header.
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| map_decode_error(path, format, e))?;
    let (w, h) = decoder.dimensions();
    check_pixels(path, w, h, limits)?;
    if w == 0 || h == 0 {
        return Err(ImageError::Decode {
            path: owned(),
            detail: format!("image has zero size ({w}x{h})"),
        });
    }
    check_complete(path, format)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img =
        DynamicImage::from_decoder(decoder).map_err(|e| map_decode_error(path, format, e))?;
    img.apply_orientation(orientation);

    let had_alpha = has_transparency(&img);
    let color = img.color();
    let bytes_per_channel = color.bytes_per_pixel() / color.channel_count().max(1);
    let (width, height) = (img.width(), img.height());
    let mut out = match bytes_per_channel {
        1 => {
            let buf = img.into_rgb8();
            RgbImageF32::from_interleaved(width, height, buf.as_raw(), |v| v as f32)
        }
        2 => {
            let buf = img.into_rgb16();
            const SCALE: f32 = 255.0 / 65535.0;
            RgbImageF32::from_interleaved(width, height, buf.as_raw(), |v| v as f32 * SCALE)
        }
        _ => {
            let buf = img.into_rgb32f();
            RgbImageF32::from_interleaved(width, height, buf.as_raw(), |v| {
                if v.is_nan() {
                    0.0
                } else {
                    v.clamp(0.0, 1.0) * 255.0
                }
            })
        }
    };
    out.had_alpha = had_alpha;
    Ok(out)
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Width and height from a PNG signature followed by an IHDR chunk, if `head` is one.
fn png_header_dimensions(head: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    if head.len() < 24 || head[..8] != SIGNATURE || &head[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(head[16..20].try_into().ok()?);
    let h = u32::from_be_bytes(head[20..24].try_into().ok()?);
    Some((w, h))
}

fn check_pixels(path: &Path, w: u32, h: u32, limits: &LoadLimits) -> Result<(), ImageError> {
    if w as u64 * h as u64 > limits.max_pixels {
        return Err(ImageError::TooLarge {
            path: path.to_path_buf(),
            width: w,
            height: h,
            max_pixels: limits.max_pixels,
        });
    }
    Ok(())
}

fn decoder_limits(limits: &LoadLimits) -> image::Limits {
    let side = u32::try_from(limits.max_pixels).unwrap_or(u32::MAX);
    let mut l = image::Limits::default();
    l.max_image_width = Some(side);
    l.max_image_height = Some(side);
    // Room for the decoded buffer in the widest layout (RGBA f32, 16 bytes per
    // pixel) plus decoder working memory; never below the crate's default.
    let budget = limits
        .max_pixels
        .saturating_mul(16)
        .saturating_add(256 << 20);
    l.max_alloc = Some(budget.max(512 << 20));
    l
}

/// Classifies a decoder error. A failure to decode is [`ImageError::Decode`], or
/// [`ImageError::Truncated`] when the decoder ran out of bytes or the file's structure
/// shows it ends early (decoders word that differently; the structure does not).
fn map_decode_error(path: &Path, format: ImageFormat, e: image::ImageError) -> ImageError {
    let owned = path.to_path_buf();
    match e {
        image::ImageError::IoError(io) if io.kind() == ErrorKind::UnexpectedEof => {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            ImageError::Truncated {
                path: owned,
                detail: format!(
                    "the {} file ends after {len} bytes, before its image data does",
                    format_name(format)
                ),
            }
        }
        image::ImageError::IoError(io) => ImageError::Read {
            path: owned,
            source: io,
        },
        image::ImageError::Limits(l) => ImageError::LimitExceeded {
            path: owned,
            detail: one_line(&l.to_string()),
        },
        image::ImageError::Unsupported(u)
            if matches!(u.kind(), image::error::UnsupportedErrorKind::Format(_)) =>
        {
            ImageError::UnknownFormat { path: owned }
        }
        other => match check_complete(path, format) {
            Err(truncated @ ImageError::Truncated { .. }) => truncated,
            _ => ImageError::Decode {
                path: owned,
                detail: one_line(&other.to_string()),
            },
        },
    }
}

fn format_name(format: ImageFormat) -> String {
    match format {
        ImageFormat::WebP => "WebP".into(),
        ImageFormat::OpenExr => "OpenEXR".into(),
        ImageFormat::Farbfeld => "farbfeld".into(),
        other => format!("{other:?}").to_ascii_uppercase(),
    }
}

/// Decoder messages may span lines; errors here are one line.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Refuses a file whose structure ends early (see [`check_structure`]).
fn check_complete(path: &Path, format: ImageFormat) -> Result<(), ImageError> {
    let read_error = |source| ImageError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let len = file.metadata().map_err(read_error)?.len();
    check_structure(format, file, len).map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => ImageError::Truncated {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
        ErrorKind::InvalidData => ImageError::Decode {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
        _ => read_error(e),
    })
}

/// Walks the container structure (lengths and markers, no pixel data) of the formats
/// whose decoders accept a file that ends early, filling in what is missing, or stop
/// reading before its end: the file must reach the structure's end. `UnexpectedEof`
/// when it does not, `InvalidData` when the structure is broken. Bytes after the end
/// are allowed (JPEG motion photos append a video). The other formats (TIFF, BMP, PNM,
/// QOI, HDR, OpenEXR, farbfeld, DDS) are left to their decoders, which read every byte
/// the header implies and fail on a missing one.
fn check_structure<R: Read + Seek>(format: ImageFormat, r: R, len: u64) -> std::io::Result<()> {
    let mut w = Walk {
        r: BufReader::new(r),
        pos: 0,
        len,
    };
    let (result, end) = match format {
        ImageFormat::Png => (walk_png(&mut w), "its IEND chunk"),
        ImageFormat::Jpeg => (walk_jpeg(&mut w), "its end-of-image marker"),
        ImageFormat::Gif => (walk_gif(&mut w), "its trailer"),
        ImageFormat::WebP => (walk_webp(&mut w), "the length its header gives"),
        ImageFormat::Ico => (walk_ico(&mut w), "the images its directory lists"),
        _ => return Ok(()),
    };
    result.map_err(|e| match e.kind() {
        ErrorKind::UnexpectedEof => std::io::Error::new(
            ErrorKind::UnexpectedEof,
            format!(
                "the {} file ends after {len} bytes, before {end}",
                format_name(format)
            ),
        ),
        _ => e,
    })
}

/// A reader that knows the file's length and its position in it.
struct Walk<R> {
    r: BufReader<R>,
    pos: u64,
    len: u64,
}

impl<R: Read + Seek> Walk<R> {
    fn bytes<const N: usize>(&mut self) -> std::io::Result<[u8; N]> {
        let mut b = [0; N];
        self.r.read_exact(&mut b)?;
        self.pos += N as u64;
        Ok(b)
    }

    fn byte(&mut self) -> std::io::Result<u8> {
        Ok(self.bytes::<1>()?[0])
    }

    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        if n > self.len.saturating_sub(self.pos) {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        self.r.seek_relative(n as i64)?;
        self.pos += n;
        Ok(())
    }

    /// Moves past the next 0xFF byte.
    fn skip_past_ff(&mut self) -> std::io::Result<()> {
        loop {
            let buf = self.r.fill_buf()?;
            if buf.is_empty() {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            let (n, found) = match buf.iter().position(|&b| b == 0xFF) {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            self.r.consume(n);
            self.pos += n as u64;
            if found {
                return Ok(());
            }
        }
    }
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, msg.to_string())
}

/// Signature, then chunks (length, type, data, CRC) up to IEND.
fn walk_png<R: Read + Seek>(w: &mut Walk<R>) -> std::io::Result<()> {
    w.skip(8)?;
    loop {
        let [l0, l1, l2, l3, t0, t1, t2, t3] = w.bytes::<8>()?;
        w.skip(u64::from(u32::from_be_bytes([l0, l1, l2, l3])) + 4)?;
        if [t0, t1, t2, t3] == *b"IEND" {
            return Ok(());
        }
    }
}

/// Markers up to end-of-image (FFD9). Segments with a length are skipped whole (an EXIF
/// thumbnail's own FFD9 is inside one); entropy-coded data is scanned for the next
/// marker (0xFF not followed by a stuffed 0x00 or a restart marker).
fn walk_jpeg<R: Read + Seek>(w: &mut Walk<R>) -> std::io::Result<()> {
    if w.bytes()? != [0xFF, 0xD8] {
        return Err(invalid("no JPEG start-of-image marker"));
    }
    loop {
        w.skip_past_ff()?;
        let mut marker = w.byte()?;
        while marker == 0xFF {
            marker = w.byte()?;
        }
        match marker {
            0xD9 => return Ok(()),
            // A stuffed zero, TEM, restart markers, SOI: no length.
            0x00 | 0x01 | 0xD0..=0xD8 => {}
            _ => {
                let n = u16::from_be_bytes(w.bytes()?);
                if n < 2 {
                    return Err(invalid("a JPEG segment length is below 2"));
                }
                w.skip(u64::from(n) - 2)?;
            }
        }
    }
}

/// Header, screen descriptor, colour table, then extension and image blocks up to the
/// trailer (0x3B), every frame included.
fn walk_gif<R: Read + Seek>(w: &mut Walk<R>) -> std::io::Result<()> {
    fn table_bytes(flags: u8) -> u64 {
        if flags & 0x80 == 0 {
            0
        } else {
            3 << ((flags & 7) + 1)
        }
    }
    fn sub_blocks<R: Read + Seek>(w: &mut Walk<R>) -> std::io::Result<()> {
        loop {
            match w.byte()? {
                0 => return Ok(()),
                n => w.skip(u64::from(n))?,
            }
        }
    }
    let screen = w.bytes::<13>()?;
    w.skip(table_bytes(screen[10]))?;
    loop {
        match w.byte()? {
            0x3B => return Ok(()),
            0x21 => {
                w.byte()?;
                sub_blocks(w)?;
            }
            0x2C => {
                let descriptor = w.bytes::<9>()?;
                w.skip(table_bytes(descriptor[8]) + 1)?;
                sub_blocks(w)?;
            }
            _ => return Err(invalid("unknown GIF block")),
        }
    }
}

/// "RIFF", the length of what follows, "WEBP" and its chunks.
fn walk_webp<R: Read + Seek>(w: &mut Walk<R>) -> std::io::Result<()> {
    let [_, _, _, _, n0, n1, n2, n3] = w.bytes::<8>()?;
    w.skip(u64::from(u32::from_le_bytes([n0, n1, n2, n3])))
}

/// The directory's entries (size and offset of each image) must lie within the file.
fn walk_ico<R: Read + Seek>(w: &mut Walk<R>) -> std::io::Result<()> {
    let [_, _, _, _, c0, c1] = w.bytes::<6>()?;
    let mut end = 0u64;
    for _ in 0..u16::from_le_bytes([c0, c1]) {
        let e = w.bytes::<16>()?;
        let size = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
        let offset = u32::from_le_bytes([e[12], e[13], e[14], e[15]]);
        end = end.max(u64::from(size) + u64::from(offset));
    }
    w.skip(end.saturating_sub(w.pos))
}

/// True when the image has an alpha channel with at least one non-opaque pixel.
fn has_transparency(img: &DynamicImage) -> bool {
    match img {
        DynamicImage::ImageLumaA8(b) => b.pixels().any(|p| p.0[1] != u8::MAX),
        DynamicImage::ImageRgba8(b) => b.pixels().any(|p| p.0[3] != u8::MAX),
        DynamicImage::ImageLumaA16(b) => b.pixels().any(|p| p.0[1] != u16::MAX),
        DynamicImage::ImageRgba16(b) => b.pixels().any(|p| p.0[3] != u16::MAX),
        DynamicImage::ImageRgba32F(b) => b.pixels().any(|p| p.0[3] < 1.0),
        other => other.color().has_alpha(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputFormat {
    Png,
    Jpeg,
    WebP,
    Tiff,
    Bmp,
}

/// Output format chosen from the extension (case-insensitive), if supported.
fn output_format(path: &Path) -> Option<OutputFormat> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => OutputFormat::Png,
        "jpg" | "jpeg" => OutputFormat::Jpeg,
        "webp" => OutputFormat::WebP,
        "tif" | "tiff" => OutputFormat::Tiff,
        "bmp" => OutputFormat::Bmp,
        _ => return None,
    })
}

/// JPEG quality used by [`save_rgb`].
pub const JPEG_QUALITY: u8 = 95;

/// Saves an image; the format comes from the extension: `png`, `jpg`/`jpeg`
/// (quality [`JPEG_QUALITY`]), `webp` (lossless), `tif`/`tiff`, `bmp`.
///
/// Values are clamped to `0..=255` and rounded to 8 bits. The file is encoded
/// in memory, written to a temporary file in the target's folder, synced and
/// renamed over the target, so the target is either the old file or the
/// complete new one; on failure no temporary file is left behind. Nothing is
/// written when the extension is unknown or missing.
pub fn save_rgb(img: &RgbImageF32, path: &Path) -> Result<(), ImageError> {
    let owned = || path.to_path_buf();
    let format =
        output_format(path).ok_or_else(|| ImageError::UnsupportedOutputFormat { path: owned() })?;
    if img.width == 0 || img.height == 0 {
        return Err(ImageError::InvalidImage {
            path: owned(),
            detail: format!("zero size {}x{}", img.width, img.height),
        });
    }
    if img.data.len() != 3 * img.pixel_count() {
        return Err(ImageError::InvalidImage {
            path: owned(),
            detail: format!(
                "data has {} values, expected 3 x {} x {}",
                img.data.len(),
                img.width,
                img.height
            ),
        });
    }

    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(ImageError::OutputDirMissing { path: owned(), dir });
    }

    let encoded = encode(img, format).map_err(|e| ImageError::Encode {
        path: owned(),
        detail: e.to_string(),
    })?;

    crate::atomic::write(path, &encoded).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageError::OutputDirMissing {
            path: owned(),
            dir: dir.clone(),
        },
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            ImageError::OutputDirNotWritable {
                path: owned(),
                dir: dir.clone(),
                source: e,
            }
        }
        _ => ImageError::Write {
            path: owned(),
            source: e,
        },
    })?;
    Ok(())
}

fn encode(img: &RgbImageF32, format: OutputFormat) -> image::ImageResult<Vec<u8>> {
    let rgb = img.to_rgb8();
    let (w, h) = (img.width, img.height);
    let ct = image::ExtendedColorType::Rgb8;
    let mut buf = Vec::new();
    match format {
        OutputFormat::Png => {
            image::codecs::png::PngEncoder::new(&mut buf).write_image(rgb.as_raw(), w, h, ct)?
        }
        OutputFormat::Jpeg => image::codecs::jpeg::JpegEncoder::new_with_quality(
            &mut buf,
            JPEG_QUALITY,
        )
        .write_image(rgb.as_raw(), w, h, ct)?,
        OutputFormat::WebP => image::codecs::webp::WebPEncoder::new_lossless(&mut buf)
            .write_image(rgb.as_raw(), w, h, ct)?,
        OutputFormat::Tiff => image::codecs::tiff::TiffEncoder::new(Cursor::new(&mut buf))
            .write_image(rgb.as_raw(), w, h, ct)?,
        OutputFormat::Bmp => {
            image::codecs::bmp::BmpEncoder::new(&mut buf).write_image(rgb.as_raw(), w, h, ct)?
        }
    }
    Ok(buf)
}

/// The filter of a resampling: Lanczos3 (sharp, our default) or bilinear (a triangle filter,
/// widened when shrinking so that it is antialiased: what CNNMRF's `image.scale` and PyTorch's
/// `interpolate(..., "bilinear", antialias=True)` do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resample {
    #[default]
    Lanczos3,
    Bilinear,
}

impl std::str::FromStr for Resample {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "lanczos3" => Ok(Resample::Lanczos3),
            "bilinear" => Ok(Resample::Bilinear),
            _ => Err(format!(
                "unknown resampling '{s}' (expected lanczos3 or bilinear)"
            )),
        }
    }
}

impl Resample {
    fn filter_type(self) -> FilterType {
        match self {
            Resample::Lanczos3 => FilterType::Lanczos3,
            Resample::Bilinear => FilterType::Triangle,
        }
    }

    /// Half-width of the filter at scale 1, in source pixels.
    fn support(self) -> f32 {
        match self {
            Resample::Lanczos3 => 3.0,
            Resample::Bilinear => 1.0,
        }
    }

    fn kernel(self, x: f32) -> f32 {
        let sinc = |t: f32| {
            let a = t * std::f32::consts::PI;
            if t == 0.0 {
                1.0
            } else {
                a.sin() / a
            }
        };
        match self {
            Resample::Lanczos3 if x.abs() < 3.0 => sinc(x) * sinc(x / 3.0),
            Resample::Bilinear if x.abs() < 1.0 => 1.0 - x.abs(),
            _ => 0.0,
        }
    }
}

/// Resamples to `width x height` with a Lanczos3 filter, in `f32` (no 8-bit
/// quantisation). Downscaling is antialiased (the filter widens with the
/// scale factor). Results are clamped to `0..=255`, which removes the filter's
/// ringing overshoot. A zero target size is treated as 1.
pub fn resize(img: &RgbImageF32, width: u32, height: u32) -> RgbImageF32 {
    resize_with(img, width, height, Resample::Lanczos3)
}

/// [`resize`] with a choice of filter.
pub fn resize_with(img: &RgbImageF32, width: u32, height: u32, filter: Resample) -> RgbImageF32 {
    let (width, height) = (width.max(1), height.max(1));
    if width == img.width && height == img.height {
        let mut out = img.clone();
        out.had_alpha = false;
        return out;
    }
    // image's f32 resampler clamps to its nominal range 0..=1, so scale down and back.
    let n = img.pixel_count();
    let mut inter = Vec::with_capacity(3 * n);
    for i in 0..n {
        for c in 0..3 {
            inter.push(img.data[c * n + i] * (1.0 / 255.0));
        }
    }
    let src = Rgb32FImage::from_raw(img.width, img.height, inter)
        .expect("image data length matches its dimensions");
    let dst = image::imageops::resize(&src, width, height, filter.filter_type());
    RgbImageF32::from_interleaved(width, height, dst.as_raw(), |v| {
        (v * 255.0).clamp(0.0, 255.0)
    })
}

/// [`resize_with`] for large images: the same filter (vertical pass, then horizontal, the
/// same weights and sums, equal up to float rounding) one plane at a time, so it holds only the
/// source, the result and one plane of the vertical pass (4 bytes x the source's width x the new
/// height), not [`resize`]'s interleaved copies and RGBA intermediate.
pub fn resize_planar(img: &RgbImageF32, width: u32, height: u32, filter: Resample) -> RgbImageF32 {
    use rayon::prelude::*;
    let (width, height) = (width.max(1), height.max(1));
    if (width, height) == (img.width, img.height) {
        return RgbImageF32::new(width, height, img.data.clone());
    }
    let (sw, dw, dh) = (img.width as usize, width as usize, height as usize);
    let rows = filter_taps(img.height as usize, dh, filter);
    let cols = filter_taps(sw, dw, filter);
    let mut out = vec![0f32; 3 * dw * dh];
    let mut tmp = vec![0f32; sw * dh];
    for (c, dst) in out.chunks_mut(dw * dh).enumerate() {
        let src = img.plane(c);
        tmp.par_chunks_mut(sw)
            .zip(rows.par_iter())
            .for_each(|(row, (top, ws))| {
                row.fill(0.0);
                for (i, &w) in ws.iter().enumerate() {
                    let s = &src[(top + i) * sw..(top + i + 1) * sw];
                    row.iter_mut().zip(s).for_each(|(o, &p)| *o += p * w);
                }
            });
        dst.par_chunks_mut(dw)
            .zip(tmp.par_chunks(sw))
            .for_each(|(row, t)| {
                for (o, (left, ws)) in row.iter_mut().zip(&cols) {
                    let mut acc = 0.0f32;
                    for (i, &w) in ws.iter().enumerate() {
                        acc += t[left + i] * w;
                    }
                    *o = acc.clamp(0.0, 255.0);
                }
            });
    }
    RgbImageF32::new(width, height, out)
}

/// Per output position of a `src` -> `dst` resampling: the first source position and the
/// normalised filter weights from there (as the `image` crate computes them).
fn filter_taps(src: usize, dst: usize, filter: Resample) -> Vec<(usize, Vec<f32>)> {
    let ratio = src as f32 / dst as f32;
    let sratio = ratio.max(1.0);
    let support = filter.support() * sratio;
    (0..dst)
        .map(|o| {
            let centre = (o as f32 + 0.5) * ratio;
            let left = ((centre - support).floor() as i64).clamp(0, src as i64 - 1);
            let right = ((centre + support).ceil() as i64).clamp(left + 1, src as i64);
            let mut ws: Vec<f32> = (left..right)
                .map(|i| filter.kernel((i as f32 - (centre - 0.5)) / sratio))
                .collect();
            let sum: f32 = ws.iter().sum();
            ws.iter_mut().for_each(|w| *w /= sum);
            (left as usize, ws)
        })
        .collect()
}

/// The dimensions [`scale_to_long_side`] produces: the longer side becomes
/// `long_side`, the other keeps the aspect ratio (rounded, at least 1).
pub fn dims_for_long_side(width: u32, height: u32, long_side: u32) -> (u32, u32) {
    let long_side = long_side.max(1);
    let long = width.max(height).max(1) as f64;
    let scale = long_side as f64 / long;
    let w = ((width as f64 * scale).round() as u32).max(1);
    let h = ((height as f64 * scale).round() as u32).max(1);
    if width >= height {
        (long_side, h)
    } else {
        (w, long_side)
    }
}

/// Resizes so that the longer side is `long_side` pixels, keeping the aspect
/// ratio (each side at least 1). Returns a copy when the size already matches.
pub fn scale_to_long_side(img: &RgbImageF32, long_side: u32) -> RgbImageF32 {
    let (w, h) = dims_for_long_side(img.width, img.height, long_side);
    resize(img, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageBuffer, Luma, LumaA, Rgb, Rgba};

    fn gradient(w: u32, h: u32) -> RgbImageF32 {
        let n = (w * h) as usize;
        let mut data = vec![0.0; 3 * n];
        for y in 0..h {
            for x in 0..w {
                let i = (y * w + x) as usize;
                data[i] = ((x * 37 + y * 11) % 256) as f32;
                data[n + i] = ((x * 5 + y * 53) % 256) as f32;
                data[2 * n + i] = ((x * y + 7) % 256) as f32;
            }
        }
        RgbImageF32::new(w, h, data)
    }

    fn png_header_only(w: u32, h: u32) -> Vec<u8> {
        let mut out = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
        let mut chunk = b"IHDR".to_vec();
        chunk.extend_from_slice(&w.to_be_bytes());
        chunk.extend_from_slice(&h.to_be_bytes());
        chunk.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no interlace
        out.extend_from_slice(&13u32.to_be_bytes());
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&crc32fast::hash(&chunk).to_be_bytes());
        out
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn structure(format: ImageFormat, bytes: &[u8]) -> std::io::Result<()> {
        check_structure(format, Cursor::new(bytes), bytes.len() as u64)
    }

    #[test]
    fn png_walk_needs_iend_and_allows_trailing_bytes() {
        let mut png = png_header_only(3, 2);
        png.extend_from_slice(&0u32.to_be_bytes());
        png.extend_from_slice(b"IEND");
        png.extend_from_slice(&crc32fast::hash(b"IEND").to_be_bytes());
        assert!(structure(ImageFormat::Png, &png).is_ok());
        for cut in 0..png.len() {
            let e = structure(ImageFormat::Png, &png[..cut]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "cut at {cut}");
            assert!(e.to_string().contains("IEND"), "{e}");
        }
        png.extend_from_slice(b"appended");
        assert!(structure(ImageFormat::Png, &png).is_ok());
    }

    #[test]
    fn jpeg_walk_skips_segments_and_needs_the_real_end_marker() {
        // SOI; an APP1 segment holding a thumbnail's FFD9; SOS with entropy-coded data
        // holding a stuffed FF00 and a restart marker; a fill byte, EOI, and bytes after
        // it (a motion photo's video).
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, 0xAB, 0xCD];
        j.extend([0xFF, 0xDA, 0x00, 0x04, 0x01, 0x02]);
        j.extend([0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0x78]);
        j.extend([0xFF, 0xFF, 0xD9]);
        let end = j.len();
        j.extend([1, 2, 3]);
        assert!(structure(ImageFormat::Jpeg, &j).is_ok());
        for cut in 0..end {
            let e = structure(ImageFormat::Jpeg, &j[..cut]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "cut at {cut}");
        }
        let e = structure(ImageFormat::Jpeg, b"\xFF\xD8\xFF\xC4\x00\x01").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn gif_walk_needs_the_trailer() {
        let mut g = b"GIF89a".to_vec();
        g.extend([1, 0, 1, 0, 0x80, 0, 0]); // 1x1, global table of 2 colours
        g.extend([0, 0, 0, 255, 255, 255]);
        g.extend([0x21, 0xF9, 4, 0, 0, 0, 0, 0]); // graphic control extension
        g.extend([0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0]); // one frame
        g.push(0x3B);
        assert!(structure(ImageFormat::Gif, &g).is_ok());
        for cut in 0..g.len() {
            let e = structure(ImageFormat::Gif, &g[..cut]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "cut at {cut}");
        }
        let n = g.len();
        g[n - 1] = 0x99;
        let e = structure(ImageFormat::Gif, &g).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn png_round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let img = gradient(17, 9);
        let p = dir.path().join("out.png");
        save_rgb(&img, &p).unwrap();
        let back = load_rgb(&p, &LoadLimits::default()).unwrap();
        assert_eq!((back.width, back.height), (17, 9));
        assert!(!back.had_alpha);
        assert_eq!(back.data, img.data);
        assert_eq!(files_in(dir.path()), vec!["out.png"]);
    }

    #[test]
    fn save_clamps_and_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let img = RgbImageF32::new(2, 1, vec![-5.0, 300.0, 1.4, 1.6, 254.5, f32::NAN]);
        let p = dir.path().join("c.png");
        save_rgb(&img, &p).unwrap();
        let back = load_rgb(&p, &LoadLimits::default()).unwrap();
        assert_eq!(back.data, vec![0.0, 255.0, 1.0, 2.0, 255.0, 0.0]);
    }

    #[test]
    fn lossy_and_other_formats_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let img = gradient(32, 24);
        for (name, exact) in [
            ("a.bmp", true),
            ("a.tif", true),
            ("a.TIFF", true),
            ("a.webp", true),
            ("a.jpg", false),
            ("a.JPEG", false),
        ] {
            let p = dir.path().join(name);
            save_rgb(&img, &p).unwrap();
            let back = load_rgb(&p, &LoadLimits::default()).unwrap();
            assert_eq!((back.width, back.height), (32, 24), "{name}");
            if exact {
                assert_eq!(back.data, img.data, "{name}");
            } else {
                let mean_err: f32 = back
                    .data
                    .iter()
                    .zip(&img.data)
                    .map(|(a, b)| (a - b).abs())
                    .sum::<f32>()
                    / img.data.len() as f32;
                assert!(mean_err < 20.0, "{name}: mean abs error {mean_err}");
            }
        }
    }

    #[test]
    fn format_is_guessed_from_content() {
        let dir = tempfile::tempdir().unwrap();
        let img = gradient(8, 8);
        let p = dir.path().join("x.png");
        save_rgb(&img, &p).unwrap();
        let renamed = dir.path().join("really_png.jpg");
        std::fs::rename(&p, &renamed).unwrap();
        let back = load_rgb(&renamed, &LoadLimits::default()).unwrap();
        assert_eq!(back.data, img.data);
    }

    #[test]
    fn sixteen_bit_png_keeps_precision() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("deep.png");
        let buf: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_fn(3, 2, |x, y| {
            Rgb([257 * (x as u16 + 1), 1, 65535 - y as u16])
        });
        buf.save(&p).unwrap();
        let img = load_rgb(&p, &LoadLimits::default()).unwrap();
        assert_eq!((img.width, img.height), (3, 2));
        let scale = 255.0 / 65535.0;
        assert!((img.get(0, 0, 0) - 1.0).abs() < 1e-5);
        assert!((img.get(2, 1, 0) - 3.0).abs() < 1e-5);
        assert!(
            (img.get(0, 0, 1) - scale).abs() < 1e-7,
            "not quantised to 8 bits"
        );
        assert!((img.get(0, 1, 2) - 65534.0 * scale).abs() < 1e-3);
        assert!(img.get(0, 1, 2) < 255.0);
    }

    #[test]
    fn grey_and_grey_alpha_become_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let grey = dir.path().join("g.png");
        ImageBuffer::<Luma<u8>, Vec<u8>>::from_fn(4, 3, |x, y| Luma([(x * 10 + y) as u8]))
            .save(&grey)
            .unwrap();
        let img = load_rgb(&grey, &LoadLimits::default()).unwrap();
        assert!(!img.had_alpha);
        for c in 0..3 {
            assert_eq!(img.get(3, 2, c), 32.0);
        }

        let ga = dir.path().join("ga.png");
        ImageBuffer::<LumaA<u8>, Vec<u8>>::from_fn(4, 3, |x, y| LumaA([(x + y) as u8, 100]))
            .save(&ga)
            .unwrap();
        let img = load_rgb(&ga, &LoadLimits::default()).unwrap();
        assert!(img.had_alpha);
        assert_eq!(img.get(3, 2, 0), 5.0);
        assert_eq!(img.get(3, 2, 2), 5.0);

        // An alpha channel that is fully opaque is not reported.
        let opaque = dir.path().join("opaque.png");
        ImageBuffer::<Rgba<u8>, Vec<u8>>::from_fn(2, 2, |_, _| Rgba([1, 2, 3, 255]))
            .save(&opaque)
            .unwrap();
        let img = load_rgb(&opaque, &LoadLimits::default()).unwrap();
        assert!(!img.had_alpha);
        assert_eq!(
            img.data,
            vec![1., 1., 1., 1., 2., 2., 2., 2., 3., 3., 3., 3.]
        );
    }

    #[test]
    fn exif_orientation_is_applied() {
        // Minimal big-endian EXIF (TIFF) block with one entry: Orientation = 6
        // ("rotate 90 degrees clockwise to display").
        let mut exif = b"MM\0\x2a".to_vec();
        exif.extend_from_slice(&8u32.to_be_bytes());
        exif.extend_from_slice(&1u16.to_be_bytes());
        exif.extend_from_slice(&0x0112u16.to_be_bytes());
        exif.extend_from_slice(&3u16.to_be_bytes());
        exif.extend_from_slice(&1u32.to_be_bytes());
        exif.extend_from_slice(&[0, 6, 0, 0]);
        exif.extend_from_slice(&0u32.to_be_bytes());

        let (w, h) = (3u32, 2u32);
        let raw: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [(x + 10 * y) as u8, 0, 0]))
            .collect();
        let mut png = Vec::new();
        let mut enc = image::codecs::png::PngEncoder::new(&mut png);
        enc.set_exif_metadata(exif).unwrap();
        enc.write_image(&raw, w, h, image::ExtendedColorType::Rgb8)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rot.png");
        std::fs::write(&p, png).unwrap();

        let img = load_rgb(&p, &LoadLimits::default()).unwrap();
        assert_eq!((img.width, img.height), (h, w));
        // Clockwise rotation: new (x', y') shows old (y', h - 1 - x').
        for yn in 0..w {
            for xn in 0..h {
                let (xo, yo) = (yn, h - 1 - xn);
                assert_eq!(img.get(xn, yn, 0), (xo + 10 * yo) as f32, "at ({xn}, {yn})");
            }
        }
    }

    #[test]
    fn palette_gif_decodes_first_frame() {
        // image cannot write palette PNGs; a GIF is palette-based, so it covers
        // the palette-expansion path through the GIF decoder.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.gif");
        ImageBuffer::<Rgba<u8>, Vec<u8>>::from_fn(5, 4, |x, _| {
            if x < 2 {
                Rgba([255, 0, 0, 255])
            } else {
                Rgba([0, 0, 255, 255])
            }
        })
        .save(&p)
        .unwrap();
        let img = load_rgb(&p, &LoadLimits::default()).unwrap();
        assert_eq!((img.width, img.height), (5, 4));
        assert!(!img.had_alpha);
        assert_eq!(img.get(0, 0, 0), 255.0);
        assert_eq!(img.get(4, 3, 2), 255.0);
        assert_eq!(img.get(4, 3, 0), 0.0);
    }

    #[test]
    fn truncated_png_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.png");
        save_rgb(&gradient(64, 64), &p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_rgb(&p, &LoadLimits::default()).unwrap_err();
        assert!(matches!(err, ImageError::Truncated { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("t.png") && !msg.contains('\n'), "{msg}");
    }

    #[test]
    fn empty_missing_directory_and_unknown_are_distinct() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.png");
        std::fs::write(&empty, b"").unwrap();
        let e = load_rgb(&empty, &LoadLimits::default()).unwrap_err();
        assert!(matches!(e, ImageError::Empty { .. }), "{e:?}");
        assert!(e.to_string().contains("empty.png"));

        let missing = dir.path().join("nope.png");
        let e = load_rgb(&missing, &LoadLimits::default()).unwrap_err();
        assert!(matches!(e, ImageError::NotFound { .. }), "{e:?}");
        assert!(e.to_string().contains("nope.png"));

        let e = load_rgb(dir.path(), &LoadLimits::default()).unwrap_err();
        assert!(matches!(e, ImageError::IsDirectory { .. }), "{e:?}");

        let junk = dir.path().join("junk.png");
        std::fs::write(&junk, b"this is not an image at all, just some text").unwrap();
        let e = load_rgb(&junk, &LoadLimits::default()).unwrap_err();
        assert!(matches!(e, ImageError::UnknownFormat { .. }), "{e:?}");
        assert!(e.to_string().contains("junk.png"));
    }

    #[test]
    fn huge_png_header_is_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("huge.png");
        std::fs::write(&p, png_header_only(100_000, 100_000)).unwrap();
        let e = load_rgb(&p, &LoadLimits::default()).unwrap_err();
        match &e {
            ImageError::TooLarge { width, height, .. } => {
                assert_eq!((*width, *height), (100_000, 100_000))
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(e.to_string().contains("huge.png"));

        // Also with a complete (IEND-terminated) header-only file.
        let mut bytes = png_header_only(100_000, 100_000);
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes.extend_from_slice(b"IEND");
        bytes.extend_from_slice(&crc32fast::hash(b"IEND").to_be_bytes());
        std::fs::write(&p, bytes).unwrap();
        let e = load_rgb(&p, &LoadLimits::default()).unwrap_err();
        assert!(matches!(e, ImageError::TooLarge { .. }), "{e:?}");
    }

    #[test]
    fn pixel_limit_is_checked_for_any_format() {
        let dir = tempfile::tempdir().unwrap();
        let img = gradient(20, 10);
        for name in ["l.png", "l.bmp", "l.jpg"] {
            let p = dir.path().join(name);
            save_rgb(&img, &p).unwrap();
            let e = load_rgb(&p, &LoadLimits { max_pixels: 199 }).unwrap_err();
            assert!(matches!(e, ImageError::TooLarge { .. }), "{name}: {e:?}");
            assert!(load_rgb(&p, &LoadLimits { max_pixels: 200 }).is_ok());
        }
    }

    #[test]
    fn unknown_extension_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["out.xyz", "noext", "out.gif"] {
            let p = dir.path().join(name);
            let e = save_rgb(&gradient(4, 4), &p).unwrap_err();
            assert!(
                matches!(e, ImageError::UnsupportedOutputFormat { .. }),
                "{e:?}"
            );
            assert!(e.to_string().contains(name));
        }
        assert!(files_in(dir.path()).is_empty());
    }

    #[test]
    fn save_into_missing_folder_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no_such_dir").join("out.png");
        let e = save_rgb(&gradient(4, 4), &p).unwrap_err();
        assert!(matches!(e, ImageError::OutputDirMissing { .. }), "{e:?}");
        assert!(e.to_string().contains("no_such_dir"));
        assert!(files_in(dir.path()).is_empty());
    }

    #[cfg(unix)]
    #[test]
    fn save_into_read_only_folder_errors_cleanly() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        // Root ignores directory permissions; only check when they are enforced.
        let enforced = std::fs::write(ro.join("probe"), b"x").is_err();
        let result = save_rgb(&gradient(4, 4), &ro.join("out.png"));
        if enforced {
            let e = result.unwrap_err();
            assert!(
                matches!(e, ImageError::OutputDirNotWritable { .. }),
                "{e:?}"
            );
            assert!(e.to_string().contains("ro"));
            assert!(files_in(&ro).is_empty());
        }
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn save_replaces_existing_file_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.png");
        save_rgb(&RgbImageF32::filled(3, 3, [10.0, 20.0, 30.0]), &p).unwrap();
        save_rgb(&gradient(5, 4), &p).unwrap();
        let back = load_rgb(&p, &LoadLimits::default()).unwrap();
        assert_eq!(back.data, gradient(5, 4).data);
        assert_eq!(files_in(dir.path()), vec!["o.png"]);
    }

    #[test]
    fn invalid_image_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bad = RgbImageF32 {
            width: 4,
            height: 4,
            data: vec![0.0; 5],
            had_alpha: false,
        };
        let e = save_rgb(&bad, &dir.path().join("b.png")).unwrap_err();
        assert!(matches!(e, ImageError::InvalidImage { .. }), "{e:?}");
        assert!(files_in(dir.path()).is_empty());
    }

    /// Bilinear resampling is PyTorch's `interpolate(..., "bilinear", align_corners=False)`:
    /// doubling a row puts the source pixels at quarter offsets (edges clamped), and halving
    /// (antialiased: a triangle two source pixels wide) averages neighbours 1:3:3:1.
    #[test]
    fn bilinear_follows_half_pixel_centres() {
        let row = RgbImageF32::new(4, 1, [0f32, 40., 80., 120.].repeat(3));
        let up = resize_with(&row, 8, 1, Resample::Bilinear);
        let want = [0f32, 10., 30., 50., 70., 90., 110., 120.];
        for (x, w) in want.iter().enumerate() {
            assert!(
                (up.get(x as u32, 0, 1) - w).abs() < 1e-3,
                "x {x}: {}",
                up.get(x as u32, 0, 1)
            );
        }
        let wide = RgbImageF32::new(8, 1, [0f32, 0., 80., 80., 0., 0., 80., 80.].repeat(3));
        let down = resize_planar(&wide, 4, 1, Resample::Bilinear);
        // Centre of output 1 is source 2.5: taps 1..4 weigh 1:3:3:1 -> (0 + 240 + 240 + 0) / 8.
        assert!(
            (down.get(1, 0, 0) - 60.0).abs() < 1e-3,
            "{}",
            down.get(1, 0, 0)
        );
        // Lanczos3 keeps a sharper step than bilinear when doubling.
        let step = RgbImageF32::new(4, 1, [0f32, 0., 200., 200.].repeat(3));
        let (l, b) = (
            resize(&step, 8, 1),
            resize_with(&step, 8, 1, Resample::Bilinear),
        );
        assert!(l.get(3, 0, 0) < b.get(3, 0, 0) && l.get(4, 0, 0) > b.get(4, 0, 0));
    }

    #[test]
    fn resize_dims_and_values() {
        let img = gradient(40, 30);
        let small = resize(&img, 20, 15);
        assert_eq!((small.width, small.height), (20, 15));
        assert_eq!(small.data.len(), 3 * 20 * 15);
        let big = resize(&img, 81, 7);
        assert_eq!((big.width, big.height), (81, 7));
        assert!(big.data.iter().all(|v| (0.0..=255.0).contains(v)));
        let same = resize(&img, 40, 30);
        assert_eq!(same.data, img.data);
        let tiny = resize(&img, 0, 0);
        assert_eq!((tiny.width, tiny.height), (1, 1));

        // A constant image stays constant, with values above 1.0 preserved (no 0..1 clamp)
        // and no 8-bit quantisation.
        let flat = RgbImageF32::filled(16, 16, [200.25, 17.5, 0.0]);
        let r = resize(&flat, 7, 11);
        for y in 0..11 {
            for x in 0..7 {
                assert!((r.get(x, y, 0) - 200.25).abs() < 1e-2);
                assert!((r.get(x, y, 1) - 17.5).abs() < 1e-2);
                assert!(r.get(x, y, 2).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn long_side_scaling_keeps_aspect() {
        assert_eq!(dims_for_long_side(400, 300, 200), (200, 150));
        assert_eq!(dims_for_long_side(300, 400, 200), (150, 200));
        assert_eq!(dims_for_long_side(1000, 1, 10), (10, 1));
        assert_eq!(dims_for_long_side(1, 1000, 10), (1, 10));
        assert_eq!(dims_for_long_side(5, 5, 64), (64, 64));
        let img = gradient(40, 30);
        let s = scale_to_long_side(&img, 20);
        assert_eq!((s.width, s.height), (20, 15));
    }

    #[test]
    fn tensor_round_trip() {
        let img = gradient(6, 4);
        let t = img.to_tensor(&Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 4, 6]);
        // Planar layout: element [0, c, y, x] is channel c at (x, y).
        let v: f32 = t
            .get(0)
            .unwrap()
            .get(2)
            .unwrap()
            .get(3)
            .unwrap()
            .get(5)
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(v, img.get(5, 3, 2));
        let back = RgbImageF32::from_tensor(&t).unwrap();
        assert_eq!(back, img);
        let back3 = RgbImageF32::from_tensor(&t.squeeze(0).unwrap()).unwrap();
        assert_eq!(back3, img);
        let bad = Tensor::zeros((1, 4, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(RgbImageF32::from_tensor(&bad).is_err());
        let bad = Tensor::zeros((2, 3, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(RgbImageF32::from_tensor(&bad).is_err());
    }
}
