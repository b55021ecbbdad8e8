//! The `vicrop` command-line tool.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use vicrop_core::pipeline::Method;
use vicrop_eval::commands;

/// ViCrop: make multimodal LLMs see small details (MLLMs Know Where to Look, ICLR 2025).
#[derive(Debug, Parser)]
#[command(name = "vicrop", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Answer a question about an image with a LLaVA-1.5 checkpoint (no cropping).
    Answer(AnswerArgs),
    /// ViCrop: answer, find where the model looks, crop there, and answer again with both.
    Crop(CropArgs),
    /// Turn a saliency map (JSON) into a crop box with the reference's adaptive window.
    Box(BoxArgs),
    /// Evaluate on a generated sign-scene set (tools/demo_scenes.py): accuracy of the plain
    /// answer, of ViCrop per method, and of the oracle crop; where the maps and crops land.
    Scenes(ScenesArgs),
    /// Benchmark evaluation: score predictions as each benchmark's own code does.
    Eval(EvalArgs),
}

#[derive(Debug, clap::Args)]
struct EvalArgs {
    #[command(subcommand)]
    command: EvalCommand,
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Score a predictions file (JSON lines {"id", "prediction", "labels"[, "options"]}) with
    /// every metric of a task; prints {"n": int, "metrics": {"NAME": float}} in percent.
    Score(EvalScoreArgs),
    /// Run a model over a benchmark into a run folder, one JSON line per item, resumable and
    /// shardable (see docs/evaluation.md, "Running").
    Run(Box<EvalRunArgs>),
    /// Combine the shard files of a sharded run folder into its results.jsonl.
    Merge(EvalMergeArgs),
    /// Report on finished run folders (`vicrop eval run --out DIR`, merged): accuracy without
    /// and with the crop per model x method x task, by answer-box size, and the attention ratio
    /// per layer; markdown on stdout, and with --out also CSV files and PNG plots.
    Report(EvalReportArgs),
}

#[derive(Debug, clap::Args)]
struct EvalReportArgs {
    /// Run folders, each holding manifest.json and a merged results.jsonl.
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Also write report.md, main.csv, by_size.csv, attention_ratio.csv and the PNG plots
    /// into this folder (created if missing).
    #[arg(long, value_name = "REPORT_DIR")]
    out: Option<PathBuf>,
    /// Show each benchmark's own metric (vqa_official, anls) instead of the ViCrop
    /// reference's scoring (vqa_reference, docvqa_substring) that the paper reports.
    #[arg(long)]
    official: bool,
}

#[derive(Debug, clap::Args)]
struct EvalScoreArgs {
    /// Task: textvqa, vqav2, gqa, aokvqa, docvqa, pope, vstar.
    #[arg(long)]
    task: String,
    /// Predictions, one JSON object per line.
    #[arg(long)]
    predictions: PathBuf,
}

