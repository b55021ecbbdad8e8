//! `vicrop eval run` as a job on any backend: every check that needs no model first (options,
//! dataset, checkpoint digest, the folder's manifest), then the model, then [`super::run`].

use std::path::PathBuf;

use burn::tensor::{backend::Backend, DType};
use vicrop_core::MapPlacement;
use vicrop_models::hub::{resolve_or_download, HubOptions};
use vicrop_models::{AnyModel, InstructBlipVicrop, LlavaVicrop};

use super::{check_folder, run, RunError, RunMethod, RunOptions, RunSpec, RunSummary, Shard};
use crate::commands::BackendJob;
use crate::data::{Dataset, Format, LoadOptions};
use crate::score::Task;

/// Inputs of `vicrop eval run`.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// `--model`: folder or hub id.
    pub model: String,
    /// Where a hub id is looked for and downloaded from (`--offline`, `--revision`).
    pub hub: HubOptions,
    /// `--task`.
    pub task: Task,
    /// `--format`; `None`: the task's native format.
    pub format: Option<Format>,
    /// `--data`.
    pub data: PathBuf,
    /// `--images`.
    pub images: Option<PathBuf>,
    /// `--boxes` (TextVQA answer boxes).
    pub boxes: Option<PathBuf>,
    /// `--method`.
    pub method: RunMethod,
    /// `--high-res`.
    pub high_res: bool,
    /// `--layer`.
    pub layer: Option<usize>,
    /// `--placement`; `None`: the reference's (whole image).
    pub placement: Option<MapPlacement>,
    /// `--attention-ratio`.
    pub attention_ratio: bool,
    /// `--save-maps`.
    pub save_maps: bool,
    /// `--max-new-tokens`.
    pub max_new_tokens: usize,
    /// `--shard`.
    pub shard: Shard,
    /// `--limit`.
    pub limit: Option<usize>,
    /// `--retry-errors`.
    pub retry_errors: bool,
    /// `--out`.
    pub out: PathBuf,
    /// Compute dtype.
    pub dtype: DType,
}

/// The format a task's benchmark ships in (every task name is also a format name).
pub fn native_format(task: Task) -> Format {
    match task {
        Task::TextVqa => Format::TextVqa,
        Task::VqaV2 => Format::VqaV2,
        Task::Gqa => Format::Gqa,
        Task::AOkVqa => Format::AOkVqa,
        Task::DocVqa => Format::DocVqa,
        Task::Pope => Format::Pope,
        Task::Vstar => Format::VStar,
    }
}

fn dtype_name(dtype: DType) -> String {
    match dtype {
        DType::F32 => "f32".into(),
        DType::BF16 => "bf16".into(),
        DType::F16 => "f16".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

impl RunRequest {
    /// Everything before loading the model: the dataset, the spec (checkpoint digest
    /// included) and the folder check. Returns the warnings to show.
    pub fn plan(&self) -> Result<(RunSpec, Dataset, PathBuf, Vec<String>), RunError> {
        let format = self.format.unwrap_or_else(|| native_format(self.task));
        let dataset = Dataset::load(
            format,
            &self.data,
            &LoadOptions {
                images: self.images.clone(),
                boxes: self.boxes.clone(),
            },
        )?;
        let dir = resolve_or_download(&self.model, &self.hub)
            .map_err(|e| RunError::Model(e.to_string()))?;
        let mut spec = RunSpec::new(
            &self.model,
            &dir,
            self.task,
            &dataset,
            &self.data.to_string_lossy(),
            self.method,
        )?;
        spec.high_res = self.high_res;
        spec.layer = self.layer;
        spec.placement = self.placement.unwrap_or_default();
        spec.max_new_tokens = self.max_new_tokens;
        spec.attention_ratio = self.attention_ratio;
        spec.save_maps = self.save_maps;
        spec.shards = self.shard.count;
        spec.dtype = dtype_name(self.dtype);
        let map_only = [
            ("--placement", self.placement.is_some()),
            ("--save-maps", self.save_maps),
        ];
        if let Some((flag, _)) = map_only.iter().find(|(_, given)| *given) {
            if self.method.map_method().is_none() {
                return Err(RunError::Invalid(format!(
                    "{flag} applies to the map methods (rel-att, grad-att, pure-grad), not {}",
                    self.method
                )));
            }
        }
        let warnings = check_folder(&self.out, &spec, self.shard)?;
        Ok((spec, dataset, dir, warnings))
    }

    fn options(&self) -> RunOptions {
        RunOptions {
            out: self.out.clone(),
            shard: self.shard,
            limit: self.limit,
            retry_errors: self.retry_errors,
            progress: true,
        }
    }
}

impl BackendJob for RunRequest {
    type Output = RunSummary;

    fn run<B: Backend>(&self, device: &B::Device) -> anyhow::Result<RunSummary> {
        let (spec, dataset, dir, _) = self.plan()?;
        let model = crate::commands::load_with_bar::<B>(&dir, device, self.dtype)
            .map_err(|e| RunError::Model(format!("{e:#}")))?;
        let options = self.options();
        // `run` logs the warnings (torn lines, differing paths) itself.
        let summary = match model {
            AnyModel::Llava(m) => run(LlavaVicrop::new(*m), &spec, &dataset, &options),
            AnyModel::InstructBlip(m) => {
                run(InstructBlipVicrop::new(*m), &spec, &dataset, &options)
            }
        }?;
        Ok(summary)
    }
}
