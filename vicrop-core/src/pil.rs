//! Image operations that reproduce Pillow bit for bit: resampling (`Image.resize` with
//! `BICUBIC` / `BILINEAR`), `convert("RGB")`, and loading a file the way transformers does
//! (`ImageOps.exif_transpose(Image.open(path)).convert("RGB")`).
//!
//! The reference is Pillow 11.0 (what transformers' `CLIPImageProcessor` runs); the tests in
//! `vicrop-core/tests/pil_*.rs` compare against goldens written by `tools/make_pil_goldens.py`.
//!
//! # Resampling
//!
//! [`resize_rgb8`] and [`resize_luma8`] implement Pillow's `ImagingResample` for 8-bit images:
//!
//! * separable, two passes: horizontal first (only over the source rows the vertical pass
//!   reads), then vertical; a pass whose size does not change is skipped;
//! * for output index `i` the filter is centred on `(i + 0.5) * scale` in input coordinates,
//!   with `scale = in / out`; when downscaling, the filter support and its argument are
//!   stretched by `scale`, so every input pixel contributes (no aliasing shortcut);
//! * the window `[trunc(center - support + 0.5), trunc(center + support + 0.5))`, clipped to
//!   the image, is weighted by the filter at `(x - center + 0.5) / max(scale, 1)`, the weights
//!   are normalised to sum 1, then converted to fixed point with 22 fractional bits
//!   (`PRECISION_BITS = 32 - 8 - 2`, rounding half away from zero);
//! * each pass accumulates `Σ pixel · weight` in 32-bit integers starting at one half
//!   (`1 << 21`), shifts right by 22 and clips to `0..=255`, so the intermediate image is
//!   rounded to `u8` exactly as Pillow's is.
//!
//! transformers calls `Image.resize(size, resample=BICUBIC, reducing_gap=None)`: there is no
//! `reduce()` pre-pass, and none is implemented here.
//!
//! The pass order is Pillow 11.0's: always horizontal first. Later Pillows run the vertical
//! pass first in some cases: 12.2 for images over 100 times as tall as wide, 13.0 whenever the
//! height loses more than twice as many pixels as the width
//! (`in_h - out_h > 0 && in_h - out_h > 2 * (in_w - out_w)`, python-pillow/Pillow#9549). The
//! intermediate is rounded to `u8` either way, so 15-20% of the samples then differ by one
//! level (noise and photos, e.g. 200x400 -> 112x112). pure-grad's high-pass mask squashes the whole image to R x R, which
//! meets Pillow 13's condition for a `w x h` portrait image whenever `h > max(R, 2w - R)` (e.g.
//! 200x400 or 300x500 at R = 112); CLIP preprocessing meets it when downscaling an image more
//! than twice as tall as wide. The ViCrop reference and transformers 4.47 ran on Pillow 11;
//! `tools/requirements.txt` pins 11.0.0 and the golden generators refuse any other version.
//!
//! Bicubic is Keys' cubic with `a = -0.5` (support 2); bilinear is the triangle filter
//! (support 1). Weights are computed in `f64` with the same operation order as Pillow's C code
//! (Rust never fuses multiply-adds), which matches Pillow builds for x86-64; a Pillow built
//! with FMA contraction (e.g. some aarch64 builds) could differ in rare last-bit roundings of a
//! weight.
//!
//! # Loading
//!
//! [`load_image`] / [`decode_image_bytes`] decode with the `image` crate (format detected from
//! the content, not the file name), apply the orientation Pillow's `exif_transpose` would
//! apply, and convert with [`to_rgb8`]. PNG (all bit depths and colour types), BMP, TIFF, GIF
//! and WebP give exactly Pillow's pixels. Known differences:
//!
//! * **JPEG**: the image crate decodes with zune-jpeg, Pillow with libjpeg-turbo. Both are
//!   valid decoders but their IDCT and chroma upsampling differ in rounding, so pixels can
//!   differ by a few levels: on photos at quality 75-95, at most 4 levels, with about 1% of
//!   samples off by one or more for 4:4:4 chroma and 10-20% for 4:2:0 (the tests bound the
//!   difference, see `tests/pil_load.rs`). CMYK/YCCK JPEGs are converted by zune-jpeg, not by
//!   Pillow's formula. Lossy WebP, by contrast, decodes exactly as libwebp does.
//! * Orientation comes from the EXIF block (PNG `eXIf` before the image data, JPEG APP1, WebP
//!   `EXIF`, the TIFF tag) and, for PNG only, from XMP `tiff:Orientation` when EXIF has no
//!   orientation (as Pillow 11.0 does). Pillow also reads PNG `eXIf` chunks placed after the
//!   image data and ImageMagick's "Raw profile type exif" text chunks; those are ignored here.
//! * The first frame/page of animated or multi-page files is used, as in Pillow; for GIFs whose
//!   first frame does not cover the logical screen, the uncovered area is black here while
//!   Pillow fills it from the palette.

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use image::error::{ImageError, LimitErrorKind};
use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, Rgb, RgbImage};

