//! Scoring a run's rows: accuracies with failed rows counted wrong, size bins, and the mean
//! attention ratio per layer with its confidence interval.

use super::input::{RowIn, RunInput};
use super::{Attention, MetricSet, ReportError, Run, SizeBin, SizeCell};
use crate::score::metrics::YesNo;
use crate::score::{score_task, Prediction, ScoreError, Scores, Task};

/// A mean with its normal-approximation 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanCi {
    /// Values averaged.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// The sample standard deviation (divisor n - 1); `None` when n < 2.
    pub sd: Option<f64>,
    /// `mean - 1.96 * sd / sqrt(n)`; `None` when n < 2.
    pub low: Option<f64>,
    /// `mean + 1.96 * sd / sqrt(n)`; `None` when n < 2.
    pub high: Option<f64>,
}

/// The mean of `values` with its 95% confidence interval `mean +- 1.96 * sd / sqrt(n)`, `sd`
/// the sample standard deviation (divisor `n - 1`). `None` for no values; no `sd` and no
/// interval for one value.
///
/// ```
/// let ci = vicrop_eval::report::mean_ci95(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
/// assert_eq!(ci.mean, 5.0);
/// let half = 1.96 * (32.0f64 / 7.0).sqrt() / 8.0f64.sqrt();
/// assert!((ci.high.unwrap() - (5.0 + half)).abs() < 1e-12);
/// ```
pub fn mean_ci95(values: &[f64]) -> Option<MeanCi> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return Some(MeanCi {
            n,
            mean,
            sd: None,
            low: None,
            high: None,
        });
    }
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64;
    let sd = var.sqrt();
    let half = 1.96 * sd / (n as f64).sqrt();
    Some(MeanCi {
        n,
        mean,
        sd: Some(sd),
        low: Some(mean - half),
        high: Some(mean + half),
    })
}

/// The relative area of a row's answer region: the bounding box of all `boxes` (each
/// `[x0, y0, x1, y1]` in image pixels, corners in either order), clipped to the image, over
/// the image area `w * h`. `None` without boxes, or for an image size that is not positive
/// and finite, or a box with a non-finite coordinate.
///
/// ```
/// use vicrop_eval::report::relative_box_area;
/// // two 30x30 boxes 20 px apart: their bounding box is 80x80
/// let a = relative_box_area(&[[10.0, 10.0, 40.0, 40.0], [60.0, 60.0, 90.0, 90.0]], [1000.0, 800.0]);
/// assert_eq!(a, Some(6400.0 / 800_000.0));
/// ```
pub fn relative_box_area(boxes: &[[f64; 4]], image_size: [f64; 2]) -> Option<f64> {
    let [w, h] = image_size;
    if boxes.is_empty() || !(w.is_finite() && h.is_finite() && w > 0.0 && h > 0.0) {
        return None;
    }
    if boxes.iter().flatten().any(|v| !v.is_finite()) {
        return None;
    }
    let (mut x0, mut y0) = (f64::INFINITY, f64::INFINITY);
    let (mut x1, mut y1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for b in boxes {
        x0 = x0.min(b[0].min(b[2]));
        y0 = y0.min(b[1].min(b[3]));
        x1 = x1.max(b[0].max(b[2]));
        y1 = y1.max(b[1].max(b[3]));
    }
    let (x0, x1) = (x0.clamp(0.0, w), x1.clamp(0.0, w));
    let (y0, y1) = (y0.clamp(0.0, h), y1.clamp(0.0, h));
    Some((x1 - x0) * (y1 - y0) / (w * h))
}

/// Which answer of a row a score is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    NoCrop,
    Crop,
}

/// The text of a row's answer, or `None` when the row failed or lacks it.
fn answer_of(row: &RowIn, which: Answer) -> Option<&str> {
    if row.error.is_some() {
        return None;
    }
    match which {
        Answer::NoCrop => row.baseline.as_ref().map(|a| a.text.as_str()),
        Answer::Crop => row.crop.as_ref().map(|a| a.text.as_str()),
    }
}

