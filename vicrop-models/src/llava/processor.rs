//! `CLIPImageProcessor` semantics: shortest-edge resize with PIL's bicubic filter on uint8,
//! centre crop, rescale, normalise, laid out channels-first.
//!
//! Each step is a pure function of its input, bit-compatible with transformers 4.47 (the
//! resize is our port of Pillow's resampler in `vicrop_core::pil`; rescale is computed in
//! f64 then rounded to f32, normalisation in f32, exactly as numpy does there).

use std::path::Path;

use burn::tensor::{backend::Backend, DType, Tensor, TensorData};
use image::RgbImage;
use vicrop_core::pil::{resize_rgb8, Filter};

use crate::config::{PreprocessorConfig, SizeSpec, CLIP_MEAN, CLIP_STD};
use crate::error::{ModelError, Result};

/// How the resize target is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTarget {
    /// Scale so the shorter side is this long; the longer side is truncated (`int(...)`).
    ShortestEdge(u32),
    /// Resize to exactly `(width, height)`, aspect not kept.
    Exact {
        /// Target width.
        width: u32,
        /// Target height.
        height: u32,
    },
}

/// A validated CLIP image processor.
#[derive(Debug, Clone)]
pub struct ClipImageProcessor {
    /// Resize target, if resizing.
    pub resize: Option<ResizeTarget>,
    /// Resampling filter.
    pub filter: Filter,
    /// Centre-crop `(width, height)`, if cropping.
    pub crop: Option<(u32, u32)>,
    /// Rescale factor, if rescaling.
    pub rescale: Option<f64>,
    /// `(mean, std)` per channel, if normalising.
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

impl ClipImageProcessor {
    /// The processor LLaVA-1.5 uses (336 px, bicubic, OpenAI CLIP statistics).
    pub fn llava_default(side: u32) -> Self {
        Self {
            resize: Some(ResizeTarget::ShortestEdge(side)),
            filter: Filter::Bicubic,
            crop: Some((side, side)),
            rescale: Some(1.0 / 255.0),
            normalize: Some((CLIP_MEAN.map(|v| v as f32), CLIP_STD.map(|v| v as f32))),
        }
    }

    /// Validates a parsed `preprocessor_config.json`.
    pub fn from_config(cfg: &PreprocessorConfig, path: &Path) -> Result<Self> {
        let bad = |message: String| ModelError::Config {
            path: path.to_path_buf(),
            message,
        };
        let resize = if cfg.do_resize {
            Some(match &cfg.size {
                SizeSpec::Int(n) => ResizeTarget::ShortestEdge(*n),
                SizeSpec::Dict {
                    shortest_edge: Some(n),
                    ..
                } => ResizeTarget::ShortestEdge(*n),
                SizeSpec::Dict {
                    height: Some(h),
                    width: Some(w),
                    ..
                } => ResizeTarget::Exact {
                    width: *w,
                    height: *h,
                },
                other => return Err(bad(format!("size {other:?} is not understood"))),
            })
        } else {
            None
        };
        if let Some(ResizeTarget::ShortestEdge(0) | ResizeTarget::Exact { width: 0, .. })
        | Some(ResizeTarget::Exact { height: 0, .. }) = resize
        {
            return Err(bad("size must be positive".into()));
        }
        let filter = filter_for(cfg.resample, bad)?;
        let crop = if cfg.do_center_crop {
            Some(match &cfg.crop_size {
                SizeSpec::Int(n) => (*n, *n),
                SizeSpec::Dict {
                    height: Some(h),
                    width: Some(w),
                    ..
                } => (*w, *h),
                other => return Err(bad(format!("crop_size {other:?} is not understood"))),
            })
        } else {
            None
        };
        if matches!(crop, Some((0, _)) | Some((_, 0))) {
            return Err(bad("crop_size must be positive".into()));
        }
        let normalize = if cfg.do_normalize {
            Some(mean_std(&cfg.image_mean, &cfg.image_std, bad)?)
        } else {
            None
        };
        Ok(Self {
            resize,
            filter,
            crop,
            rescale: cfg.do_rescale.then_some(cfg.rescale_factor),
            normalize,
        })
    }

    /// Output side lengths `(width, height)` for an input of `(w, h)`.
    pub fn output_size(&self, w: u32, h: u32) -> (u32, u32) {
        match (self.crop, self.resize) {
            (Some(c), _) => c,
            (None, Some(r)) => resize_size(r, w, h),
            (None, None) => (w, h),
        }
    }

    /// Resize and centre-crop: the uint8 image the network will see.
    pub fn resize_and_crop(&self, img: &RgbImage) -> RgbImage {
        let resized = match self.resize {
            Some(target) => {
                let (w, h) = resize_size(target, img.width(), img.height());
                if (w, h) == img.dimensions() {
                    img.clone()
                } else {
                    resize_rgb8(img, w, h, self.filter)
                }
            }
            None => img.clone(),
        };
        match self.crop {
            Some((cw, ch)) => center_crop(&resized, cw, ch),
            None => resized,
        }
    }

