//! Benchmarks (tasks), their metrics, and scoring a list of predictions with them.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use super::metrics::{self, PopeCounts, YesNo};
use super::{Prediction, ScoreError};

/// A benchmark whose predictions can be scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    /// TextVQA (10 human answers): [`Metric::VqaOfficial`] with the EvalAI processor (TextVQA's
    /// evaluator) and [`Metric::VqaReference`].
    TextVqa,
    /// VQAv2 (10 human answers): [`Metric::VqaOfficial`] as `vqaEval.py` and
    /// [`Metric::VqaReference`].
    VqaV2,
    /// GQA (one answer): [`Metric::GqaContains`], the reference's metric (GQA's own exact-match
    /// accuracy is not what the paper reports, and the reference has none).
    Gqa,
    /// A-OKVQA direct answers (10): [`Metric::VqaOfficial`] as A-OKVQA's `eval_predictions.py`
    /// and [`Metric::VqaReference`].
    AOkVqa,
    /// DocVQA: [`Metric::DocvqaSubstring`] (the reference's) and [`Metric::Anls`] (the
    /// benchmark's own).
    DocVqa,
    /// POPE (label `yes` or `no`): accuracy, F1, precision, recall and yes ratio, the
    /// prediction read as yes/no the reference's way.
    Pope,
    /// V* Bench (options, label the correct option's letter): [`Metric::VstarOption`].
    Vstar,
}

impl Task {
    /// Every task, in the order the docs list them.
    pub const ALL: [Task; 7] = [
        Task::TextVqa,
        Task::VqaV2,
        Task::Gqa,
        Task::AOkVqa,
        Task::DocVqa,
        Task::Pope,
        Task::Vstar,
    ];

    /// The task's name on the command line: `textvqa`, `vqav2`, `gqa`, `aokvqa`, `docvqa`,
    /// `pope`, `vstar`.
    pub fn name(self) -> &'static str {
        match self {
            Task::TextVqa => "textvqa",
            Task::VqaV2 => "vqav2",
            Task::Gqa => "gqa",
            Task::AOkVqa => "aokvqa",
            Task::DocVqa => "docvqa",
            Task::Pope => "pope",
            Task::Vstar => "vstar",
        }
    }

    /// The metrics [`score_task`] reports for this task, in order.
    pub fn metrics(self) -> &'static [Metric] {
        match self {
            Task::TextVqa | Task::VqaV2 | Task::AOkVqa => {
                &[Metric::VqaOfficial, Metric::VqaReference]
            }
            Task::Gqa => &[Metric::GqaContains],
            Task::DocVqa => &[Metric::DocvqaSubstring, Metric::Anls],
            Task::Pope => &[
                Metric::PopeAccuracy,
                Metric::PopeF1,
                Metric::PopePrecision,
                Metric::PopeRecall,
                Metric::PopeYesRatio,
            ],
            Task::Vstar => &[Metric::VstarOption],
        }
    }

    /// The valid names, comma-separated (for messages).
    pub fn names() -> String {
        Task::ALL.map(Task::name).join(", ")
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Task {
    type Err = ScoreError;

    /// Parses a task name (ASCII case ignored); the error lists the valid names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        Task::ALL
            .into_iter()
            .find(|task| task.name().eq_ignore_ascii_case(t))
            .ok_or_else(|| ScoreError::UnknownTask {
                name: s.to_string(),
            })
    }
}

/// A metric, reported in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// The benchmark's own VQA accuracy: [`metrics::textvqa_accuracy`] for TextVQA,
    /// [`metrics::vqav2_accuracy`] for VQAv2, [`metrics::aokvqa_direct_answer_accuracy`] for
    /// A-OKVQA.
    VqaOfficial,
    /// The reference's `min(1, 0.3 * matches)`: [`metrics::vqa_reference_accuracy`].
    VqaReference,
    /// A label contained in the prediction: [`metrics::gqa_contains`].
    GqaContains,
    /// Raw substring either way: [`metrics::docvqa_substring`].
    DocvqaSubstring,
    /// Average normalised Levenshtein similarity, threshold 0.5: [`metrics::anls`] (x100).
    Anls,
    /// POPE accuracy, yes/no by [`metrics::pope_decision`].
    PopeAccuracy,
    /// POPE F1, `yes` positive ([`PopeCounts::f1`]).
    PopeF1,
    /// POPE precision ([`PopeCounts::precision`]).
    PopePrecision,
    /// POPE recall ([`PopeCounts::recall`]).
    PopeRecall,
    /// The share of yes answers ([`PopeCounts::yes_ratio`]).
    PopeYesRatio,
    /// V*: the option closest to the prediction is the labelled one
    /// ([`metrics::vstar_choice`]).
    VstarOption,
}

