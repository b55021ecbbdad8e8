//! The generated sign-scene sets of `tools/demo_scenes.py` and their evaluation: how often the
//! plain answer, ViCrop with each method, and the oracle crop read the sign right, and whether
//! the map's peak and the crop box land on the sign.
//!
//! A set is a folder with `items.jsonl` (one [`SceneItem`] per line) and the images it names.
//! This is what `vicrop scenes` runs and what the demo checkpoint's accuracy table
//! (`docs/demo.md`) comes from.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use vicrop_core::pipeline::{Method, Question, ViCrop};
use vicrop_core::{
    load_image, AdaptiveWindow, AttentionSource, CropBox, CropSelector, GradientSource, LoadLimits,
    MapPlacement, Meter, SaliencyMap, TileGrid,
};

/// One item of a scene set (a line of `items.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SceneItem {
    /// Item number.
    pub id: u64,
    /// Image path, relative to the folder of `items.jsonl`.
    pub image: String,
    /// Image width in pixels.
    pub width: u32,
    /// Image height in pixels.
    pub height: u32,
    /// `"hard"` (the sign is too small to read at the model's input size) or `"easy"`.
    pub kind: String,
    /// `"number"` or `"word"`.
    pub content: String,
    /// The question.
    pub question: String,
    /// Accepted answers (the sign's text).
    pub answers: Vec<String>,
    /// The sign's box `[x0, y0, x1, y1)` in image pixels.
    pub bbox: [u32; 4],
}

/// A loaded scene set: its items and the folder their image paths are relative to.
#[derive(Debug, Clone)]
pub struct SceneSet {
    /// Folder of `items.jsonl`.
    pub root: PathBuf,
    /// The items, in file order.
    pub items: Vec<SceneItem>,
}

impl SceneSet {
    /// Reads `path` (an `items.jsonl` file, or a folder holding one). Errors name the line and
    /// what is wrong with it.
    pub fn load(path: &Path) -> Result<Self> {
        let file = if path.is_dir() {
            path.join("items.jsonl")
        } else {
            path.to_path_buf()
        };
        let root = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let f = std::fs::File::open(&file)
            .with_context(|| format!("opening the scene set {}", file.display()))?;
        let mut items = Vec::new();
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let at = || format!("{}:{}", file.display(), i + 1);
            let line = line.with_context(at)?;
            if line.trim().is_empty() {
                continue;
            }
            let item: SceneItem = serde_json::from_str(&line)
                .with_context(|| format!("{}: not a scene item", at()))?;
            let [x0, y0, x1, y1] = item.bbox;
            if x0 >= x1 || y0 >= y1 || x1 > item.width || y1 > item.height {
                bail!(
                    "{}: bbox {:?} is empty or outside the {}x{} image",
                    at(),
                    item.bbox,
                    item.width,
                    item.height
                );
            }
            if item.answers.iter().all(|a| normalize(a).is_empty()) {
                bail!("{}: no non-empty answer", at());
            }
            if item.question.trim().is_empty() {
                bail!("{}: the question is empty", at());
            }
            items.push(item);
        }
        if items.is_empty() {
            bail!("{} holds no items", file.display());
        }
        Ok(Self { root, items })
    }
}

/// Lower case, surrounding whitespace and punctuation dropped, inner whitespace collapsed.
pub fn normalize(s: &str) -> String {
    let s = s
        .trim()
        .trim_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace());
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Whether `prediction` matches one of `answers` after [`normalize`].
pub fn is_correct(prediction: &str, answers: &[String]) -> bool {
    let p = normalize(prediction);
    answers.iter().any(|a| normalize(a) == p)
}

/// The oracle crop: the square of side `side` centred on the target (grown to cover a larger
/// target), moved inside the image and clipped to it: the box ViCrop's selector would make
/// from a map that peaks on the target at its first window ratio.
pub fn oracle_box(target: [u32; 4], image: (u32, u32), side: u32) -> CropBox {
    let [x0, y0, x1, y1] = target;
    let axis = |a0: u32, a1: u32, len: u32| {
        let s = side.max(a1 - a0).min(len);
        let centre = (a0 + a1) / 2;
        let start = centre.saturating_sub(s / 2).min(len - s);
        (start, start + s)
    };
    let (bx0, bx1) = axis(x0, x1, image.0);
    let (by0, by1) = axis(y0, y1, image.1);
    CropBox {
        x0: bx0,
        y0: by0,
        x1: bx1,
        y1: by1,
    }
}