// =============================================================================================
// Resampling
// =============================================================================================

/// A resampling filter of Pillow's `Image.resize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter {
    /// `Image.Resampling.BICUBIC`: Keys' cubic convolution with `a = -0.5`, support 2.
    Bicubic,
    /// `Image.Resampling.BILINEAR`: the triangle filter, support 1.
    Bilinear,
}

impl Filter {
    /// Half-width of the filter at scale 1, in input pixels.
    fn support(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Bilinear => 1.0,
        }
    }

    /// The filter kernel (same expressions, in the same order, as Pillow's C code).
    fn kernel(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Fractional bits of the fixed-point weights: 8 bits of result, 2 of headroom.
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// The accumulator's starting value, so the final shift rounds half up.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// The fixed-point weights of one axis: output index `i` reads `len[i]` inputs from
/// `start[i]` with weights `weights[i * stride..][..len[i]]`.
#[derive(Debug)]
struct AxisWeights {
    start: Vec<usize>,
    len: Vec<usize>,
    stride: usize,
    weights: Vec<i32>,
}

impl AxisWeights {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for `in_size -> out_size`
    /// (the whole input: box `(0, in_size)`).
    fn new(in_size: usize, out_size: usize, filter: Filter) -> Self {
        // Pillow passes the box edges as C floats; `in_size as f32` is exact below 2^24.
        let scale = f64::from(in_size as f32) / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let inv_filterscale = 1.0 / filterscale;
        let stride = support.ceil() as usize * 2 + 1;

        let mut start = Vec::with_capacity(out_size);
        let mut len = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * stride];
        let mut taps = vec![0f64; stride];
        for (i, row) in weights.chunks_exact_mut(stride).enumerate() {
            let center = (i as f64 + 0.5) * scale;
            // `as i64` truncates toward zero like C's `(int)`.
            let lo = ((center - support + 0.5) as i64).max(0);
            let hi = ((center + support + 0.5) as i64).min(in_size as i64);
            let n = usize::try_from(hi - lo).unwrap_or(0).min(stride);
            let mut total = 0.0;
            for (x, tap) in taps[..n].iter_mut().enumerate() {
                *tap = filter.kernel(((x as i64 + lo) as f64 - center + 0.5) * inv_filterscale);
                total += *tap;
            }
            for (fixed, &tap) in row.iter_mut().zip(&taps[..n]) {
                let w = if total != 0.0 { tap / total } else { tap };
                let scaled = w * f64::from(1u32 << PRECISION_BITS);
                *fixed = if w < 0.0 {
                    (scaled - 0.5) as i32
                } else {
                    (scaled + 0.5) as i32
                };
            }
            start.push(lo as usize);
            len.push(n);
        }
        Self {
            start,
            len,
            stride,
            weights,
        }
    }

    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let w = &self.weights[i * self.stride..][..self.len[i]];
        (self.start[i], w)
    }

    /// The input range `[first, last)` read by any output index.
    fn span(&self) -> (usize, usize) {
        let first = self.start.first().copied().unwrap_or(0);
        let last = self
            .start
            .iter()
            .zip(&self.len)
            .map(|(s, n)| s + n)
            .max()
            .unwrap_or(0);
        (first, last.max(first))
    }
}

