//! Loading images as the reference sees them: decoded, EXIF orientation applied, converted to
//! RGB as Pillow's `convert("RGB")` does; with size limits so a huge image is a clear error
//! rather than an out-of-memory kill.

use std::io::{BufRead, Cursor, Seek};
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

/// Decode limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadLimits {
    /// Largest width or height accepted, in pixels.
    pub max_side: u32,
    /// Largest pixel count accepted.
    pub max_pixels: u64,
}

impl Default for LoadLimits {
    /// 20,000 px a side and 100 megapixels.
    fn default() -> Self {
        Self {
            max_side: 20_000,
            max_pixels: 100_000_000,
        }
    }
}

/// Why an image could not be loaded. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageLoadError {
    /// No such file.
    #[error("image not found: {0}")]
    NotFound(PathBuf),
    /// The file exists but cannot be read.
    #[error("cannot read image {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("image file is empty (0 bytes): {0}")]
    Empty(PathBuf),
    /// The format is not recognised or not supported.
    #[error("unsupported or unrecognised image format: {path} ({message})")]
    Format {
        /// The file.
        path: PathBuf,
        /// Details.
        message: String,
    },
    /// Decoding failed (corrupt or truncated data).
    #[error("cannot decode image {path}: {message}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// Details.
        message: String,
    },
    /// The image exceeds the limits.
    #[error("image {path} is too large: {width}x{height} px (limits: {max_side} px a side, {max_pixels} pixels)")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
        /// The side limit.
        max_side: u32,
        /// The pixel limit.
        max_pixels: u64,
    },
    /// Width or height is zero.
    #[error("image {0} has zero width or height")]
    ZeroSized(PathBuf),
}

/// Pillow's `convert("RGB")`: alpha is dropped (not composited), gray is replicated,
/// 16-bit and float samples are scaled to 8 bits (`>> 8` rounding as the image crate does;
/// Pillow's handling of 16-bit files differs and is not reproduced).
pub fn to_rgb8(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    }
}

/// Loads an image file: decode (with limits), apply EXIF orientation, convert to RGB.
pub fn load_image(path: &Path, limits: &LoadLimits) -> Result<RgbImage, ImageLoadError> {
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ImageLoadError::NotFound(path.to_path_buf()),
        _ => ImageLoadError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    decode_named(Cursor::new(bytes.as_slice()), bytes.len(), path, limits)
}

/// Decodes an in-memory image (errors name it `<memory>`).
pub fn decode_image_bytes(bytes: &[u8], limits: &LoadLimits) -> Result<RgbImage, ImageLoadError> {
    decode_named(
        Cursor::new(bytes),
        bytes.len(),
        Path::new("<memory>"),
        limits,
    )
}

fn decode_named<R: BufRead + Seek>(
    reader: R,
    len: usize,
    path: &Path,
    limits: &LoadLimits,
) -> Result<RgbImage, ImageLoadError> {
    if len == 0 {
        return Err(ImageLoadError::Empty(path.to_path_buf()));
    }
    let format_err = |message: String| ImageLoadError::Format {
        path: path.to_path_buf(),
        message,
    };
    let decode_err = |e: image::ImageError| ImageLoadError::Decode {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut reader = ImageReader::new(reader)
        .with_guessed_format()
        .map_err(|e| format_err(e.to_string()))?;
    if reader.format().is_none() {
        return Err(format_err(
            "the file content is not a known image format".into(),
        ));
    }
    let mut lim = image::Limits::default();
    lim.max_image_width = Some(limits.max_side);
    lim.max_image_height = Some(limits.max_side);
    lim.max_alloc = Some(limits.max_pixels.saturating_mul(16));
    reader.limits(lim);
    let mut decoder = reader.into_decoder().map_err(|e| classify(e, path))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(ImageLoadError::ZeroSized(path.to_path_buf()));
    }
    if w > limits.max_side || h > limits.max_side || u64::from(w) * u64::from(h) > limits.max_pixels
    {
        return Err(ImageLoadError::TooLarge {
            path: path.to_path_buf(),
            width: w,
            height: h,
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
        });
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    img.apply_orientation(orientation);
    Ok(to_rgb8(img))
}

fn classify(e: image::ImageError, path: &Path) -> ImageLoadError {
    match e {
        image::ImageError::Unsupported(u) => ImageLoadError::Format {
            path: path.to_path_buf(),
            message: u.to_string(),
        },
        image::ImageError::Limits(l) => ImageLoadError::Decode {
            path: path.to_path_buf(),
            message: format!("the image is too large for the decode limits ({l})"),
        },
        other => ImageLoadError::Decode {
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    }
}