/// Whether `b` contains all of `target`.
pub fn covers(b: &CropBox, target: [u32; 4]) -> bool {
    b.x0 <= target[0] && b.y0 <= target[1] && b.x1 >= target[2] && b.y1 >= target[3]
}

/// Whether the map's highest cell, placed where it lies on the image (the map's region, the
/// centre crop for LLaVA), overlaps `target`. NaN cells never win.
pub fn peak_in_target(map: &SaliencyMap, image: (u32, u32), target: [u32; 4]) -> bool {
    let region = map
        .region()
        .unwrap_or_else(|| vicrop_core::Rect::whole(image.0, image.1));
    let Some((best, _)) = map
        .values()
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .max_by(|a, b| a.1.total_cmp(b.1))
    else {
        return false;
    };
    let (r, c) = (best / map.cols(), best % map.cols());
    let cw = region.width() / map.cols() as f64;
    let ch = region.height() / map.rows() as f64;
    let (cx0, cy0) = (region.x0 + c as f64 * cw, region.y0 + r as f64 * ch);
    let t = target.map(f64::from);
    cx0 < t[2] && cx0 + cw > t[0] && cy0 < t[3] && cy0 + ch > t[1]
}

/// A generated answer and whether it is right.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scored {
    /// The answer text.
    pub text: String,
    /// Whether it matches an accepted answer.
    pub correct: bool,
}

/// One ViCrop run on one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Map method.
    pub method: Method,
    /// High-resolution (tiled) map.
    pub high_res: bool,
    /// Cell placement of the crop selector.
    pub placement: MapPlacement,
    /// The crop box.
    pub bbox: [u32; 4],
    /// The answer with the image and the crop.
    pub answer: Scored,
    /// Whether the crop box contains the whole sign.
    pub covers_target: bool,
    /// Whether the map's peak cell overlaps the sign (`None` for tiled maps, whose cells lie
    /// on per-tile centre crops this check does not place).
    pub peak_in_target: Option<bool>,
}

/// Everything measured on one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    /// Item number.
    pub id: u64,
    /// `"hard"` or `"easy"`.
    pub kind: String,
    /// Accepted answers.
    pub answers: Vec<String>,
    /// Tiles in high-resolution mode (1: high-res changes nothing).
    pub tiles: usize,
    /// The plain answer (one image, no crop).
    pub plain: Scored,
    /// The oracle crop's box.
    pub oracle_bbox: [u32; 4],
    /// The answer with the image and the oracle crop.
    pub oracle: Scored,
    /// ViCrop runs.
    pub runs: Vec<RunResult>,
}

/// What to run on each item.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenePlan {
    /// `(method, high_res)` pairs.
    pub runs: Vec<(Method, bool)>,
    /// Also answer with the box of the geometrically correct placement
    /// ([`MapPlacement::MapRegion`]) when it differs from the reference's.
    pub both_placements: bool,
}

impl Default for ScenePlan {
    fn default() -> Self {
        let mut runs: Vec<(Method, bool)> = Method::ALL.iter().map(|&m| (m, false)).collect();
        runs.extend(Method::ALL.iter().map(|&m| (m, true)));
        Self {
            runs,
            both_placements: true,
        }
    }
}