/// Shifts out the fraction and clips to a byte, like Pillow's `clip8`.
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal pass over rows `rows` of an interleaved `C`-channel image of width `w`.
fn horizontal<const C: usize>(
    src: &[u8],
    w: usize,
    rows: std::ops::Range<usize>,
    ax: &AxisWeights,
    out_w: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; out_w * rows.len() * C];
    for (y, out_row) in rows.zip(out.chunks_exact_mut(out_w * C)) {
        let row = &src[y * w * C..(y + 1) * w * C];
        for (i, px) in out_row.chunks_exact_mut(C).enumerate() {
            let (start, k) = ax.taps(i);
            let mut acc = [HALF; C];
            for (src_px, &wt) in row[start * C..].chunks_exact(C).zip(k) {
                for c in 0..C {
                    // Wrapping arithmetic: exact whenever Pillow's `int` sum does not
                    // overflow, and the same bits as Pillow's compiled code when it does.
                    acc[c] = acc[c].wrapping_add(i32::from(src_px[c]).wrapping_mul(wt));
                }
            }
            for c in 0..C {
                px[c] = clip8(acc[c]);
            }
        }
    }
    out
}

/// Vertical pass: `src` has rows of `row_len` bytes; `ax` indices are relative to `src`.
fn vertical(src: &[u8], row_len: usize, ax: &AxisWeights, out_h: usize) -> Vec<u8> {
    let mut out = vec![0u8; row_len * out_h];
    let mut acc = vec![0i32; row_len];
    for (i, out_row) in out.chunks_exact_mut(row_len.max(1)).enumerate() {
        let (start, k) = ax.taps(i);
        acc.fill(HALF);
        for (j, &wt) in k.iter().enumerate() {
            let row = &src[(start + j) * row_len..][..row_len];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a = a.wrapping_add(i32::from(p).wrapping_mul(wt));
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// Resamples an interleaved `C`-channel 8-bit buffer; both sizes are non-zero.
fn resample<const C: usize>(
    src: &[u8],
    (w, h): (usize, usize),
    (out_w, out_h): (usize, usize),
    filter: Filter,
) -> Vec<u8> {
    let mut vert = AxisWeights::new(h, out_h, filter);
    // Horizontal pass (skipped when the width is unchanged), over the rows the vertical pass
    // reads; the vertical indices are then relative to the first of them.
    let (tmp, tmp_w) = if out_w != w {
        let (first, last) = vert.span();
        let horiz = AxisWeights::new(w, out_w, filter);
        for s in &mut vert.start {
            *s -= first;
        }
        let rows = horizontal::<C>(src, w, first..last, &horiz, out_w);
        (Cow::Owned(rows), out_w)
    } else {
        (Cow::Borrowed(src), w)
    };
    // Vertical pass (skipped when the height is unchanged).
    if out_h != h {
        vertical(&tmp, tmp_w * C, &vert, out_h)
    } else {
        tmp.into_owned()
    }
}

/// Resizes like Pillow's `img.resize((width, height), resample=filter)` on a mode `"RGB"`
/// image (with `reducing_gap=None`, as transformers calls it). The result is bit-identical to
/// Pillow 11.
///
/// Resizing to the same size returns a copy. Edge cases Pillow rejects are defined instead of
/// panicking: a zero `width` or `height` gives an empty image of that size, and an empty input
/// gives a black image of the requested size.
///
/// ```
/// use vicrop_core::pil::{resize_rgb8, Filter};
/// let img = image::RgbImage::from_pixel(451, 300, image::Rgb([10, 20, 30]));
/// let out = resize_rgb8(&img, 505, 336, Filter::Bicubic);
/// assert_eq!(out.dimensions(), (505, 336));
/// assert_eq!(out.get_pixel(7, 7), &image::Rgb([10, 20, 30]));
/// ```
pub fn resize_rgb8(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    if width == 0 || height == 0 || img.width() == 0 || img.height() == 0 {
        return RgbImage::new(width, height);
    }
    let data = resample::<3>(
        img.as_raw(),
        (img.width() as usize, img.height() as usize),
        (width as usize, height as usize),
        filter,
    );
    RgbImage::from_raw(width, height, data).expect("resample returns width * height * 3 bytes")
}

/// Resizes a mode `"L"` (8-bit grey) image like Pillow's `img.resize((width, height),
/// resample=filter)`; the same algorithm and edge cases as [`resize_rgb8`].
pub fn resize_luma8(img: &GrayImage, width: u32, height: u32, filter: Filter) -> GrayImage {
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    if width == 0 || height == 0 || img.width() == 0 || img.height() == 0 {
        return GrayImage::new(width, height);
    }
    let data = resample::<1>(
        img.as_raw(),
        (img.width() as usize, img.height() as usize),
        (width as usize, height as usize),
        filter,
    );
    GrayImage::from_raw(width, height, data).expect("resample returns width * height bytes")
}

// =============================================================================================
// convert("RGB")
// =============================================================================================

/// Converts a decoded image to 8-bit RGB the way Pillow's `convert("RGB")` converts the image
/// Pillow would have opened from the same file.
///
/// * RGB8: unchanged. RGBA8: alpha dropped; Pillow does **not** composite over a background,
///   so fully transparent pixels keep their stored colour.
/// * L8: grey replicated to R, G, B. LA8: alpha dropped, grey replicated. Palette images arrive
///   here already expanded by the decoder (RGB8 / RGBA8), which matches Pillow's palette lookup.
/// * 16-bit grey (`Luma16`): Pillow opens these as mode `"I;16"`, and `convert("RGB")`
///   **clamps** each value to 255 rather than scaling, so most 16-bit grey photos come out
///   nearly white; this is reproduced because it is what Pillow-based pipelines see.
/// * 16-bit RGB / RGBA / LA: Pillow keeps the high byte (`v >> 8`); reproduced.
/// * Float images (`Rgb32F`, `Rgba32F`, e.g. from float TIFFs, which Pillow mostly cannot
///   open): the image crate's conversion (clamped to `0..=1`, scaled by 255, rounded).
///
/// One case needs the file, not just the pixels: a 16-bit grey PNG with a `tRNS` chunk is
/// decoded by the image crate as `LumaA16`, which this function treats as 16-bit LA (`v >> 8`)
/// while Pillow clamps it like `"I;16"`. [`load_image`] detects that case from the PNG header
/// and gets it right.
pub fn to_rgb8(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        DynamicImage::ImageRgba8(rgba) => map_pixels(&rgba, |p: &image::Rgba<u8>| {
            let [r, g, b, _] = p.0;
            [r, g, b]
        }),
        DynamicImage::ImageLuma8(l) => map_pixels(&l, |p: &image::Luma<u8>| [p.0[0]; 3]),
        DynamicImage::ImageLumaA8(la) => map_pixels(&la, |p: &image::LumaA<u8>| [p.0[0]; 3]),
        DynamicImage::ImageLuma16(l) => map_pixels(&l, |p: &image::Luma<u16>| [clamp16(p.0[0]); 3]),
        DynamicImage::ImageLumaA16(la) => {
            map_pixels(&la, |p: &image::LumaA<u16>| [high_byte(p.0[0]); 3])
        }
        DynamicImage::ImageRgb16(rgb) => map_pixels(&rgb, |p: &image::Rgb<u16>| p.0.map(high_byte)),
        DynamicImage::ImageRgba16(rgba) => map_pixels(&rgba, |p: &image::Rgba<u16>| {
            let [r, g, b, _] = p.0;
            [r, g, b].map(high_byte)
        }),
        other => other.to_rgb8(),
    }
}

/// Pillow's `I;16 -> RGB`: values above 255 saturate.
fn clamp16(v: u16) -> u8 {
    v.min(255) as u8
}

/// Pillow's unpacking of 16-bit samples into 8-bit modes: the most significant byte.
fn high_byte(v: u16) -> u8 {
    (v >> 8) as u8
}

fn map_pixels<P, F>(img: &image::ImageBuffer<P, Vec<P::Subpixel>>, f: F) -> RgbImage
where
    P: image::Pixel,
    F: Fn(&P) -> [u8; 3],
{
    let mut out = RgbImage::new(img.width(), img.height());
    for (dst, src) in out.pixels_mut().zip(img.pixels()) {
        *dst = Rgb(f(src));
    }
    out
}

// =============================================================================================
// Loading
// =============================================================================================

/// Size limits checked before an image is decoded, so that a huge (or hostile) file fails
/// with [`ImageLoadError::TooLarge`] instead of exhausting memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    /// Largest accepted width in pixels.
    pub max_width: u32,
    /// Largest accepted height in pixels.
    pub max_height: u32,
    /// Largest accepted `width * height`.
    pub max_pixels: u64,
}

impl LoadLimits {
    /// 20,000 px a side and 100 megapixels: more than any photo the pipeline needs, and at most
    /// about 800 MB of decoded samples (16-bit RGBA).
    pub const DEFAULT: Self = Self {
        max_width: 20_000,
        max_height: 20_000,
        max_pixels: 100_000_000,
    };

    /// Whether a `width x height` image is within the limits.
    pub fn allows(&self, width: u32, height: u32) -> bool {
        width <= self.max_width
            && height <= self.max_height
            && u64::from(width) * u64::from(height) <= self.max_pixels
    }

    /// The decoder's allocation cap: the largest accepted image at 8 bytes a pixel (16-bit
    /// RGBA, the widest sample layout Pillow opens) plus 64 MiB for decoder state.
    fn max_alloc(&self) -> u64 {
        self.max_pixels.saturating_mul(8).saturating_add(64 << 20)
    }
}

impl Default for LoadLimits {
    /// [`LoadLimits::DEFAULT`].
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for LoadLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at most {}x{} px and {} pixels",
            self.max_width, self.max_height, self.max_pixels
        )
    }
}