fn prediction(row: &RowIn, text: &str) -> Prediction {
    Prediction {
        id: row.id.clone(),
        prediction: text.to_string(),
        labels: row.labels.clone(),
        options: row.options.clone(),
    }
}

/// Maps a scorer's error on `lines[index]` to the results file's line.
fn score_error(input: &RunInput, lines: &[usize], e: ScoreError) -> ReportError {
    match e {
        ScoreError::Item { index, id, message } => ReportError::Results {
            path: input.results.clone(),
            line: lines.get(index).copied().unwrap_or(0),
            message: format!("id `{id}`: {message}"),
        },
        other => ReportError::Results {
            path: input.results.clone(),
            line: lines.first().copied().unwrap_or(0),
            message: other.to_string(),
        },
    }
}

/// Every metric of the task on one answer of `rows`, a row without that answer (failed, or
/// missing) counted wrong: for POPE it is given the answer opposite to its label (so it also
/// enters F1, precision and recall as a miss); for the other tasks, whose metrics are all
/// means of per-item scores in [0, 1], it scores 0 (the mean over the answered rows times
/// answered / all).
fn score_rows(
    input: &RunInput,
    rows: &[&(usize, RowIn)],
    which: Answer,
) -> Result<Scores, ReportError> {
    let task = input.task;
    let n = rows.len();
    let mut preds = Vec::with_capacity(n);
    let mut lines = Vec::with_capacity(n);
    let mut missing = 0usize;
    for (line, row) in rows.iter().map(|r| (&r.0, &r.1)) {
        match answer_of(row, which) {
            Some(text) => {
                preds.push(prediction(row, text));
                lines.push(*line);
            }
            None if task == Task::Pope => {
                // The opposite of the label; a bad label is left for the scorer to report.
                let wrong = match row.labels.as_slice() {
                    [label] => match YesNo::parse_label(label) {
                        Some(YesNo::Yes) => "no".to_string(),
                        Some(YesNo::No) => "yes".to_string(),
                        None => String::new(),
                    },
                    _ => String::new(),
                };
                preds.push(prediction(row, &wrong));
                lines.push(*line);
            }
            None => missing += 1,
        }
    }
    if preds.is_empty() {
        return Ok(Scores {
            task,
            n,
            metrics: task.metrics().iter().map(|&m| (m, 0.0)).collect(),
        });
    }
    let scores = score_task(task, &preds).map_err(|e| score_error(input, &lines, e))?;
    let answered = preds.len() as f64;
    let scale = if missing == 0 {
        1.0
    } else {
        answered / (answered + missing as f64)
    };
    Ok(Scores {
        task,
        n,
        metrics: scores
            .metrics
            .into_iter()
            .map(|(m, v)| (m, v * scale))
            .collect(),
    })
}

/// Whether a row failed for the columns the run has.
fn row_failed(row: &RowIn, has_crop: bool) -> bool {
    answer_of(row, Answer::NoCrop).is_none() || (has_crop && answer_of(row, Answer::Crop).is_none())
}

/// The row label of a manifest: method, ` high-res`, ` map-region`, ` layer N`.
fn label_of(input: &RunInput) -> String {
    let m = &input.manifest;
    let mut label = m.method.trim().to_string();
    if m.high_res {
        label.push_str(" high-res");
    }
    if m.placement.as_deref() == Some("map-region") {
        label.push_str(" map-region");
    }
    if let Some(layer) = m.layer {
        label.push_str(&format!(" layer {layer}"));
    }
    label
}

/// Per-layer statistics of a set of attention arrays, all of length `layers`.
fn layer_stats(arrays: &[&[f64]], layers: usize) -> Option<Vec<super::MeanCi>> {
    if arrays.is_empty() {
        return None;
    }
    (0..layers)
        .map(|k| {
            let values: Vec<f64> = arrays.iter().map(|a| a[k]).collect();
            mean_ci95(&values)
        })
        .collect()
}