/// Runs the plain answer, the oracle crop and every planned ViCrop run on one item. The
/// pipeline's own selector decides the first box of each run (the reference placement for
/// [`ViCrop::new`]).
pub fn evaluate_item<M: AttentionSource + GradientSource>(
    pipeline: &ViCrop<M>,
    set_root: &Path,
    item: &SceneItem,
    plan: &ScenePlan,
) -> Result<ItemResult> {
    let path = set_root.join(&item.image);
    let image = load_image(&path, &LoadLimits::default())?;
    if image.dimensions() != (item.width, item.height) {
        bail!(
            "item {}: {} is {}x{}, the item says {}x{}",
            item.id,
            path.display(),
            image.width(),
            image.height(),
            item.width,
            item.height
        );
    }
    let size = image.dimensions();
    let side = pipeline.model().geometry().input_side;
    let mut prepared = pipeline.prepare(&image)?;
    let mut meter = Meter::new(pipeline.model().depth().llm_layers);
    let score = |text: String| Scored {
        correct: is_correct(&text, &item.answers),
        text,
    };
    let oracle_bbox = oracle_box(item.bbox, size, side);
    let crop_of = |b: &CropBox| {
        image::imageops::crop_imm(&image, b.x0, b.y0, b.width(), b.height()).to_image()
    };
    let oracle = pipeline.model().answer_with_crop(
        prepared.state(),
        &crop_of(&oracle_bbox),
        &item.question,
        pipeline.max_new_tokens,
        &mut meter,
    )?;
    let region_selector = AdaptiveWindow::new(side).with_placement(MapPlacement::MapRegion);
    let tiles = TileGrid::for_image(size.0, size.1, pipeline.tile_threshold).len();
    let mut runs: Vec<RunResult> = Vec::new();
    // The plain answer is every run's baseline: taken from the first run, generated here
    // only when the plan has none.
    let mut plain: Option<String> = None;
    for &(method, high_res) in &plan.runs {
        // One tile is the whole image: the high-res run is the plain run, reuse it.
        if high_res && tiles == 1 {
            let same: Vec<RunResult> = runs
                .iter()
                .filter(|r| r.method == method && !r.high_res)
                .map(|r| RunResult {
                    high_res: true,
                    ..r.clone()
                })
                .collect();
            if !same.is_empty() {
                runs.extend(same);
                continue;
            }
        }
        let mut q = Question::new(item.question.clone(), method);
        q.high_res = high_res;
        let out = pipeline.run(&mut prepared, &q)?;
        plain.get_or_insert_with(|| out.answer.text.clone());
        let peak = out
            .tiles
            .is_none()
            .then(|| peak_in_target(&out.map, size, item.bbox));
        runs.push(RunResult {
            method,
            high_res,
            placement: MapPlacement::WholeImage,
            bbox: out.bbox.to_array(),
            answer: score(out.crop_answer.text.clone()),
            covers_target: covers(&out.bbox, item.bbox),
            peak_in_target: peak,
        });
        if plan.both_placements {
            let b = region_selector.select(&out.map, size);
            let answer = if b == out.bbox {
                out.crop_answer.text.clone()
            } else {
                pipeline
                    .model()
                    .answer_with_crop(
                        prepared.state(),
                        &crop_of(&b),
                        &item.question,
                        pipeline.max_new_tokens,
                        &mut meter,
                    )?
                    .text
            };
            runs.push(RunResult {
                method,
                high_res,
                placement: MapPlacement::MapRegion,
                bbox: b.to_array(),
                answer: score(answer),
                covers_target: covers(&b, item.bbox),
                peak_in_target: peak,
            });
        }
    }
    let plain = match plain {
        Some(text) => text,
        None => {
            let (answer, _) = pipeline.model().answer(
                prepared.state(),
                &item.question,
                pipeline.max_new_tokens,
                None,
                &mut meter,
            )?;
            answer.text
        }
    };
    Ok(ItemResult {
        id: item.id,
        kind: item.kind.clone(),
        answers: item.answers.clone(),
        tiles,
        plain: score(plain),
        oracle_bbox: oracle_bbox.to_array(),
        oracle: score(oracle.text),
        runs,
    })
}

/// Accuracy and hit rates of one row of the summary table, over a group of items.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rate {
    /// Items counted.
    pub n: usize,
    /// Correct answers.
    pub correct: usize,
    /// Crop boxes that contain the sign (ViCrop rows only).
    pub covers: usize,
    /// Map peaks on the sign, and how many maps were checked.
    pub peak: (usize, usize),
}

impl Rate {
    fn pct(k: usize, n: usize) -> String {
        if n == 0 {
            "-".into()
        } else {
            format!("{:.1}", 100.0 * k as f64 / n as f64)
        }
    }
}

/// One row of the summary: a label and its rates over all, hard and easy items.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryRow {
    /// What was run.
    pub label: String,
    /// All items.
    pub all: Rate,
    /// Hard items.
    pub hard: Rate,
    /// Easy items.
    pub easy: Rate,
}