#[derive(Debug, clap::Args)]
struct EvalRunArgs {
    /// Model folder, or a hub id (LLaVA-1.5 or InstructBLIP, told by its config.json),
    /// downloaded into the Hugging Face cache if not there.
    #[arg(long)]
    model: String,
    #[command(flatten)]
    hub: HubArgs,
    /// Task, for the dataset's native format and the scoring: textvqa, vqav2, gqa, aokvqa,
    /// docvqa, pope, vstar.
    #[arg(long)]
    task: String,
    /// The dataset: its file, or the folder holding it (docs/evaluation.md, "Datasets").
    #[arg(long)]
    data: PathBuf,
    /// Dataset format (default: the task's native format; `reference` for the ViCrop
    /// reference repo's data.json).
    #[arg(long)]
    format: Option<String>,
    /// Image root, replacing the format's default.
    #[arg(long)]
    images: Option<PathBuf>,
    /// TextVQA answer boxes (the JSON lines export of jrzhang/TextVQA_GT_bbox).
    #[arg(long)]
    boxes: Option<PathBuf>,
    /// What to run per item.
    #[arg(long, value_enum)]
    method: vicrop_eval::run::RunMethod,
    /// Map methods: tile large images and stitch per-tile maps.
    #[arg(long)]
    high_res: bool,
    /// rel-att, grad-att: the LLM layer of the map (default: the model's).
    #[arg(long)]
    layer: Option<usize>,
    /// Map methods: where map cells lie on the image when choosing the box (default:
    /// whole-image, the reference's).
    #[arg(long, value_enum)]
    placement: Option<PlacementArg>,
    /// Also record, per item with answer boxes, the attention ratio at every LLM layer.
    #[arg(long)]
    attention_ratio: bool,
    /// Map methods: also record in each row the map the box was chosen from.
    #[arg(long)]
    save_maps: bool,
    /// Most tokens to generate per answer.
    #[arg(long, default_value_t = 20)]
    max_new_tokens: usize,
    /// Run only the items whose index is K modulo N (K counted from 0), into
    /// results-K-of-N.jsonl; `vicrop eval merge` combines the shards.
    #[arg(long, value_name = "K/N")]
    shard: Option<String>,
    /// Only the first N items of the dataset (before sharding).
    #[arg(long)]
    limit: Option<usize>,
    /// Run again the items whose rows recorded an error.
    #[arg(long)]
    retry_errors: bool,
    /// The run folder (created; a rerun resumes it).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Args)]
struct EvalMergeArgs {
    /// The run folder.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Merge even if shards are incomplete (what is missing is listed on stderr).
    #[arg(long)]
    allow_partial: bool,
}

#[derive(Debug, clap::Args)]
struct ScenesArgs {
    /// Model folder, or a hub id downloaded into the Hugging Face cache if not there.
    #[arg(long, required_unless_present = "report")]
    model: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
    /// The set: a folder holding items.jsonl, or the items.jsonl file.
    #[arg(long, required_unless_present = "report")]
    set: Option<PathBuf>,
    /// Only the first N items.
    #[arg(long)]
    limit: Option<usize>,
    /// Only the items whose index is K modulo N (run N processes, then `--report` their
    /// result files together).
    #[arg(long, value_name = "K/N")]
    shard: Option<String>,
    /// Print the summary of these result files (from `--results`) instead of running.
    #[arg(long, num_args = 1.., conflicts_with_all = ["model", "set"])]
    report: Vec<PathBuf>,
    /// Map methods to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [MethodArg::RelAtt, MethodArg::GradAtt, MethodArg::PureGrad])]
    methods: Vec<MethodArg>,
    /// Skip the high-resolution (tiled) runs.
    #[arg(long)]
    no_high_res: bool,
    /// Skip the answers with the map-region placement's box.
    #[arg(long)]
    reference_placement_only: bool,
    /// Append one JSON line per item to this file.
    #[arg(long)]
    results: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
    /// Print the summary as JSON instead of a markdown table.
    #[arg(long)]
    json: bool,
}

/// Map method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MethodArg {
    /// Relative attention (question over general description).
    RelAtt,
    /// Attention weighted by the ReLU of its gradient.
    GradAtt,
    /// Input-gradient ratio, high-pass masked.
    PureGrad,
}

/// Map cell placement for the box search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PlacementArg {
    /// Cells tile the whole image (the reference's behaviour).
    WholeImage,
    /// Cells tile the region the vision encoder saw (its centre crop).
    MapRegion,
}

#[derive(Debug, clap::Args)]
struct CropArgs {
    #[command(flatten)]
    common: ModelArgs,
    /// Map method.
    #[arg(long, value_enum)]
    method: MethodArg,
    /// Tile the image into rows of at most 1024 px and stitch per-tile maps (for large images).
    #[arg(long)]
    high_res: bool,
    /// LLM layer of the attention maps (default: the reference's 14 of 32 for LLaVA, 15 of 32
    /// for InstructBLIP, scaled to the model's depth).
    #[arg(long)]
    layer: Option<usize>,
    /// InstructBLIP: Q-Former cross-attention index of the maps (default: 2 of 6, i.e. Q-Former
    /// layer 4, scaled). Ignored, with a note, for LLaVA.
    #[arg(long)]
    qformer_layer: Option<usize>,
    /// Base crop side S in pixels (default: the vision encoder's input size, 336 for LLaVA-1.5,
    /// 224 for InstructBLIP).
    #[arg(long)]
    side: Option<u32>,
    /// A shorter question for the map passes.
    #[arg(long)]
    short_question: Option<String>,
    /// Where map cells lie on the image when choosing the box: `whole-image` (the
    /// reference, default) or `map-region` (the centre crop the encoder saw; geometrically
    /// correct).
    #[arg(long, value_enum, default_value_t = PlacementArg::WholeImage)]
    placement: PlacementArg,
    /// Write the crop to this PNG.
    #[arg(long)]
    save_crop: Option<PathBuf>,
    /// Write the map over the image, with the box, to this PNG.
    #[arg(long)]
    save_heatmap: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct BoxArgs {
    /// JSON file holding {"rows", "cols", "values"} (or `vicrop crop --json` output).
    #[arg(long)]
    map: PathBuf,
    /// Original image size, WxH.
    #[arg(long)]
    image_size: String,
    /// Base crop side S in pixels.
    #[arg(long, default_value_t = 336)]
    side: u32,
}

/// Where to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Device {
    /// The CPU (burn-flex; f32, bf16 or f16).
    Cpu,
    /// burn-cuda on GPU 0 (needs a build with `--features cuda`).
    Cuda,
    /// burn-wgpu on the default GPU adapter: Vulkan, Metal or DirectX 12 (needs a build with
    /// `--features wgpu`; f32 or f16).
    Wgpu,
}