impl Metric {
    /// The metric's key in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Metric::VqaOfficial => "vqa_official",
            Metric::VqaReference => "vqa_reference",
            Metric::GqaContains => "gqa_contains",
            Metric::DocvqaSubstring => "docvqa_substring",
            Metric::Anls => "anls",
            Metric::PopeAccuracy => "pope_accuracy",
            Metric::PopeF1 => "pope_f1",
            Metric::PopePrecision => "pope_precision",
            Metric::PopeRecall => "pope_recall",
            Metric::PopeYesRatio => "pope_yes_ratio",
            Metric::VstarOption => "vstar_option",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The scores of a task over a set of predictions.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// The task scored.
    pub task: Task,
    /// Questions scored.
    pub n: usize,
    /// Every metric of the task ([`Task::metrics`], same order), in percent.
    pub metrics: Vec<(Metric, f64)>,
}

impl Scores {
    /// The value of one metric, if the task has it.
    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|&(_, v)| v)
    }

    /// `{"n": int, "metrics": {"<name>": float}}` as a JSON value (keys sorted). Serializing
    /// [`Scores`] itself gives the same object with `n` first and the metrics in
    /// [`Task::metrics`] order: what `vicrop eval score` prints.
    pub fn to_json(&self) -> serde_json::Value {
        let metrics: serde_json::Map<String, serde_json::Value> = self
            .metrics
            .iter()
            .map(|(m, v)| (m.name().to_string(), serde_json::Value::from(*v)))
            .collect();
        serde_json::json!({ "n": self.n, "metrics": metrics })
    }
}

struct MetricMap<'a>(&'a [(Metric, f64)]);

impl serde::Serialize for MetricMap<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (m, v) in self.0 {
            map.serialize_entry(m.name(), v)?;
        }
        map.end()
    }
}

impl serde::Serialize for Scores {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = serializer.serialize_struct("Scores", 2)?;
        st.serialize_field("n", &self.n)?;
        st.serialize_field("metrics", &MetricMap(&self.metrics))?;
        st.end()
    }
}

fn item_error(index: usize, p: &Prediction, message: impl Into<String>) -> ScoreError {
    ScoreError::Item {
        index,
        id: p.id.clone(),
        message: message.into(),
    }
}

/// Checks what every task needs: at least one prediction, unique ids, non-empty labels.
fn check_common(predictions: &[Prediction]) -> Result<(), ScoreError> {
    if predictions.is_empty() {
        return Err(ScoreError::Empty { path: None });
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, p) in predictions.iter().enumerate() {
        if let Some(&first) = seen.get(p.id.as_str()) {
            return Err(ScoreError::DuplicateId {
                path: None,
                id: p.id.clone(),
                first: first + 1,
                second: i + 1,
            });
        }
        seen.insert(&p.id, i);
        if p.labels.is_empty() {
            return Err(item_error(i, p, "`labels` is empty"));
        }
    }
    Ok(())
}

fn percent_mean(sum: f64, n: usize) -> f64 {
    100.0 * sum / n as f64
}

fn pope_label(i: usize, p: &Prediction) -> Result<YesNo, ScoreError> {
    let [label] = p.labels.as_slice() else {
        return Err(item_error(
            i,
            p,
            format!(
                "POPE needs exactly one label (\"yes\" or \"no\"), found {}",
                p.labels.len()
            ),
        ));
    };
    YesNo::parse_label(label)
        .ok_or_else(|| item_error(i, p, format!("POPE label {label:?} is neither yes nor no")))
}