/// Why an image could not be loaded. Every message names the file (`<memory>` for
/// [`decode_image_bytes`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageLoadError {
    /// The file does not exist.
    #[error("image file not found: {}", path.display())]
    NotFound {
        /// The file.
        path: PathBuf,
    },
    /// The file exists but could not be read (permissions, a directory, an I/O error).
    #[error("cannot read image file {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty (0 bytes).
    #[error("image file {} is empty (0 bytes)", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The content is not any image format the image crate recognises.
    #[error(
        "{} is not a recognised image format (expected PNG, JPEG, GIF, BMP, WebP or TIFF)",
        path.display()
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// The format is recognised but not supported (a format or feature not compiled in, or
    /// an unsupported variant of a supported format).
    #[error("{} uses an unsupported image format or feature: {detail}", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is unsupported.
        detail: String,
    },
    /// The data is corrupt or truncated.
    #[error("{} is corrupt or truncated: {detail}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        detail: String,
    },
    /// The image is larger than the [`LoadLimits`].
    #[error(
        "image {} is too large: {width}x{height} px ({} pixels), the limit is {limits}",
        path.display(),
        u64::from(*width) * u64::from(*height)
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
        /// The limits it exceeds.
        limits: LoadLimits,
    },
    /// The decoder hit a limit derived from the [`LoadLimits`] where the size could not be
    /// reported (e.g. more memory than the limits allow for an accepted size).
    #[error("decoding {} exceeds the load limits ({limits}): {detail}", path.display())]
    LimitExceeded {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        detail: String,
        /// The limits.
        limits: LoadLimits,
    },
    /// The image has zero width or height.
    #[error("image {} has zero width or height ({width}x{height})", path.display())]
    ZeroSize {
        /// The file.
        path: PathBuf,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
    },
}