/// Compute dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Dtype {
    /// f32 everywhere (the CPU default).
    F32,
    /// bfloat16 weights and activations, softmax in f32 (the CUDA default).
    Bf16,
    /// float16 weights and activations, softmax in f32.
    F16,
}

/// Where a model runs and in which dtype.
#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Where to run.
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
    /// Compute dtype (default: f32 on the CPU and wgpu, bf16 on CUDA).
    #[arg(long, value_enum)]
    dtype: Option<Dtype>,
}

impl RunArgs {
    /// The compute dtype for the device.
    fn dtype(&self) -> Result<burn::tensor::DType> {
        dtype_for(self.device, self.dtype)
    }
}

/// Where a hub `--model` comes from.
#[derive(Debug, clap::Args)]
struct HubArgs {
    /// Never download: a hub `--model` must already be in the local Hugging Face cache (as
    /// with HF_HUB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
    /// Branch, tag or commit of a hub `--model` (default: main; ignored for a folder).
    #[arg(long, value_name = "REV")]
    revision: Option<String>,
}

impl HubArgs {
    /// The hub options: the environment, then these flags.
    fn options(&self) -> vicrop_models::hub::HubOptions {
        commands::hub_options(self.offline, self.revision.as_deref())
    }
}

/// Flags shared by the commands that run a model.
#[derive(Debug, clap::Args)]
struct ModelArgs {
    /// Model folder (as `save_pretrained` writes it, or a hub snapshot folder), or a hub id
    /// such as `llava-hf/llava-1.5-7b-hf`, downloaded into the Hugging Face cache if not there.
    #[arg(long)]
    model: String,
    #[command(flatten)]
    hub: HubArgs,
    /// Image file (PNG, JPEG, GIF, BMP, WebP, TIFF).
    #[arg(long)]
    image: PathBuf,
    /// The question.
    #[arg(long)]
    question: String,
    /// Most tokens to generate per answer.
    #[arg(long, default_value_t = 20)]
    max_new_tokens: usize,
    #[command(flatten)]
    run: RunArgs,
    /// Print one JSON object instead of plain text.
    #[arg(long)]
    json: bool,
}

impl Device {
    fn kind(self) -> commands::DeviceKind {
        match self {
            Device::Cpu => commands::DeviceKind::Cpu,
            Device::Cuda => commands::DeviceKind::Cuda,
            Device::Wgpu => commands::DeviceKind::Wgpu,
        }
    }
}

#[derive(Debug, clap::Args)]
struct AnswerArgs {
    #[command(flatten)]
    common: ModelArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("VICROP_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Answer(args) => answer(args),
        Command::Crop(args) => crop(args),
        Command::Box(args) => bbox(args),
        Command::Scenes(args) => scenes(args),
        Command::Eval(args) => match args.command {
            EvalCommand::Score(args) => eval_score(args),
            EvalCommand::Run(args) => eval_run(*args),
            EvalCommand::Merge(args) => eval_merge(args),
            EvalCommand::Report(args) => eval_report(args),
        },
    }
}

fn eval_score(args: EvalScoreArgs) -> Result<()> {
    use vicrop_eval::score;
    let task: score::Task = args.task.parse()?;
    let scores = score::score_file(task, &args.predictions)?;
    let json = serde_json::to_string(&scores)?;
    writeln!(std::io::stdout().lock(), "{json}").context("writing to stdout")?;
    Ok(())
}