/// The summary table of a scene evaluation.
pub fn summarize(results: &[ItemResult]) -> Vec<SummaryRow> {
    let mut rows: Vec<SummaryRow> = Vec::new();
    let mut add =
        |label: String, kind: &str, correct: bool, covers: Option<bool>, peak: Option<bool>| {
            let row = match rows.iter_mut().find(|r| r.label == label) {
                Some(r) => r,
                None => {
                    rows.push(SummaryRow {
                        label,
                        all: Rate::default(),
                        hard: Rate::default(),
                        easy: Rate::default(),
                    });
                    rows.last_mut().expect("just pushed")
                }
            };
            for (rate, on) in [
                (&mut row.all, true),
                (&mut row.hard, kind == "hard"),
                (&mut row.easy, kind == "easy"),
            ] {
                if !on {
                    continue;
                }
                rate.n += 1;
                rate.correct += usize::from(correct);
                rate.covers += usize::from(covers.unwrap_or(false));
                if let Some(p) = peak {
                    rate.peak.0 += usize::from(p);
                    rate.peak.1 += 1;
                }
            }
        };
    for r in results {
        add(
            "plain answer (no crop)".into(),
            &r.kind,
            r.plain.correct,
            None,
            None,
        );
    }
    for r in results {
        for run in &r.runs {
            let place = match run.placement {
                MapPlacement::WholeImage => "",
                MapPlacement::MapRegion => ", map-region placement",
            };
            let hr = if run.high_res { " high-res" } else { "" };
            add(
                format!("ViCrop {}{hr}{place}", run.method.name()),
                &r.kind,
                run.answer.correct,
                Some(run.covers_target),
                run.peak_in_target,
            );
        }
    }
    for r in results {
        add(
            "oracle crop (the sign's box)".into(),
            &r.kind,
            r.oracle.correct,
            Some(true),
            None,
        );
    }
    rows
}

/// The summary as a markdown table: accuracy (%) over all, hard and easy items, the share of
/// crops that contain the sign and of map peaks on the sign (both over all items).
pub fn summary_markdown(rows: &[SummaryRow]) -> String {
    let mut s = String::new();
    let n = |r: &Rate| r.n;
    if let Some(first) = rows.first() {
        s.push_str(&format!(
            "| run | accuracy, all {} | hard {} | easy {} | crop contains the sign | map peak on the sign |\n",
            n(&first.all),
            n(&first.hard),
            n(&first.easy)
        ));
        s.push_str("|---|---|---|---|---|---|\n");
    }
    for r in rows {
        let is_vicrop = r.label.starts_with("ViCrop");
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.label,
            Rate::pct(r.all.correct, r.all.n),
            Rate::pct(r.hard.correct, r.hard.n),
            Rate::pct(r.easy.correct, r.easy.n),
            if is_vicrop {
                Rate::pct(r.all.covers, r.all.n)
            } else {
                "-".into()
            },
            Rate::pct(r.all.peak.0, r.all.peak.1),
        ));
    }
    s
}

/// Evaluates `set` (its first `limit` items; of those, the ones whose index is `k` modulo `n`
/// for `shard = (k, n)`) item by item with a progress bar; each result is written to
/// `results` (one JSON line, flushed) as soon as it is known.
pub fn evaluate_set<M: AttentionSource + GradientSource>(
    pipeline: &ViCrop<M>,
    set: &SceneSet,
    plan: &ScenePlan,
    limit: Option<usize>,
    shard: Option<(usize, usize)>,
    mut results: Option<&mut dyn Write>,
) -> Result<Vec<ItemResult>> {
    let items: Vec<&SceneItem> = set.items[..limit.unwrap_or(usize::MAX).min(set.items.len())]
        .iter()
        .enumerate()
        .filter(|(i, _)| shard.is_none_or(|(k, n)| i % n == k))
        .map(|(_, item)| item)
        .collect();
    let bar = indicatif::ProgressBar::new(items.len() as u64);
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} items  {per_sec}  eta {eta}  {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut out = Vec::with_capacity(items.len());
    let (mut plain, mut first) = (0, 0);
    for item in items {
        let r = evaluate_item(pipeline, &set.root, item, plan)
            .with_context(|| format!("scene item {}", item.id))?;
        if let Some(w) = results.as_deref_mut() {
            writeln!(w, "{}", serde_json::to_string(&r)?)?;
            w.flush()?;
        }
        plain += usize::from(r.plain.correct);
        first += usize::from(r.runs.first().is_some_and(|x| x.answer.correct));
        out.push(r);
        bar.set_message(format!("plain {plain}, first ViCrop run {first} correct"));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// Reads result lines written by [`evaluate_set`] (several files: shards), in order.
pub fn read_results(paths: &[PathBuf]) -> Result<Vec<ItemResult>> {
    let mut out = Vec::new();
    for p in paths {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            out.push(
                serde_json::from_str(line)
                    .with_context(|| format!("{}:{}: not a scene result", p.display(), i + 1))?,
            );
        }
    }
    out.sort_by_key(|r: &ItemResult| r.id);
    Ok(out)
}
