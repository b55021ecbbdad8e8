//! Per-question metrics, each following one official evaluation script.
//!
//! Every function returns the score of one question as a fraction in `[0, 1]`;
//! [`crate::score::score_task`] averages them and reports percent. Which upstream code each one
//! follows (and at which commit) is stated on the function; `docs/evaluation.md` has the
//! overview. Label lists are never empty here in practice (the predictions reader and
//! `score_task` refuse them); with an empty list every function returns 0.

use std::collections::HashSet;

use super::difflib;
use super::normalize::{
    evalai_normalize, py_strip, reference_normalize, vqa_clean_whitespace, vqa_normalize,
};

/// The leave-one-out VQA accuracy over already processed answers: for each human answer left
/// out in turn, `min(1, #other answers equal to the prediction / 3)`, averaged over the
/// answers (10 subsets of 9 for VQA's 10 answers; with one answer nothing is left to match and
/// the score is 0).
fn leave_one_out(prediction: &str, answers: &[String]) -> f64 {
    if answers.is_empty() {
        return 0.0;
    }
    let equal: Vec<bool> = answers.iter().map(|a| a == prediction).collect();
    let total = equal.iter().filter(|&&e| e).count();
    let mut sum = 0.0;
    for &left_out in &equal {
        let matches = total - usize::from(left_out);
        sum += f64::min(1.0, matches as f64 / 3.0);
    }
    sum / answers.len() as f64
}

/// VQAv2's official accuracy, as `VQAEval.evaluate` in GT-Vision-Lab/VQA
/// (`PythonEvaluationTools/vqaEvaluation/vqaEval.py`, commit a013f00) computes it for one
/// question: newlines and tabs to spaces and strip, on the prediction and every human answer;
/// **only when the human answers are not all equal** both sides are normalised
/// ([`vqa_normalize`]); then the leave-one-out average of `min(1, matches / 3)` (each answer
/// left out once, as the distinct `answer_id`s of the VQAv2 annotations make the upstream
/// comparison do). When all answers agree the prediction must equal them after stripping
/// only: `Two` does not match ten `2`s.
pub fn vqav2_accuracy<S: AsRef<str>>(prediction: &str, labels: &[S]) -> f64 {
    let mut answers: Vec<String> = labels
        .iter()
        .map(|l| vqa_clean_whitespace(l.as_ref()))
        .collect();
    let mut pred = vqa_clean_whitespace(prediction);
    let distinct: HashSet<&String> = answers.iter().collect();
    if distinct.len() > 1 {
        answers = answers.iter().map(|a| vqa_normalize(a)).collect();
        pred = vqa_normalize(&pred);
    }
    leave_one_out(&pred, &answers)
}

/// TextVQA's official accuracy, as `TextVQAAccuracyEvaluator` in facebookresearch/mmf
/// (`mmf/utils/m4c_evaluators.py`, commit b0ffc7f) computes it: prediction and answers through
/// the EvalAI processor ([`evalai_normalize`]), always; then the leave-one-out average of
/// `min(1, matches / 3)`. Upstream asserts exactly 10 answers; here any number is accepted and
/// each answer is left out once (the upstream loop with its assert removed).
pub fn textvqa_accuracy<S: AsRef<str>>(prediction: &str, labels: &[S]) -> f64 {
    let answers: Vec<String> = labels
        .iter()
        .map(|l| evalai_normalize(l.as_ref()))
        .collect();
    leave_one_out(&evalai_normalize(prediction), &answers)
}

/// A-OKVQA's official direct-answer accuracy, as `eval_aokvqa(..., multiple_choice=False)` in
/// allenai/aokvqa (`evaluation/eval_predictions.py`, commit 83786de): `min(1, #answers equal to
/// the prediction / 3)` on the raw strings (no normalisation, no stripping, no leave-one-out).
/// Upstream also leaves out the questions marked `difficult_direct_answer`; that is the
/// dataset's choice, not the scorer's.
pub fn aokvqa_direct_answer_accuracy<S: AsRef<str>>(prediction: &str, labels: &[S]) -> f64 {
    let matches = labels.iter().filter(|l| l.as_ref() == prediction).count();
    f64::min(1.0, matches as f64 / 3.0)
}

/// The ViCrop reference's VQA score (`get_acc` in saccharomycetes/mllms_know `get_score.py`,
/// commit a64c5d5): both sides through [`reference_normalize`], always; then
/// `min(1, 0.3 * #answers equal to the prediction)`, no leave-one-out. With 10 answers and no
/// normalisation differences this equals the official leave-one-out average (0.3, 0.6,
/// 0.8999999999999999 for 1, 2, 3 matches; 1 from 4 on).
pub fn vqa_reference_accuracy<S: AsRef<str>>(prediction: &str, labels: &[S]) -> f64 {
    let pred = reference_normalize(prediction);
    let matches = labels
        .iter()
        .filter(|l| reference_normalize(l.as_ref()) == pred)
        .count();
    f64::min(0.3 * matches as f64, 1.0)
}