impl ImageLoadError {
    /// The file the error is about (`<memory>` for [`decode_image_bytes`]).
    pub fn path(&self) -> &Path {
        match self {
            Self::NotFound { path }
            | Self::Unreadable { path, .. }
            | Self::Empty { path }
            | Self::UnknownFormat { path }
            | Self::Unsupported { path, .. }
            | Self::Corrupt { path, .. }
            | Self::TooLarge { path, .. }
            | Self::LimitExceeded { path, .. }
            | Self::ZeroSize { path, .. } => path,
        }
    }
}

/// Loads an image file as transformers' `load_image` sees it:
/// `ImageOps.exif_transpose(Image.open(path)).convert("RGB")`.
///
/// The format is detected from the content. The dimensions are checked against `limits`
/// before any pixel is decoded, and the decoder's allocations are capped
/// ([`image::Limits`]). See the [module documentation](self) for the formats and the known
/// differences from Pillow (JPEG decoding).
///
/// # Errors
///
/// An [`ImageLoadError`] naming `path`: missing, unreadable or empty file, unknown or
/// unsupported format, corrupt or truncated data, too large for `limits`, or a zero-sized
/// image. Nothing the file contains can make this panic.
pub fn load_image(path: &Path, limits: &LoadLimits) -> Result<RgbImage, ImageLoadError> {
    let file = File::open(path).map_err(|source| io_error(path, source))?;
    let len = file
        .metadata()
        .map_err(|source| io_error(path, source))?
        .len();
    if len == 0 {
        return Err(ImageLoadError::Empty {
            path: path.to_path_buf(),
        });
    }
    decode(BufReader::new(file), path, limits)
}

