//! Command implementations, callable from the binary and from tests.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::{backend::Backend, DType};
use vicrop_core::pipeline::{Method, Outcome, Question, ViCrop};
use vicrop_core::{
    load_image, AdaptiveWindow, AttentionSource, CropBox, CropSelector, GradientSource, LoadLimits,
    MapPlacement, SaliencyMap,
};
use vicrop_models::hub::{resolve_or_download, DownloadProgress, HubOptions, ProgressFn};
use vicrop_models::{Answer, AnyModel, InstructBlipVicrop, LlavaVicrop, LoadOptions};

use crate::run::SavedMap;

/// Inputs of `vicrop answer`.
#[derive(Debug, Clone)]
pub struct AnswerRequest {
    /// `--model`: folder or hub id.
    pub model: String,
    /// Where a hub id is looked for and downloaded from (`--offline`, `--revision`).
    pub hub: HubOptions,
    /// `--image`.
    pub image: PathBuf,
    /// `--question`.
    pub question: String,
    /// `--max-new-tokens`.
    pub max_new_tokens: usize,
    /// Compute dtype.
    pub dtype: DType,
}

/// A spinner on stderr while something slow happens (hidden when stderr is not a terminal).
pub fn spinner(message: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar.set_message(message.to_string());
    bar
}

/// The style of the byte progress bars (loading, downloading).
fn byte_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, {eta})",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// Loads the model folder `dir` on backend `B` with a byte progress bar on stderr (hidden when
/// stderr is not a terminal).
pub fn load_with_bar<B: Backend>(
    dir: &std::path::Path,
    device: &B::Device,
    dtype: DType,
) -> Result<AnyModel<B>> {
    let bar = indicatif::ProgressBar::with_draw_target(
        None,
        indicatif::ProgressDrawTarget::stderr_with_hz(4),
    );
    bar.set_style(byte_style());
    bar.set_message(format!("loading {}", dir.display()));
    let progress_bar = bar.clone();
    let options = LoadOptions {
        dtype,
        progress: Some(std::sync::Arc::new(move |done, total| {
            progress_bar.set_length(total);
            progress_bar.set_position(done);
        })),
    };
    let model = AnyModel::<B>::load(dir, device, options)
        .with_context(|| format!("loading the model from {}", dir.display()));
    bar.finish_and_clear();
    model
}

/// Hub options for `--model` from the environment (`HF_ENDPOINT`, `HF_TOKEN`,
/// `HF_HUB_OFFLINE`, the cache variables), `--offline` and `--revision`, drawing one progress
/// bar per downloaded file on stderr (hidden when stderr is not a terminal).
pub fn hub_options(offline: bool, revision: Option<&str>) -> HubOptions {
    let mut options = HubOptions::from_env();
    options.offline |= offline;
    if let Some(revision) = revision {
        options.revision = revision.to_string();
    }
    options.progress = Some(download_bars());
    options
}

/// A progress callback that draws a byte bar per file.
fn download_bars() -> std::sync::Arc<ProgressFn> {
    use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget};
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
    let style = byte_style();
    let bars: std::sync::Mutex<std::collections::HashMap<String, ProgressBar>> =
        std::sync::Mutex::default();
    std::sync::Arc::new(move |p: &DownloadProgress<'_>| {
        let Ok(mut bars) = bars.lock() else {
            return;
        };
        let bar = bars.entry(p.file.to_string()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new(p.total));
            bar.set_style(style.clone());
            bar.set_message(format!("downloading {}", p.file));
            bar
        });
        bar.set_length(p.total);
        bar.set_position(p.done);
        if p.done >= p.total && !bar.is_finished() {
            bar.finish();
        }
    })
}

/// Resolves `--model` (downloading a hub id that is not in the cache, unless offline) and
/// loads it on backend `B` (the family named by its `config.json`), with a spinner that stays
/// up for the caller's next step.
fn load_model<B: Backend>(
    model: &str,
    hub: &HubOptions,
    device: &B::Device,
    dtype: DType,
) -> Result<(AnyModel<B>, indicatif::ProgressBar)> {
    let dir = resolve_or_download(model, hub)?;
    let model = load_with_bar::<B>(&dir, device, dtype)?;
    let bar = spinner("working");
    Ok((model, bar))
}

/// Answers on backend `B`.
pub fn answer_on<B: Backend>(req: &AnswerRequest, device: &B::Device) -> Result<Answer> {
    if req.question.trim().is_empty() {
        bail!("--question is empty");
    }
    let image = load_image(&req.image, &LoadLimits::default())?;
    let (model, bar) = load_model::<B>(&req.model, &req.hub, device, req.dtype)?;
    bar.set_message("answering");
    let answer = model.answer(&[&image], &req.question, req.max_new_tokens)?;
    bar.finish_and_clear();
    Ok(answer)
}