fn attention(input: &RunInput, metric_set: MetricSet) -> Result<Option<Attention>, ReportError> {
    let metric = metric_set.primary(input.task);
    let mut layers: Option<(usize, usize)> = None; // (length, line)
    let mut all: Vec<&[f64]> = Vec::new();
    let mut correct: Vec<&[f64]> = Vec::new();
    let mut incorrect: Vec<&[f64]> = Vec::new();
    for (line, row) in &input.rows {
        let Some(ratios) = row.attention_ratio.as_deref() else {
            continue;
        };
        if ratios.is_empty() {
            continue;
        }
        match layers {
            None => layers = Some((ratios.len(), *line)),
            Some((len, first)) if len != ratios.len() => {
                return Err(ReportError::Results {
                    path: input.results.clone(),
                    line: *line,
                    message: format!(
                        "`attention_ratio` has {} layers, line {first} has {len}",
                        ratios.len()
                    ),
                })
            }
            Some(_) => {}
        }
        let right = match answer_of(row, Answer::NoCrop) {
            None => false,
            Some(text) => {
                let s = score_task(input.task, &[prediction(row, text)])
                    .map_err(|e| score_error(input, &[*line], e))?;
                s.get(metric).unwrap_or(0.0) >= 50.0
            }
        };
        all.push(ratios);
        if right {
            correct.push(ratios);
        } else {
            incorrect.push(ratios);
        }
    }
    let Some((len, _)) = layers else {
        return Ok(None);
    };
    let Some(all_stats) = layer_stats(&all, len) else {
        return Ok(None);
    };
    Ok(Some(Attention {
        n: all.len(),
        all: all_stats,
        correct: layer_stats(&correct, len),
        incorrect: layer_stats(&incorrect, len),
    }))
}

/// Scores one run folder.
pub(crate) fn score_run(input: &RunInput, metric_set: MetricSet) -> Result<Run, ReportError> {
    let has_crop = input.manifest.method.trim() != "baseline";
    let rows: Vec<&(usize, RowIn)> = input.rows.iter().collect();
    let no_crop = score_rows(input, &rows, Answer::NoCrop)?;
    let crop = if has_crop {
        Some(score_rows(input, &rows, Answer::Crop)?)
    } else {
        None
    };
    let failed = rows.iter().filter(|r| row_failed(&r.1, has_crop)).count();

    let mut bins: [Vec<&(usize, RowIn)>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut without_box = 0usize;
    for r in &rows {
        let area = match (&r.1.boxes, r.1.image_size) {
            (Some(boxes), Some(size)) => relative_box_area(boxes, size),
            _ => None,
        };
        match area {
            Some(a) => bins[SizeBin::of_relative_area(a) as usize].push(*r),
            None => without_box += 1,
        }
    }
    let mut by_size = Vec::with_capacity(3);
    for (bin, members) in SizeBin::ALL.into_iter().zip(&bins) {
        let cell = if members.is_empty() {
            SizeCell {
                bin,
                n: 0,
                failed: 0,
                no_crop: None,
                crop: None,
            }
        } else {
            SizeCell {
                bin,
                n: members.len(),
                failed: members
                    .iter()
                    .filter(|r| row_failed(&r.1, has_crop))
                    .count(),
                no_crop: Some(score_rows(input, members, Answer::NoCrop)?),
                crop: if has_crop {
                    Some(score_rows(input, members, Answer::Crop)?)
                } else {
                    None
                },
            }
        };
        by_size.push(cell);
    }

    Ok(Run {
        dir: input.dir.clone(),
        model: input.manifest.model_name.trim().to_string(),
        method: input.manifest.method.trim().to_string(),
        label: label_of(input),
        high_res: input.manifest.high_res,
        task: input.task,
        n: rows.len(),
        failed,
        no_crop,
        crop,
        by_size,
        without_box,
        attention: attention(input, metric_set)?,
    })
}