/// Decodes an in-memory image file (PNG, JPEG, ... bytes) like [`load_image`]; errors name
/// the source `<memory>`.
///
/// # Errors
///
/// As [`load_image`], except the file-system ones.
pub fn decode_image_bytes(bytes: &[u8], limits: &LoadLimits) -> Result<RgbImage, ImageLoadError> {
    let path = Path::new("<memory>");
    if bytes.is_empty() {
        return Err(ImageLoadError::Empty {
            path: path.to_path_buf(),
        });
    }
    decode(Cursor::new(bytes), path, limits)
}

fn io_error(path: &Path, source: std::io::Error) -> ImageLoadError {
    if source.kind() == std::io::ErrorKind::NotFound {
        ImageLoadError::NotFound {
            path: path.to_path_buf(),
        }
    } else {
        ImageLoadError::Unreadable {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What the PNG header says, when the file is a PNG.
#[derive(Debug, Clone, Copy)]
struct PngHeader {
    width: u32,
    height: u32,
    bit_depth: u8,
    color_type: u8,
}

/// Reads the IHDR of a PNG (the first chunk, at a fixed offset) without moving the reader.
fn peek_png_header<R: BufRead + Seek>(reader: &mut R) -> std::io::Result<Option<PngHeader>> {
    let pos = reader.stream_position()?;
    let mut buf = [0u8; 26];
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    reader.seek(SeekFrom::Start(pos))?;
    if got < buf.len() || &buf[..8] != b"\x89PNG\r\n\x1a\n" || &buf[12..16] != b"IHDR" {
        return Ok(None);
    }
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Ok(Some(PngHeader {
        width: be32(&buf[16..20]),
        height: be32(&buf[20..24]),
        bit_depth: buf[24],
        color_type: buf[25],
    }))
}

fn decode<R: BufRead + Seek>(
    mut reader: R,
    path: &Path,
    limits: &LoadLimits,
) -> Result<RgbImage, ImageLoadError> {
    let owned = || path.to_path_buf();
    let png = peek_png_header(&mut reader).map_err(|e| read_error(path, e))?;
    if let Some(h) = png {
        // The png crate rejects a zero dimension as a format error; report it precisely.
        if h.width == 0 || h.height == 0 {
            return Err(ImageLoadError::ZeroSize {
                path: owned(),
                width: h.width,
                height: h.height,
            });
        }
    }
    let mut image_reader = ImageReader::new(&mut reader)
        .with_guessed_format()
        .map_err(|e| read_error(path, e))?;
    let Some(format) = image_reader.format() else {
        return Err(ImageLoadError::UnknownFormat { path: owned() });
    };
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(limits.max_width);
    image_limits.max_image_height = Some(limits.max_height);
    image_limits.max_alloc = Some(limits.max_alloc());
    image_reader.limits(image_limits);

    let err = match image_reader.into_decoder() {
        Ok(decoder) => return decode_pixels(decoder, format, png, path, limits),
        Err(e) => e,
    };
    if let ImageError::Limits(e) = &err {
        if matches!(e.kind(), LimitErrorKind::DimensionError) {
            // Over a side limit: report the actual size, read from the header alone.
            let dims =
                header_dimensions(&mut reader, format).or_else(|| png.map(|h| (h.width, h.height)));
            if let Some((width, height)) = dims {
                return Err(ImageLoadError::TooLarge {
                    path: owned(),
                    width,
                    height,
                    limits: *limits,
                });
            }
        }
    }
    Err(classify(path, limits, err))
}

/// Checks the size, reads the orientation, decodes and converts.
fn decode_pixels(
    mut decoder: impl ImageDecoder,
    format: ImageFormat,
    png: Option<PngHeader>,
    path: &Path,
    limits: &LoadLimits,
) -> Result<RgbImage, ImageLoadError> {
    let owned = || path.to_path_buf();
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageLoadError::ZeroSize {
            path: owned(),
            width,
            height,
        });
    }
    if !limits.allows(width, height) {
        return Err(ImageLoadError::TooLarge {
            path: owned(),
            width,
            height,
            limits: *limits,
        });
    }
    let orientation = pillow_orientation(&mut decoder, format);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| classify(path, limits, e))?;
    img.apply_orientation(orientation);
    // A 16-bit grey PNG with tRNS: Pillow opens mode "I;16" (clamped by convert), the image
    // crate gives LumaA16.
    if let (Some(h), DynamicImage::ImageLumaA16(la)) = (png, &img) {
        if h.color_type == 0 && h.bit_depth == 16 {
            return Ok(map_pixels(la, |p: &image::LumaA<u16>| [clamp16(p.0[0]); 3]));
        }
    }
    Ok(to_rgb8(img))
}