/// The candidate lines and the labelled option's index of a V* item.
fn vstar_item(i: usize, p: &Prediction) -> Result<(Vec<String>, usize), ScoreError> {
    let options = match &p.options {
        Some(o) if !o.is_empty() => o,
        Some(_) => {
            return Err(item_error(
                i,
                p,
                "V* needs `options`, and the list is empty",
            ))
        }
        None => {
            return Err(item_error(
                i,
                p,
                "V* needs `options` (the answer choices, first to last)",
            ))
        }
    };
    let candidates: Vec<String> = options
        .iter()
        .enumerate()
        .map(|(k, o)| metrics::vstar_candidate(k, o))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            item_error(
                i,
                p,
                format!("V* takes at most 26 options, found {}", options.len()),
            )
        })?;
    let [label] = p.labels.as_slice() else {
        return Err(item_error(
            i,
            p,
            format!(
                "V* needs exactly one label (the correct option's letter), found {}",
                p.labels.len()
            ),
        ));
    };
    let t = label.trim();
    let mut chars = t.chars();
    let index = match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_alphabetic() => {
            Some(usize::from(c.to_ascii_uppercase() as u8 - b'A'))
        }
        _ => options
            .iter()
            .zip(&candidates)
            .position(|(o, c)| o == label || c == label),
    };
    match index {
        Some(k) if k < options.len() => Ok((candidates, k)),
        _ => Err(item_error(
            i,
            p,
            format!(
                "V* label {label:?} is neither an option letter (A to {}) nor one of the options",
                char::from(b'A' + (options.len() - 1) as u8)
            ),
        )),
    }
}

/// Scores predictions with every metric of `task` ([`Task::metrics`]), in percent.
///
/// Errors (nothing is scored then): no predictions, a repeated id, an empty label list; for
/// POPE a label other than `yes`/`no` or not exactly one label; for V* missing options or a
/// label that is not one of the options' letters (or texts). Errors name the item (1-based)
/// and its id.
pub fn score_task(task: Task, predictions: &[Prediction]) -> Result<Scores, ScoreError> {
    check_common(predictions)?;
    let n = predictions.len();
    let metrics = match task {
        Task::TextVqa | Task::VqaV2 | Task::AOkVqa => {
            let official: fn(&str, &[String]) -> f64 = match task {
                Task::TextVqa => metrics::textvqa_accuracy,
                Task::VqaV2 => metrics::vqav2_accuracy,
                _ => metrics::aokvqa_direct_answer_accuracy,
            };
            let (mut off, mut reference) = (0.0, 0.0);
            for p in predictions {
                off += official(&p.prediction, &p.labels);
                reference += metrics::vqa_reference_accuracy(&p.prediction, &p.labels);
            }
            vec![
                (Metric::VqaOfficial, percent_mean(off, n)),
                (Metric::VqaReference, percent_mean(reference, n)),
            ]
        }
        Task::Gqa => {
            let sum: f64 = predictions
                .iter()
                .map(|p| metrics::gqa_contains(&p.prediction, &p.labels))
                .sum();
            vec![(Metric::GqaContains, percent_mean(sum, n))]
        }
        Task::DocVqa => {
            let (mut sub, mut anls) = (0.0, 0.0);
            for p in predictions {
                sub += metrics::docvqa_substring(&p.prediction, &p.labels);
                anls += metrics::anls(&p.prediction, &p.labels);
            }
            vec![
                (Metric::DocvqaSubstring, percent_mean(sub, n)),
                (Metric::Anls, percent_mean(anls, n)),
            ]
        }
        Task::Pope => {
            let mut counts = PopeCounts::default();
            for (i, p) in predictions.iter().enumerate() {
                let label = pope_label(i, p)?;
                counts.add(metrics::pope_decision(&p.prediction), label);
            }
            vec![
                (Metric::PopeAccuracy, 100.0 * counts.accuracy()),
                (Metric::PopeF1, 100.0 * counts.f1()),
                (Metric::PopePrecision, 100.0 * counts.precision()),
                (Metric::PopeRecall, 100.0 * counts.recall()),
                (Metric::PopeYesRatio, 100.0 * counts.yes_ratio()),
            ]
        }
        Task::Vstar => {
            let mut correct = 0usize;
            for (i, p) in predictions.iter().enumerate() {
                let (candidates, label) = vstar_item(i, p)?;
                if metrics::vstar_choice(&p.prediction, &candidates) == Some(label) {
                    correct += 1;
                }
            }
            vec![(Metric::VstarOption, percent_mean(correct as f64, n))]
        }
    };
    Ok(Scores { task, n, metrics })
}
