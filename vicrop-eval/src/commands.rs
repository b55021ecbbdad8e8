//! Command implementations, callable from the binary and from tests.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::tensor::{backend::Backend, DType};
use vicrop_core::{load_image, LoadLimits};
use vicrop_models::{hub::resolve_model_dir, Answer, LlavaModel, LoadOptions};

/// Inputs of `vicrop answer`.
#[derive(Debug, Clone)]
pub struct AnswerRequest {
    /// `--model`: folder or cached hub id.
    pub model: String,
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

/// Answers on backend `B`.
pub fn answer_on<B: Backend>(req: &AnswerRequest, device: &B::Device) -> Result<Answer> {
    if req.question.trim().is_empty() {
        anyhow::bail!("--question is empty");
    }
    let image = load_image(&req.image, &LoadLimits::default())?;
    let dir = resolve_model_dir(&req.model)?;
    let bar = spinner(&format!("loading {}", dir.display()));
    let model = LlavaModel::<B>::load(&dir, device, LoadOptions { dtype: req.dtype })
        .with_context(|| format!("loading the model from {}", dir.display()))?;
    bar.set_message("answering");
    let answer = model.answer(&[&image], &req.question, req.max_new_tokens)?;
    bar.finish_and_clear();
    Ok(answer)
}

/// `vicrop answer` on the CPU.
#[cfg(feature = "ndarray")]
pub fn answer_cpu(req: &AnswerRequest) -> Result<Answer> {
    answer_on::<vicrop_models::backend::Cpu>(req, &Default::default())
}

/// `vicrop answer` on the CPU in a build without the CPU backend: a clear error.
#[cfg(not(feature = "ndarray"))]
pub fn answer_cpu(_req: &AnswerRequest) -> Result<Answer> {
    anyhow::bail!("--device cpu: this vicrop was built without the `ndarray` feature")
}

/// `vicrop answer` on CUDA GPU 0.
#[cfg(feature = "cuda")]
pub fn answer_cuda(req: &AnswerRequest) -> Result<Answer> {
    check_cuda()?;
    answer_on::<vicrop_models::backend::Gpu>(req, &Default::default())
}

/// Checks that CUDA GPU 0 can run a kernel, turning the backend's panic (no driver, no
/// device) into an error.
#[cfg(feature = "cuda")]
pub fn check_cuda() -> Result<()> {
    use std::sync::{Arc, Mutex};
    use vicrop_models::backend::Gpu;
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
    let probe = std::panic::catch_unwind(|| {
        let device = Default::default();
        burn::tensor::Tensor::<Gpu, 1>::zeros([1], &device).into_data()
    });
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
            anyhow::bail!("--device cuda: CUDA GPU 0 is not usable: {short}")
        }
    }
}

/// `vicrop answer` on CUDA in a build without it: a clear error.
#[cfg(not(feature = "cuda"))]
pub fn answer_cuda(_req: &AnswerRequest) -> Result<Answer> {
    anyhow::bail!(
        "--device cuda: this vicrop was built without CUDA support; rebuild with `cargo build --release --features cuda`"
    )
}