/// The dimensions from a header-only decode without size limits (for error messages).
fn header_dimensions<R: BufRead + Seek>(reader: &mut R, format: ImageFormat) -> Option<(u32, u32)> {
    reader.seek(SeekFrom::Start(0)).ok()?;
    let mut r = ImageReader::with_format(reader, format);
    let mut lim = image::Limits::default();
    lim.max_alloc = Some(64 << 20);
    r.limits(lim);
    r.into_dimensions().ok()
}

/// The orientation Pillow's `ImageOps.exif_transpose` applies: the EXIF orientation tag, or for
/// PNG without one, XMP `tiff:Orientation`. Unreadable metadata means no rotation.
fn pillow_orientation(decoder: &mut impl ImageDecoder, format: ImageFormat) -> Orientation {
    let from_exif = match decoder.exif_metadata() {
        Ok(Some(chunk)) => Orientation::from_exif_chunk(&chunk),
        _ => None,
    };
    if let Some(o) = from_exif {
        return o;
    }
    // TIFF keeps the orientation as a tag of the image itself, not in an EXIF block.
    if let Ok(o) = decoder.orientation() {
        if o != Orientation::NoTransforms {
            return o;
        }
    }
    if format == ImageFormat::Png {
        if let Ok(Some(xmp)) = decoder.xmp_metadata() {
            if let Some(o) = xmp_orientation(&xmp).and_then(Orientation::from_exif) {
                return o;
            }
        }
    }
    Orientation::NoTransforms
}

/// Pillow's `re.search(r'tiff:Orientation(="|>)([0-9])', xmp)`: the first digit that follows
/// `tiff:Orientation="` or `tiff:Orientation>`.
fn xmp_orientation(xmp: &[u8]) -> Option<u8> {
    const TAG: &[u8] = b"tiff:Orientation";
    let mut rest = xmp;
    while let Some(at) = rest.windows(TAG.len()).position(|w| w == TAG) {
        let after = &rest[at + TAG.len()..];
        let digit = match after {
            [b'=', b'"', d, ..] | [b'>', d, ..] if d.is_ascii_digit() => Some(d - b'0'),
            _ => None,
        };
        if digit.is_some() {
            return digit;
        }
        rest = &rest[at + 1..];
    }
    None
}

fn read_error(path: &Path, source: std::io::Error) -> ImageLoadError {
    ImageLoadError::Unreadable {
        path: path.to_path_buf(),
        source,
    }
}

/// Maps an image-crate error to the variant a user can act on.
fn classify(path: &Path, limits: &LoadLimits, err: ImageError) -> ImageLoadError {
    let path = path.to_path_buf();
    match err {
        ImageError::Unsupported(e) => ImageLoadError::Unsupported {
            path,
            detail: e.to_string(),
        },
        ImageError::Limits(e) => ImageLoadError::LimitExceeded {
            path,
            detail: e.to_string(),
            limits: *limits,
        },
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageLoadError::Corrupt {
                path,
                detail: format!("unexpected end of data ({e})"),
            }
        }
        ImageError::IoError(e) => ImageLoadError::Corrupt {
            path,
            detail: e.to_string(),
        },
        other => ImageLoadError::Corrupt {
            path,
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xmp_orientation_matches_pillow_regex() {
        assert_eq!(xmp_orientation(br#"<a tiff:Orientation="6"/>"#), Some(6));
        assert_eq!(
            xmp_orientation(b"<tiff:Orientation>3</tiff:Orientation>"),
            Some(3)
        );
        assert_eq!(
            xmp_orientation(br#"tiff:Orientation x tiff:Orientation="8""#),
            Some(8)
        );
        assert_eq!(xmp_orientation(br#"tiff:Orientation="x""#), None);
        assert_eq!(xmp_orientation(b""), None);
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(10, 3), (3, 10), (1, 1), (451, 505), (1500, 7)] {
            for f in [Filter::Bicubic, Filter::Bilinear] {
                let ax = AxisWeights::new(i, o, f);
                for k in 0..o {
                    let s: i64 = ax.taps(k).1.iter().map(|&w| i64::from(w)).sum();
                    assert!(
                        (s - (1 << PRECISION_BITS)).abs() <= ax.stride as i64,
                        "{i}->{o}"
                    );
                }
            }
        }
    }
}