    /// Rescale and normalise a uint8 image to channels-first f32 (`[3, h, w]`, flattened).
    pub fn normalize(&self, img: &RgbImage) -> Vec<f32> {
        let (w, h) = img.dimensions();
        let plane = (w * h) as usize;
        let mut out = vec![0f32; 3 * plane];
        for (i, px) in img.pixels().enumerate() {
            for c in 0..3 {
                let raw = px.0[c];
                let mut v = match self.rescale {
                    Some(f) => (raw as f64 * f) as f32,
                    None => raw as f32,
                };
                if let Some((mean, std)) = &self.normalize {
                    v = (v - mean[c]) / std[c];
                }
                out[c * plane + i] = v;
            }
        }
        out
    }

    /// The whole processor: `[3, h, w]` pixel values as a flat vector, plus `(w, h)`.
    pub fn preprocess(&self, img: &RgbImage) -> (Vec<f32>, (u32, u32)) {
        let cropped = self.resize_and_crop(img);
        let dims = cropped.dimensions();
        (self.normalize(&cropped), dims)
    }

    /// Preprocesses several images into one `[n, 3, h, w]` tensor.
    pub fn pixel_values<B: Backend>(
        &self,
        images: &[&RgbImage],
        device: &B::Device,
        dtype: DType,
    ) -> Result<Tensor<B, 4>> {
        let mut all = Vec::new();
        let mut dims = None;
        for img in images {
            if img.width() == 0 || img.height() == 0 {
                return Err(ModelError::InvalidInput(
                    "an image has zero width or height".into(),
                ));
            }
            let (values, d) = self.preprocess(img);
            if dims.is_some_and(|prev| prev != d) {
                return Err(ModelError::InvalidInput(
                    "images preprocess to different sizes; enable centre cropping".into(),
                ));
            }
            dims = Some(d);
            all.extend(values);
        }
        let (w, h) = dims.ok_or_else(|| ModelError::InvalidInput("no image given".into()))?;
        let data = TensorData::new(all, [images.len(), 3, h as usize, w as usize]);
        Ok(Tensor::from_data(
            data.convert_dtype(dtype),
            (device, dtype),
        ))
    }
}

/// transformers' `get_resize_output_image_size` (`default_to_square=False`) or an exact size.
pub fn resize_size(target: ResizeTarget, w: u32, h: u32) -> (u32, u32) {
    match target {
        ResizeTarget::Exact { width, height } => (width, height),
        ResizeTarget::ShortestEdge(side) => {
            let (short, long) = if w <= h { (w, h) } else { (h, w) };
            // Python: int(size * long / short), a float64 product then truncation.
            let new_long = (side as f64 * long as f64 / short.max(1) as f64) as u32;
            if w <= h {
                (side, new_long.max(1))
            } else {
                (new_long.max(1), side)
            }
        }
    }
}

/// transformers' `center_crop`: top-left at `((H - h) // 2, (W - w) // 2)`, zero padding when
/// the image is smaller than the crop.
pub fn center_crop(img: &RgbImage, cw: u32, ch: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if (w, h) == (cw, ch) {
        return img.clone();
    }
    // Offsets of the crop in image coordinates (negative when padding).
    let top = (h as i64 - ch as i64).div_euclid(2);
    let left = (w as i64 - cw as i64).div_euclid(2);
    let mut out = RgbImage::new(cw, ch);
    for y in 0..ch {
        let sy = top + y as i64;
        if sy < 0 || sy >= h as i64 {
            continue;
        }
        for x in 0..cw {
            let sx = left + x as i64;
            if sx < 0 || sx >= w as i64 {
                continue;
            }
            out.put_pixel(x, y, *img.get_pixel(sx as u32, sy as u32));
        }
    }
    out
}

/// The Pillow filter of a processor's `resample` code (2 = bilinear, 3 = bicubic), shared by
/// the CLIP and BLIP processors.
pub(crate) fn filter_for(resample: u32, bad: impl Fn(String) -> ModelError) -> Result<Filter> {
    match resample {
        2 => Ok(Filter::Bilinear),
        3 => Ok(Filter::Bicubic),
        other => Err(bad(format!(
            "resample {other} is not supported (2 = bilinear, 3 = bicubic)"
        ))),
    }
}

/// `image_mean` / `image_std` as three `f32` each, a zero std refused; shared by the CLIP and
/// BLIP processors.
pub(crate) fn mean_std(
    mean: &[f64],
    std: &[f64],
    bad: impl Fn(String) -> ModelError,
) -> Result<([f32; 3], [f32; 3])> {
    let three = |v: &[f64], name: &str| -> Result<[f32; 3]> {
        match v {
            [a, b, c] => Ok([*a as f32, *b as f32, *c as f32]),
            _ => Err(bad(format!("{name} must have 3 values, has {}", v.len()))),
        }
    };
    let mean = three(mean, "image_mean")?;
    let std = three(std, "image_std")?;
    if std.contains(&0.0) {
        return Err(bad("image_std must not contain 0".into()));
    }
    Ok((mean, std))
}