/// The number of labels contained in the prediction after [`reference_normalize`] on both
/// sides: the reference's `get_acc_gqa` (saccharomycetes/mllms_know `get_score.py`) is
/// `100 * this count`, which exceeds 100 when several labels are contained. A label that
/// normalises to the empty string (`the`, `a`) is contained in every prediction.
pub fn gqa_contains_matches<S: AsRef<str>>(prediction: &str, labels: &[S]) -> usize {
    let pred = reference_normalize(prediction);
    labels
        .iter()
        .filter(|l| pred.contains(reference_normalize(l.as_ref()).as_str()))
        .count()
}

/// GQA as the reference scores it, capped at one: 1 when at least one normalised label is a
/// substring of the normalised prediction ([`gqa_contains_matches`] > 0), else 0. Equal to the
/// reference for GQA's one answer per question; the reference's uncapped count is not used
/// for several labels (it would give accuracies above 100%).
pub fn gqa_contains<S: AsRef<str>>(prediction: &str, labels: &[S]) -> f64 {
    if gqa_contains_matches(prediction, labels) > 0 {
        1.0
    } else {
        0.0
    }
}

/// DocVQA as the reference scores it (`evaluate_docvqa` in saccharomycetes/mllms_know
/// `get_score.py`): 1 when the raw prediction is a substring of a raw label or a label is a
/// substring of the prediction, else 0. Case-sensitive, no normalisation; an empty prediction
/// is a substring of everything and scores 1.
pub fn docvqa_substring<S: AsRef<str>>(prediction: &str, labels: &[S]) -> f64 {
    let hit = labels.iter().any(|l| {
        let l = l.as_ref();
        l.contains(prediction) || prediction.contains(l)
    });
    if hit {
        1.0
    } else {
        0.0
    }
}

/// Levenshtein distance (unit costs) over Unicode scalar values.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The normalised Levenshtein similarity of one prediction and one answer, as
/// `STVQAANLSEvaluator.get_anls` in facebookresearch/mmf (`mmf/utils/m4c_evaluators.py`,
/// commit b0ffc7f) computes it: both lower-cased then stripped,
/// `s = 1 - distance / max(len)` (lengths in characters), kept when `s >= 0.5`, else 0.
/// Two empty strings (a division by zero upstream) score 1, as the DocVQA/RRC script's
/// `0.0 if length == 0` distance gives.
pub fn anls_pair(prediction: &str, answer: &str) -> f64 {
    let p = prediction.to_lowercase();
    let a = answer.to_lowercase();
    let (p, a) = (py_strip(&p), py_strip(a.as_str()));
    let len = p.chars().count().max(a.chars().count());
    if len == 0 {
        return 1.0;
    }
    let s = 1.0 - levenshtein(p, a) as f64 / len as f64;
    if s >= 0.5 {
        s
    } else {
        0.0
    }
}

/// ANLS of one question (threshold 0.5): the best [`anls_pair`] over the answers, as mmf's
/// `STVQAANLSEvaluator.eval_pred_list` and the ST-VQA/DocVQA definition take it.
pub fn anls<S: AsRef<str>>(prediction: &str, labels: &[S]) -> f64 {
    labels
        .iter()
        .map(|l| anls_pair(prediction, l.as_ref()))
        .fold(0.0, f64::max)
}

/// A yes/no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum YesNo {
    /// `yes` (POPE's positive class).
    Yes,
    /// `no`.
    No,
}

impl YesNo {
    /// `"yes"` or `"no"`.
    pub fn as_str(self) -> &'static str {
        match self {
            YesNo::Yes => "yes",
            YesNo::No => "no",
        }
    }

    /// Parses a POPE label: `yes` or `no`, ignoring case and surrounding whitespace.
    pub fn parse_label(label: &str) -> Option<YesNo> {
        let l = label.trim();
        if l.eq_ignore_ascii_case("yes") {
            Some(YesNo::Yes)
        } else if l.eq_ignore_ascii_case("no") {
            Some(YesNo::No)
        } else {
            None
        }
    }
}