/// Where a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// The CPU backend (burn-flex, or burn-ndarray in builds without `flex`).
    Cpu,
    /// burn-cuda on GPU 0.
    Cuda,
    /// burn-wgpu on the default adapter (Vulkan, Metal or DirectX 12).
    Wgpu,
}

/// A command that can run on any backend.
pub trait BackendJob {
    /// What it returns.
    type Output;
    /// Runs on backend `B`.
    fn run<B: Backend>(&self, device: &B::Device) -> Result<Self::Output>;
}

impl BackendJob for AnswerRequest {
    type Output = Answer;
    fn run<B: Backend>(&self, device: &B::Device) -> Result<Answer> {
        answer_on::<B>(self, device)
    }
}

impl BackendJob for CropRequest {
    type Output = (Outcome, Timing);
    fn run<B: Backend>(&self, device: &B::Device) -> Result<(Outcome, Timing)> {
        crop_on::<B>(self, device)
    }
}

/// Inputs of `vicrop scenes`.
#[derive(Debug, Clone)]
pub struct ScenesRequest {
    /// `--model`.
    pub model: String,
    /// Where a hub id is looked for and downloaded from (`--offline`, `--revision`).
    pub hub: HubOptions,
    /// `--set`: a folder with `items.jsonl`, or the file.
    pub set: PathBuf,
    /// `--limit`.
    pub limit: Option<usize>,
    /// `--shard K/N`.
    pub shard: Option<(usize, usize)>,
    /// What to run per item.
    pub plan: crate::scenes::ScenePlan,
    /// `--results`: JSON lines, one per item, appended.
    pub results: Option<PathBuf>,
    /// Compute dtype.
    pub dtype: DType,
}

impl BackendJob for ScenesRequest {
    type Output = Vec<crate::scenes::ItemResult>;
    fn run<B: Backend>(&self, device: &B::Device) -> Result<Self::Output> {
        let set = crate::scenes::SceneSet::load(&self.set)?;
        let mut file = match &self.results {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("opening {}", p.display()))?,
            ),
            None => None,
        };
        let sink = file.as_mut().map(|f| f as &mut dyn std::io::Write);
        let (model, bar) = load_model::<B>(&self.model, &self.hub, device, self.dtype)?;
        bar.finish_and_clear();
        match model {
            AnyModel::Llava(m) => self.evaluate(LlavaVicrop::new(*m), &set, sink),
            AnyModel::InstructBlip(m) => self.evaluate(InstructBlipVicrop::new(*m), &set, sink),
        }
    }
}

impl ScenesRequest {
    /// Evaluates `set` with a loaded model of any family.
    fn evaluate<M: AttentionSource + GradientSource>(
        &self,
        model: M,
        set: &crate::scenes::SceneSet,
        sink: Option<&mut dyn std::io::Write>,
    ) -> Result<Vec<crate::scenes::ItemResult>> {
        crate::scenes::evaluate_set(
            &ViCrop::new(model),
            set,
            &self.plan,
            self.limit,
            self.shard,
            sink,
        )
    }
}

/// Runs `job` on the chosen device, with a clear error when this build lacks its backend.
pub fn run_on<J: BackendJob>(kind: DeviceKind, job: &J) -> Result<J::Output> {
    match kind {
        #[cfg(any(feature = "flex", feature = "ndarray"))]
        DeviceKind::Cpu => job.run::<vicrop_models::backend::Cpu>(&Default::default()),
        #[cfg(not(any(feature = "flex", feature = "ndarray")))]
        DeviceKind::Cpu => bail!(
            "--device cpu: this vicrop was built without a CPU backend; rebuild with the `flex` feature"
        ),
        #[cfg(feature = "cuda")]
        DeviceKind::Cuda => {
            run_on_gpu::<vicrop_models::backend::Gpu, J>(job, "--device cuda: CUDA GPU 0")
        }
        #[cfg(not(feature = "cuda"))]
        DeviceKind::Cuda => bail!(
            "--device cuda: this vicrop was built without CUDA support; rebuild with `cargo build --release --features cuda`"
        ),
        #[cfg(feature = "wgpu")]
        DeviceKind::Wgpu => run_on_gpu::<vicrop_models::backend::Wgpu, J>(
            job,
            "--device wgpu: no usable GPU adapter (Vulkan, Metal or DirectX 12)",
        ),
        #[cfg(not(feature = "wgpu"))]
        DeviceKind::Wgpu => bail!(
            "--device wgpu: this vicrop was built without wgpu support; rebuild with `cargo build --release --features wgpu`"
        ),
    }
}