fn eval_report(args: EvalReportArgs) -> Result<()> {
    use vicrop_eval::report::{MetricSet, Report};
    let set = if args.official {
        MetricSet::Official
    } else {
        MetricSet::Reference
    };
    let report = Report::from_dirs_with(&args.dirs, set)?;
    write!(std::io::stdout().lock(), "{}", report.markdown()).context("writing to stdout")?;
    if let Some(out) = &args.out {
        let files = report.write(out)?;
        for f in files {
            eprintln!("wrote {}", f.display());
        }
    }
    Ok(())
}

fn eval_run(args: EvalRunArgs) -> Result<()> {
    use vicrop_eval::run::{RunRequest, Shard};
    let task: vicrop_eval::score::Task = args.task.parse()?;
    let format = args
        .format
        .as_deref()
        .map(str::parse::<vicrop_eval::data::Format>)
        .transpose()?;
    let shard = match &args.shard {
        Some(s) => s.parse::<Shard>()?,
        None => Shard::WHOLE,
    };
    let dtype = args.run.dtype()?;
    let request = RunRequest {
        model: args.model,
        hub: args.hub.options(),
        task,
        format,
        data: args.data,
        images: args.images,
        boxes: args.boxes,
        method: args.method,
        high_res: args.high_res,
        layer: args.layer,
        placement: args.placement.map(|p| match p {
            PlacementArg::WholeImage => vicrop_core::MapPlacement::WholeImage,
            PlacementArg::MapRegion => vicrop_core::MapPlacement::MapRegion,
        }),
        attention_ratio: args.attention_ratio,
        save_maps: args.save_maps,
        max_new_tokens: args.max_new_tokens,
        shard,
        limit: args.limit,
        retry_errors: args.retry_errors,
        out: args.out,
        dtype,
    };
    let summary = commands::run_on(args.run.device.kind(), &request)?;
    let json = serde_json::to_string(&summary)?;
    writeln!(std::io::stdout().lock(), "{json}").context("writing to stdout")?;
    Ok(())
}

fn eval_merge(args: EvalMergeArgs) -> Result<()> {
    let summary = vicrop_eval::run::merge(&args.dir, args.allow_partial)?;
    for line in summary.missing.iter().chain(&summary.warnings) {
        eprintln!("warning: {line}");
    }
    let json = serde_json::to_string(&summary)?;
    writeln!(std::io::stdout().lock(), "{json}").context("writing to stdout")?;
    Ok(())
}

fn method_of(m: MethodArg) -> Method {
    match m {
        MethodArg::RelAtt => Method::RelAtt,
        MethodArg::GradAtt => Method::GradAtt,
        MethodArg::PureGrad => Method::PureGrad,
    }
}

fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let bad = || anyhow::anyhow!("--shard `{s}` is not K/N with 0 <= K < N, e.g. 0/2");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (usize, usize) = (
        k.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || k >= n {
        return Err(bad());
    }
    Ok((k, n))
}

fn print_summary(results: &[vicrop_eval::scenes::ItemResult], json: bool) -> Result<()> {
    let rows = vicrop_eval::scenes::summarize(results);
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&rows)?).context("writing to stdout")?;
    } else {
        write!(out, "{}", vicrop_eval::scenes::summary_markdown(&rows))
            .context("writing to stdout")?;
    }
    Ok(())
}

fn scenes(args: ScenesArgs) -> Result<()> {
    if !args.report.is_empty() {
        let results = vicrop_eval::scenes::read_results(&args.report)?;
        if results.is_empty() {
            bail!("the result files hold no results");
        }
        return print_summary(&results, args.json);
    }
    let (Some(model), Some(set)) = (args.model, args.set) else {
        bail!("--model and --set are required (or --report FILES)");
    };
    let shard = args.shard.as_deref().map(parse_shard).transpose()?;
    let dtype = args.run.dtype()?;
    if args.methods.is_empty() {
        bail!("--methods is empty");
    }
    let methods: Vec<Method> = args.methods.iter().map(|&m| method_of(m)).collect();
    let mut runs: Vec<(Method, bool)> = methods.iter().map(|&m| (m, false)).collect();
    if !args.no_high_res {
        runs.extend(methods.iter().map(|&m| (m, true)));
    }
    let request = commands::ScenesRequest {
        model,
        hub: args.hub.options(),
        set,
        limit: args.limit,
        shard,
        plan: vicrop_eval::scenes::ScenePlan {
            runs,
            both_placements: !args.reference_placement_only,
        },
        results: args.results,
        dtype,
    };
    let results = commands::run_on(args.run.device.kind(), &request)?;
    print_summary(&results, args.json)
}