/// POPE's yes/no as the reference decides it (`match_mcq(answer, ['yes', 'no'])` in
/// saccharomycetes/mllms_know `get_score.py`): the candidate with the higher
/// [`difflib::ratio`] against the raw prediction (case-sensitive), `yes` on ties. So `No` is
/// `no`, but `NO`, `N` and the empty answer (no character in common with either) are `yes`.
pub fn pope_decision(prediction: &str) -> YesNo {
    match difflib::closest(prediction, &["yes", "no"]) {
        Some(1) => YesNo::No,
        _ => YesNo::Yes,
    }
}

/// POPE's confusion counts, `yes` positive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PopeCounts {
    /// Predicted yes, label yes.
    pub tp: usize,
    /// Predicted yes, label no.
    pub fp: usize,
    /// Predicted no, label no.
    pub tn: usize,
    /// Predicted no, label yes.
    pub fn_: usize,
}

impl PopeCounts {
    /// Adds one question.
    pub fn add(&mut self, predicted: YesNo, label: YesNo) {
        match (predicted, label) {
            (YesNo::Yes, YesNo::Yes) => self.tp += 1,
            (YesNo::Yes, YesNo::No) => self.fp += 1,
            (YesNo::No, YesNo::No) => self.tn += 1,
            (YesNo::No, YesNo::Yes) => self.fn_ += 1,
        }
    }

    /// Questions counted.
    pub fn total(&self) -> usize {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// `(TP + TN) / total` (0 when empty); the reference's POPE accuracy is the same fraction.
    pub fn accuracy(&self) -> f64 {
        ratio_or_zero(self.tp + self.tn, self.total())
    }

    /// `TP / (TP + FP)`; 0 when nothing was predicted yes (a division by zero in POPE's
    /// script).
    pub fn precision(&self) -> f64 {
        ratio_or_zero(self.tp, self.tp + self.fp)
    }

    /// `TP / (TP + FN)`; 0 when no label is yes (a division by zero in POPE's script).
    pub fn recall(&self) -> f64 {
        ratio_or_zero(self.tp, self.tp + self.fn_)
    }

    /// `2 * precision * recall / (precision + recall)` as POPE's `evaluate.py`
    /// (RUCAIBox/POPE, commit 3df3ba1) computes it; 0 when both are 0.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    /// The share of yes predictions, `(TP + FP) / total` (POPE's `yes_ratio`).
    pub fn yes_ratio(&self) -> f64 {
        ratio_or_zero(self.tp + self.fp, self.total())
    }
}

fn ratio_or_zero(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// The option line the reference compares a V* prediction with: `(A) rubber` for the first
/// option `rubber` (V* Bench's questions list the options as `(A) ...` lines; the reference
/// takes `question.split('\n')[1:-1]`). An option already written as its line (starting with
/// `(A)` for the first, `(B)` for the second, ...) is kept as is. `None` past 26 options.
pub fn vstar_candidate(index: usize, option: &str) -> Option<String> {
    let letter = char::from(b'A' + u8::try_from(index).ok().filter(|&i| i < 26)?);
    let prefix = format!("({letter})");
    Some(if option.starts_with(&prefix) {
        option.to_string()
    } else {
        format!("{prefix} {option}")
    })
}

/// The option V*'s prediction picks as the reference decides it (`get_index` in
/// saccharomycetes/mllms_know `get_score.py`): the index of the candidate line with the highest
/// [`difflib::ratio`] against the raw prediction, the first on ties. `None` when there are no
/// candidates.
pub fn vstar_choice<S: AsRef<str>>(prediction: &str, candidates: &[S]) -> Option<usize> {
    difflib::closest(prediction, candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leave_one_out_matches_the_closed_form_for_ten_answers() {
        for m in 0..=10usize {
            let mut answers = vec!["x".to_string(); m];
            answers.resize(10, "y".to_string());
            let official = leave_one_out("x", &answers);
            let reference = f64::min(0.3 * m as f64, 1.0);
            assert!(
                (official - reference).abs() < 1e-12,
                "{m}: {official} {reference}"
            );
        }
        assert_eq!(leave_one_out("x", &["x".to_string()]), 0.0);
    }

    #[test]
    fn anls_examples() {
        assert_eq!(anls_pair("", ""), 1.0);
        assert_eq!(anls_pair("abcd", "abce"), 0.75);
        assert_eq!(anls_pair("ab", "xy"), 0.0);
        assert_eq!(anls_pair("ab", "ax"), 0.5);
    }

    #[test]
    fn pope_degenerate_counts() {
        let mut c = PopeCounts::default();
        c.add(YesNo::No, YesNo::No);
        assert_eq!(
            (c.precision(), c.recall(), c.f1(), c.accuracy()),
            (0.0, 0.0, 0.0, 1.0)
        );
    }
}