/// Runs `job` on GPU backend `B`'s default device, once the kernel caches are placed and the
/// device has run a first kernel (`what` starts the error when it cannot).
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn run_on_gpu<B: Backend, J: BackendJob>(job: &J, what: &str) -> Result<J::Output> {
    log_kernel_cache();
    let device = Default::default();
    probe_device::<B>(&device, what)?;
    job.run::<B>(&device)
}

/// Puts the GPU kernel caches in vicrop's folder (see [`vicrop_models::kernel_cache`]) and
/// says where.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn log_kernel_cache() {
    use vicrop_models::kernel_cache::{configure, KernelCache};
    match configure(None) {
        KernelCache::Dir(dir) => tracing::info!("GPU kernel cache: {}", dir.display()),
        KernelCache::CubeclFile(file) => {
            tracing::info!("GPU kernel cache: as {} says", file.display())
        }
        KernelCache::CubeclDefault => tracing::info!("GPU kernel cache: cubecl's default"),
    }
}

/// Checks that `device` can run a kernel, turning the backend's panic (no driver, no device,
/// no adapter) into an error that starts with `what`.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
pub fn probe_device<B: Backend>(device: &B::Device, what: &str) -> Result<()> {
    use std::sync::{Arc, Mutex};
    let first: Arc<Mutex<Option<String>>> = Arc::default();
    let seen = first.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let mut slot = seen.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown error".into());
            *slot = Some(msg);
        }
    }));
    let probe = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        burn::tensor::Tensor::<B, 1>::zeros([1], device).into_data()
    }));
    std::panic::set_hook(previous);
    match probe {
        Ok(_) => Ok(()),
        Err(_) => {
            let msg = first
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| "unknown error".into());
            let short: String = msg.chars().take(300).collect();
            bail!("{what} is not usable: {short}")
        }
    }
}

/// Inputs of `vicrop crop`.
#[derive(Debug, Clone)]
pub struct CropRequest {
    /// `--model`.
    pub model: String,
    /// Where a hub id is looked for and downloaded from (`--offline`, `--revision`).
    pub hub: HubOptions,
    /// `--image`.
    pub image: PathBuf,
    /// `--question`.
    pub question: String,
    /// `--short-question`.
    pub short_question: Option<String>,
    /// `--method`.
    pub method: Method,
    /// `--high-res`.
    pub high_res: bool,
    /// `--layer`.
    pub layer: Option<usize>,
    /// `--qformer-layer` (InstructBLIP's cross-attention index; ignored for LLaVA).
    pub qformer_layer: Option<usize>,
    /// `--side`.
    pub side: Option<u32>,
    /// `--placement`.
    pub placement: MapPlacement,
    /// `--max-new-tokens`.
    pub max_new_tokens: usize,
    /// Compute dtype.
    pub dtype: DType,
    /// `--save-crop`.
    pub save_crop: Option<PathBuf>,
    /// `--save-heatmap`.
    pub save_heatmap: Option<PathBuf>,
}

/// Wall-clock seconds of a `vicrop crop` run.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Timing {
    /// Loading the model.
    pub load_s: f64,
    /// Preparing the image and running ViCrop (everything after loading).
    pub run_s: f64,
}

/// The JSON object `vicrop crop --json` prints.
pub fn outcome_json(o: &Outcome, timing: Timing) -> serde_json::Value {
    serde_json::json!({
        "timing": timing,
        "method": o.method.name(),
        "high_res": o.high_res,
        "layer": o.layer,
        "qformer_layer": o.connector_layer,
        "answer": o.answer.text,
        "answer_token_ids": o.answer.token_ids,
        "map": map_json(&o.map),
        "bbox": o.bbox.to_array(),
        "crop_answer": o.crop_answer.text,
        "crop_answer_token_ids": o.crop_answer.token_ids,
        "cost": o.cost,
        "reference_cost": o.reference_cost,
        "timings_ms": o.timings,
    })
}

/// `{"rows", "cols", "values"}`; non-finite values become `null` (a [`SavedMap`]).
pub fn map_json(map: &SaliencyMap) -> serde_json::Value {
    serde_json::to_value(SavedMap::new(map)).unwrap_or(serde_json::Value::Null)
}