fn dtype_for(device: Device, dtype: Option<Dtype>) -> Result<burn::tensor::DType> {
    use burn::tensor::DType;
    Ok(match (device, dtype) {
        (Device::Cpu, None | Some(Dtype::F32)) => DType::F32,
        #[cfg(feature = "flex")]
        (Device::Cpu, Some(Dtype::Bf16)) => DType::BF16,
        #[cfg(feature = "flex")]
        (Device::Cpu, Some(Dtype::F16)) => DType::F16,
        #[cfg(not(feature = "flex"))]
        (Device::Cpu, Some(other)) => {
            bail!("--dtype {other:?} needs the burn-flex CPU backend (this build has burn-ndarray, f32 only)")
        }
        (Device::Cuda, None | Some(Dtype::Bf16)) => DType::BF16,
        (Device::Cuda, Some(Dtype::F16)) => DType::F16,
        (Device::Cuda, Some(Dtype::F32)) => DType::F32,
        (Device::Wgpu, None | Some(Dtype::F32)) => DType::F32,
        (Device::Wgpu, Some(Dtype::F16)) => DType::F16,
        (Device::Wgpu, Some(Dtype::Bf16)) => {
            bail!("--dtype bf16: wgpu has no bfloat16 (WGSL and Vulkan shaders lack it); use --dtype f16 or f32 with --device wgpu, or --device cuda for bf16")
        }
    })
}

fn answer(args: AnswerArgs) -> Result<()> {
    let dtype = args.common.run.dtype()?;
    let request = commands::AnswerRequest {
        model: args.common.model,
        hub: args.common.hub.options(),
        image: args.common.image,
        question: args.common.question,
        max_new_tokens: args.common.max_new_tokens,
        dtype,
    };
    let answer = commands::run_on(args.common.run.device.kind(), &request)?;
    let mut out = std::io::stdout().lock();
    if args.common.json {
        let json = serde_json::json!({
            "answer": answer.text,
            "answer_token_ids": answer.token_ids,
        });
        writeln!(out, "{json}").context("writing to stdout")?;
    } else {
        writeln!(out, "{}", answer.text).context("writing to stdout")?;
    }
    Ok(())
}

fn crop(args: CropArgs) -> Result<()> {
    let dtype = args.common.run.dtype()?;
    let request = commands::CropRequest {
        model: args.common.model,
        hub: args.common.hub.options(),
        image: args.common.image,
        question: args.common.question,
        short_question: args.short_question,
        method: method_of(args.method),
        high_res: args.high_res,
        layer: args.layer,
        qformer_layer: args.qformer_layer,
        side: args.side,
        placement: match args.placement {
            PlacementArg::WholeImage => vicrop_core::MapPlacement::WholeImage,
            PlacementArg::MapRegion => vicrop_core::MapPlacement::MapRegion,
        },
        max_new_tokens: args.common.max_new_tokens,
        dtype,
        save_crop: args.save_crop,
        save_heatmap: args.save_heatmap,
    };
    let (outcome, timing) = commands::run_on(args.common.run.device.kind(), &request)?;
    let mut out = std::io::stdout().lock();
    if args.common.json {
        writeln!(out, "{}", commands::outcome_json(&outcome, timing))
            .context("writing to stdout")?;
    } else {
        let b = outcome.bbox;
        writeln!(out, "answer:      {}", outcome.answer.text).context("writing to stdout")?;
        writeln!(out, "crop box:    [{}, {}, {}, {}]", b.x0, b.y0, b.x1, b.y1)?;
        writeln!(out, "crop answer: {}", outcome.crop_answer.text)?;
    }
    Ok(())
}

fn bbox(args: BoxArgs) -> Result<()> {
    let size = commands::parse_size(&args.image_size)?;
    let text = std::fs::read_to_string(&args.map)
        .with_context(|| format!("reading the map {}", args.map.display()))?;
    let b = commands::box_from_json(&text, size, args.side)
        .with_context(|| format!("in {}", args.map.display()))?;
    println!("{}", serde_json::json!({"bbox": b.to_array()}));
    Ok(())
}