/// Runs ViCrop on backend `B`.
pub fn crop_on<B: Backend>(req: &CropRequest, device: &B::Device) -> Result<(Outcome, Timing)> {
    if req.question.trim().is_empty() {
        bail!("--question is empty");
    }
    if req
        .short_question
        .as_deref()
        .is_some_and(|s| s.trim().is_empty())
    {
        bail!("--short-question is empty");
    }
    if req.side.is_some_and(|s| s < 2) {
        bail!("--side must be at least 2 pixels");
    }
    let image = load_image(&req.image, &LoadLimits::default())?;
    let started = std::time::Instant::now();
    let (model, bar) = load_model::<B>(&req.model, &req.hub, device, req.dtype)?;
    let load_s = started.elapsed().as_secs_f64();
    let (outcome, run_s) = match model {
        AnyModel::Llava(m) => {
            if req.qformer_layer.is_some() {
                bar.suspend(|| {
                    eprintln!("note: --qformer-layer is ignored: LLaVA has no Q-Former")
                });
            }
            crop_with(LlavaVicrop::new(*m), req, &image, &bar)?
        }
        AnyModel::InstructBlip(m) => crop_with(InstructBlipVicrop::new(*m), req, &image, &bar)?,
    };
    bar.finish_and_clear();
    if let Some(path) = &req.save_crop {
        let b = outcome.bbox;
        image::imageops::crop_imm(&image, b.x0, b.y0, b.width(), b.height())
            .to_image()
            .save(path)
            .with_context(|| format!("writing the crop to {}", path.display()))?;
    }
    if let Some(path) = &req.save_heatmap {
        crate::heatmap::render(&image, &outcome.map, outcome.bbox)
            .save(path)
            .with_context(|| format!("writing the heatmap to {}", path.display()))?;
    }
    Ok((outcome, Timing { load_s, run_s }))
}

/// Runs ViCrop with a loaded model of any family; returns the outcome and its seconds.
fn crop_with<M: AttentionSource + GradientSource>(
    model: M,
    req: &CropRequest,
    image: &image::RgbImage,
    bar: &indicatif::ProgressBar,
) -> Result<(Outcome, f64)> {
    let started = std::time::Instant::now();
    let mut pipeline = ViCrop::new(model);
    pipeline.max_new_tokens = req.max_new_tokens;
    let side = req
        .side
        .unwrap_or_else(|| pipeline.model().geometry().input_side);
    pipeline = pipeline.with_selector(AdaptiveWindow::new(side).with_placement(req.placement));
    bar.set_message(format!("ViCrop ({})", req.method.name()));
    let mut prepared = pipeline.prepare(image)?;
    let question = Question {
        text: req.question.clone(),
        short: req.short_question.clone(),
        method: req.method,
        layer: req.layer,
        connector_layer: req.qformer_layer,
        high_res: req.high_res,
    };
    let outcome = pipeline.run(&mut prepared, &question)?;
    Ok((outcome, started.elapsed().as_secs_f64()))
}

/// `vicrop box`: reads a map (`{"rows", "cols", "values"}`, or an object holding one under
/// `"map"`, such as `vicrop crop --json` output) and runs the crop selector alone.
pub fn box_from_json(text: &str, image_size: (u32, u32), side: u32) -> Result<CropBox> {
    if side < 2 {
        bail!("--side must be at least 2 pixels");
    }
    if image_size.0 == 0 || image_size.1 == 0 {
        bail!("--image-size must be positive, e.g. 1024x768");
    }
    let json: serde_json::Value =
        serde_json::from_str(text).context("the map is not valid JSON")?;
    let obj = if json.get("map").is_some() {
        &json["map"]
    } else {
        &json
    };
    let values = obj
        .get("values")
        .and_then(|v| v.as_array())
        .context("the map has no `values` array (expected {\"rows\", \"cols\", \"values\"})")?;
    let mut rows = Vec::with_capacity(values.len());
    for (i, row) in values.iter().enumerate() {
        let row = row
            .as_array()
            .with_context(|| format!("map row {i} is not an array"))?;
        rows.push(
            row.iter()
                .map(|v| {
                    if v.is_null() {
                        Ok(f32::NAN)
                    } else {
                        v.as_f64()
                            .map(|f| f as f32)
                            .with_context(|| format!("map row {i} holds a non-number: {v}"))
                    }
                })
                .collect::<Result<Vec<f32>>>()?,
        );
    }
    let map = SaliencyMap::from_rows(&rows)?;
    for (key, want) in [("rows", map.rows()), ("cols", map.cols())] {
        if let Some(n) = obj.get(key).and_then(|v| v.as_u64()) {
            if n as usize != want {
                bail!("the map says {key} = {n} but its values have {want}");
            }
        }
    }
    Ok(AdaptiveWindow::new(side).select(&map, image_size))
}

/// Parses `WxH`.
pub fn parse_size(s: &str) -> Result<(u32, u32)> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .with_context(|| format!("--image-size `{s}` is not WxH, e.g. 1024x768"))?;
    let w: u32 = w
        .trim()
        .parse()
        .with_context(|| format!("bad width in `{s}`"))?;
    let h: u32 = h
        .trim()
        .parse()
        .with_context(|| format!("bad height in `{s}`"))?;
    Ok((w, h))
}
