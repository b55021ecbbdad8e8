//! The scorers against the official evaluation code (goldens from tools/gen_scorer_goldens.py),
//! and bad predictions files.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use common::{assert_clean_failure, fixture, s, vicrop};
use vicrop_eval::score::{
    difflib, metrics, normalize, read_predictions, score_file, score_task, Metric, Prediction,
    ScoreError, Task,
};

fn goldens() -> Value {
    let path = fixture("goldens/scorers.json");
    let text = std::fs::read_to_string(&path).expect("tests/fixtures/goldens/scorers.json");
    serde_json::from_str(&text).expect("golden json")
}

fn string(v: &Value) -> String {
    v.as_str().expect("string").to_string()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().expect("array").iter().map(string).collect()
}

/// A golden float, stored as Python's repr (read back exactly by Rust's correctly rounded
/// parser; serde_json's default float parsing is not).
fn float(v: &Value) -> f64 {
    match v {
        Value::String(text) => text.parse().expect("float repr"),
        other => other.as_f64().expect("number"),
    }
}

/// Fails with every mismatch listed (not just the first).
fn report(failures: Vec<String>, what: &str, total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {total} {what} differ from the official code:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn tables_are_the_official_ones() {
    let g = goldens();
    let t = &g["tables"];
    let ours: BTreeMap<&str, &str> = normalize::CONTRACTIONS.iter().copied().collect();
    assert_eq!(ours.len(), normalize::CONTRACTIONS.len(), "duplicate keys");
    let numbers: BTreeMap<&str, &str> = normalize::NUMBER_MAP.iter().copied().collect();
    for source in ["vqa_eval", "evalai", "reference"] {
        let official: BTreeMap<&str, &str> = t[source]["contractions"]
            .as_object()
            .expect("contractions")
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().expect("string")))
            .collect();
        assert_eq!(ours, official, "{source} contractions");
        let official: BTreeMap<&str, &str> = t[source]["manual_map"]
            .as_object()
            .expect("manual_map")
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().expect("string")))
            .collect();
        assert_eq!(numbers, official, "{source} number words");
        assert_eq!(
            strings(&t[source]["articles"]),
            normalize::ARTICLES,
            "{source} articles"
        );
        let punct: Vec<String> = normalize::PUNCTUATION
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(strings(&t[source]["punct"]), punct, "{source} punctuation");
    }
    let whitespace: Vec<u32> = t["python_whitespace"]
        .as_array()
        .expect("whitespace")
        .iter()
        .map(|v| v.as_u64().expect("int") as u32)
        .collect();
    let decimal: Vec<u32> = t["python_decimal"]
        .as_array()
        .expect("decimal")
        .iter()
        .map(|v| v.as_u64().expect("int") as u32)
        .collect();
    let ours_ws: Vec<u32> = (0..=0x10FFFFu32)
        .filter_map(char::from_u32)
        .filter(|&c| normalize::is_py_space(c))
        .map(u32::from)
        .collect();
    let ours_dec: Vec<u32> = (0..=0x10FFFFu32)
        .filter_map(char::from_u32)
        .filter(|&c| normalize::is_py_decimal(c))
        .map(u32::from)
        .collect();
    assert_eq!(ours_ws, whitespace, "Python's str.isspace()");
    assert_eq!(ours_dec, decimal, "Python's re \\d");
}

#[test]
fn normalisers_match_the_official_code() {
    let g = goldens();
    let cases = g["normalize"].as_array().expect("normalize");
    assert!(cases.len() >= 300, "{} strings", cases.len());
    let mut failures = Vec::new();
    for c in cases {
        let input = string(&c["s"]);
        let checks = [
            (
                "vqaEval processPunctuation",
                normalize::vqa_process_punctuation(&input),
                &c["vqa_punct"],
            ),
            (
                "vqaEval processDigitArticle(processPunctuation)",
                normalize::vqa_normalize(&input),
                &c["vqa_norm"],
            ),
            (
                "EvalAIAnswerProcessor",
                normalize::evalai_normalize(&input),
                &c["evalai"],
            ),
            (
                "reference process_text",
                normalize::reference_normalize(&input),
                &c["reference"],
            ),
        ];
        for (what, ours, official) in checks {
            if ours != string(official) {
                failures.push(format!("{what}({input:?}): {ours:?} != {official}"));
            }
        }
    }
    report(failures, "normalisations", cases.len() * 4);
}

#[test]
fn vqa_style_metrics_match_the_official_code() {
    let g = goldens();
    let cases = g["vqa"].as_array().expect("vqa");
    let mut failures = Vec::new();
    let mut check = |what: &str, pred: &str, labels: &[String], ours: f64, official: f64| {
        if ours.to_bits() != official.to_bits() {
            failures.push(format!(
                "{what}({pred:?}, {labels:?}): {ours:?} != {official:?}"
            ));
        }
    };
    for c in cases {
        let pred = string(&c["prediction"]);
        let labels = strings(&c["labels"]);
        check(
            "vqaEval",
            &pred,
            &labels,
            metrics::vqav2_accuracy(&pred, &labels),
            float(&c["vqav2"]),
        );
        check(
            "TextVQAAccuracyEvaluator",
            &pred,
            &labels,
            metrics::textvqa_accuracy(&pred, &labels),
            float(&c["textvqa"]),
        );
        check(
            "eval_aokvqa",
            &pred,
            &labels,
            100.0 * metrics::aokvqa_direct_answer_accuracy(&pred, &labels),
            float(&c["aokvqa"]),
        );
        check(
            "get_acc",
            &pred,
            &labels,
            100.0 * metrics::vqa_reference_accuracy(&pred, &labels),
            float(&c["reference"]),
        );
        check(
            "get_acc_gqa",
            &pred,
            &labels,
            100.0 * metrics::gqa_contains_matches(&pred, &labels) as f64,
            float(&c["gqa"]),
        );
        check(
            "evaluate_docvqa",
            &pred,
            &labels,
            100.0 * metrics::docvqa_substring(&pred, &labels),
            float(&c["docvqa"]),
        );
        // null: mmf divides by zero on two empty strings; we score that pair 1
        let anls_official = if c["anls"].is_null() {
            1.0
        } else {
            float(&c["anls"])
        };
        check(
            "STVQAANLSEvaluator",
            &pred,
            &labels,
            metrics::anls(&pred, &labels),
            anls_official,
        );
    }
    report(failures, "metric values", cases.len() * 7);
}

#[test]
fn difflib_ratio_matches_python() {
    let g = goldens();
    let cases = g["difflib"].as_array().expect("difflib");
    let mut failures = Vec::new();
    let mut long = 0;
    for c in cases {
        let (a, b) = (string(&c["a"]), string(&c["b"]));
        long += usize::from(b.chars().count() >= 200);
        let ours = difflib::ratio(&a, &b);
        let official = float(&c["ratio"]);
        if ours.to_bits() != official.to_bits() {
            failures.push(format!("ratio({a:?}, {b:?}): {ours:?} != {official:?}"));
        }
    }
    assert!(long >= 15, "{long} pairs exercise autojunk");
    report(failures, "ratios", cases.len());
}

#[test]
fn pope_decisions_and_formulas_match() {
    let g = goldens();
    let mut failures = Vec::new();
    let decisions = g["pope_decisions"].as_array().expect("pope_decisions");
    for c in decisions {
        let pred = string(&c["prediction"]);
        let ours = metrics::pope_decision(&pred).as_str();
        if ours != string(&c["decision"]) {
            failures.push(format!("match_mcq({pred:?}): {ours} != {}", c["decision"]));
        }
    }
    report(failures, "POPE decisions", decisions.len());
    let sets = g["pope_sets"].as_array().expect("pope_sets");
    assert!(sets.len() >= 4);
    for set in sets {
        let mut counts = metrics::PopeCounts::default();
        for (p, l) in strings(&set["predictions"])
            .iter()
            .zip(strings(&set["labels"]))
        {
            let label = metrics::YesNo::parse_label(&l).expect("yes/no");
            counts.add(metrics::pope_decision(p), label);
        }
        let m = &set["pope"];
        assert_eq!(counts.accuracy(), float(&m["acc"]));
        assert_eq!(counts.precision(), float(&m["precision"]));
        assert_eq!(counts.recall(), float(&m["recall"]));
        assert_eq!(counts.f1(), float(&m["f1"]));
        assert_eq!(counts.yes_ratio(), float(&m["yes_ratio"]));
        let reference = float(&set["reference_accuracy"]);
        assert!((100.0 * counts.accuracy() - reference).abs() < 1e-9);
    }
}

#[test]
fn vstar_choice_matches_the_reference() {
    let g = goldens();
    let cases = g["vstar"].as_array().expect("vstar");
    let mut failures = Vec::new();
    for c in cases {
        let options = strings(&c["options"]);
        let candidates: Vec<String> = options
            .iter()
            .enumerate()
            .map(|(i, o)| metrics::vstar_candidate(i, o).expect("candidate"))
            .collect();
        assert_eq!(candidates, strings(&c["candidates"]));
        // the option lines themselves give the same candidates
        let again: Vec<String> = candidates
            .iter()
            .enumerate()
            .map(|(i, o)| metrics::vstar_candidate(i, o).expect("candidate"))
            .collect();
        assert_eq!(again, candidates);
        let pred = string(&c["prediction"]);
        let ours = metrics::vstar_choice(&pred, &candidates);
        let official = c["index"].as_u64().map(|i| i as usize);
        if ours != official {
            failures.push(format!(
                "get_index({pred:?}, {candidates:?}): {ours:?} != {official:?}"
            ));
        }
    }
    report(failures, "V* choices", cases.len());
}

fn task_predictions(t: &Value) -> Vec<Prediction> {
    t["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|p| serde_json::from_value(p.clone()).expect("prediction"))
        .collect()
}

fn write_jsonl(dir: &Path, name: &str, predictions: &[Prediction]) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).expect("create");
    for p in predictions {
        writeln!(f, "{}", serde_json::to_string(p).expect("json")).expect("write");
    }
    path
}

#[test]
fn whole_tasks_match_the_official_aggregates() {
    let g = goldens();
    let dir = tempfile::tempdir().expect("tempdir");
    let tasks = g["tasks"].as_array().expect("tasks");
    let mut seen = Vec::new();
    for (k, t) in tasks.iter().enumerate() {
        let task: Task = string(&t["task"]).parse().expect("task");
        seen.push(task);
        let predictions = task_predictions(t);
        let scores = score_task(task, &predictions).expect("score");
        assert_eq!(scores.n, predictions.len());
        let names: Vec<&str> = scores.metrics.iter().map(|(m, _)| m.name()).collect();
        let expected = t["metrics"].as_object().expect("metrics");
        assert_eq!(names.len(), expected.len(), "{task}: {names:?}");
        for (name, value) in expected {
            let ours = scores
                .metrics
                .iter()
                .find(|(m, _)| m.name() == name)
                .map(|&(_, v)| v)
                .unwrap_or_else(|| panic!("{task} lacks {name}"));
            let official = float(value);
            assert!(
                (ours - official).abs() < 1e-9,
                "{task} {name}: {ours} != {official}"
            );
        }
        let file = write_jsonl(dir.path(), &format!("{k}.jsonl"), &predictions);
        assert_eq!(score_file(task, &file).expect("score_file"), scores);
    }
    for task in Task::ALL {
        assert!(seen.contains(&task), "no golden for {task}");
    }
}

#[test]
fn cli_prints_the_scores() {
    let g = goldens();
    let t = g["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["task"] == "pope")
        .expect("pope task");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_jsonl(dir.path(), "pope.jsonl", &task_predictions(t));
    let out = vicrop(&["eval", "score", "--task", "pope", "--predictions", s(&file)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("{\"n\":"), "{stdout}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let json: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(json["n"], t["predictions"].as_array().expect("array").len());
    let metrics = json["metrics"].as_object().expect("metrics");
    assert_eq!(metrics.len(), 5);
    for (name, value) in t["metrics"].as_object().expect("metrics") {
        assert!(
            (float(&metrics[name]) - float(value)).abs() < 1e-9,
            "{name}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Bad input

fn file_with(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write");
    path
}

const GOOD: &str = r#"{"id": "q1", "prediction": "two", "labels": ["2", "two"]}"#;

fn read_error(bytes: &[u8]) -> (PathBuf, String, ScoreError) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file_with(dir.path(), "preds.jsonl", bytes);
    let err = read_predictions(&path).expect_err("must fail");
    let message = err.to_string();
    assert!(
        message.contains(path.to_str().expect("utf8")),
        "no file name in {message:?}"
    );
    (path, message, err)
}

#[test]
fn missing_fields_name_file_line_and_field() {
    let second_lines = [
        ("id", r#"{"prediction": "a", "labels": ["a"]}"#),
        ("prediction", r#"{"id": "q2", "labels": ["a"]}"#),
        ("labels", r#"{"id": "q2", "prediction": "a"}"#),
    ];
    for (field, line) in second_lines {
        let text = format!("{GOOD}\n{line}\n");
        let (_, message, err) = read_error(text.as_bytes());
        assert!(matches!(err, ScoreError::Line { line: 2, .. }), "{message}");
        assert!(
            message.contains(&format!("line 2: missing field `{field}`")),
            "{message}"
        );
    }
    let (_, message, _) = read_error(br#"{"id": "q1", "prediction": 3, "labels": ["a"]}"#);
    assert!(message.contains("line 1") && message.contains("`prediction` must be a string"));
    let (_, message, _) = read_error(br#"{"id": "q1", "prediction": "a", "labels": "a"}"#);
    assert!(
        message.contains("`labels` must be an array of strings"),
        "{message}"
    );
    let (_, message, _) = read_error(b"{\"id\": \"q1\", \"prediction\": \"a\"\n");
    assert!(message.contains("line 1: not valid JSON"), "{message}");
    let (_, message, _) = read_error(b"[1, 2]\n");
    assert!(message.contains("expected a JSON object"), "{message}");
}

#[test]
fn non_utf8_line_is_reported_with_its_line() {
    let mut bytes = format!("{GOOD}\n\n").into_bytes();
    bytes
        .extend_from_slice(b"{\"id\": \"q2\", \"prediction\": \"caf\xe9\", \"labels\": [\"a\"]}\n");
    let (_, message, err) = read_error(&bytes);
    assert!(matches!(err, ScoreError::Line { line: 3, .. }), "{message}");
    assert!(message.contains("not valid UTF-8"), "{message}");
}

#[test]
fn empty_labels_are_refused() {
    let text = format!("{GOOD}\n{{\"id\": \"q2\", \"prediction\": \"a\", \"labels\": []}}\n");
    let (_, message, _) = read_error(text.as_bytes());
    assert!(
        message.contains("line 2: field `labels` is empty"),
        "{message}"
    );
    // the library entry point refuses them too
    let preds = vec![Prediction::new("q1", "a", Vec::<String>::new())];
    let err = score_task(Task::Gqa, &preds).expect_err("empty labels");
    assert!(err.to_string().contains("`labels` is empty"), "{err}");
}

#[test]
fn duplicate_ids_name_both_lines() {
    let text = format!("{GOOD}\n{}\n{GOOD}\n", GOOD.replace("q1", "q2"));
    let (_, message, err) = read_error(text.as_bytes());
    assert!(
        matches!(
            err,
            ScoreError::DuplicateId {
                first: 1,
                second: 3,
                ..
            }
        ),
        "{message}"
    );
    assert!(message.contains("`q1`") && message.contains("line 1") && message.contains("line 3"));
    let preds = vec![
        Prediction::new("a", "x", ["x"]),
        Prediction::new("a", "x", ["x"]),
    ];
    assert!(matches!(
        score_task(Task::Gqa, &preds),
        Err(ScoreError::DuplicateId {
            first: 1,
            second: 2,
            ..
        })
    ));
}

#[test]
fn empty_and_missing_files() {
    let (_, message, _) = read_error(b"\n  \n");
    assert!(message.contains("no predictions"), "{message}");
    let missing = Path::new("/nonexistent/vicrop/preds.jsonl");
    let err = read_predictions(missing).expect_err("missing file");
    assert!(matches!(err, ScoreError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/vicrop/preds.jsonl"));
    assert!(matches!(
        score_task(Task::Pope, &[]),
        Err(ScoreError::Empty { .. })
    ));
}

#[test]
fn unknown_task_lists_the_valid_names() {
    let err = "textvqa2".parse::<Task>().expect_err("unknown");
    let message = err.to_string();
    assert!(message.contains("unknown task `textvqa2`"), "{message}");
    for task in Task::ALL {
        assert!(message.contains(task.name()), "{message}");
        assert_eq!(task.name().parse::<Task>().expect("name"), task);
    }
    assert_eq!("VQAv2".parse::<Task>().expect("case"), Task::VqaV2);
}

#[test]
fn vstar_without_options_or_with_a_bad_label() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = r#"{"id": "v1", "prediction": "A", "labels": ["A"], "options": ["red", "blue"]}"#;
    let no_options = r#"{"id": "v2", "prediction": "A", "labels": ["A"]}"#;
    let path = file_with(
        dir.path(),
        "vstar.jsonl",
        format!("{good}\n{no_options}\n").as_bytes(),
    );
    let err = score_file(Task::Vstar, &path).expect_err("no options");
    let message = err.to_string();
    assert!(
        message.contains("line 2") && message.contains("`v2`") && message.contains("options"),
        "{message}"
    );
    let p = Prediction::new("v", "A", ["C"]).with_options(["red", "blue"]);
    let err = score_task(Task::Vstar, &[p]).expect_err("label out of range");
    assert!(err.to_string().contains("A to B"), "{err}");
    // a label given as the option's text; options given as the question's lines
    let p = Prediction::new("v", "blue", ["blue"]).with_options(["red", "blue"]);
    let q = Prediction::new("w", "(B) blue", ["b"]).with_options(["(A) red", "(B) blue"]);
    let scores = score_task(Task::Vstar, &[p, q]).expect("score");
    assert_eq!(scores.get(Metric::VstarOption), Some(100.0));
}

#[test]
fn pope_labels_must_be_yes_or_no() {
    let err =
        score_task(Task::Pope, &[Prediction::new("p", "yes", ["maybe"])]).expect_err("bad label");
    assert!(err.to_string().contains("neither yes nor no"), "{err}");
    let err = score_task(Task::Pope, &[Prediction::new("p", "yes", ["yes", "no"])])
        .expect_err("two labels");
    assert!(err.to_string().contains("exactly one label"), "{err}");
    let scores = score_task(Task::Pope, &[Prediction::new("p", "No", [" NO "])]).expect("score");
    assert_eq!(scores.get(Metric::PopeAccuracy), Some(100.0));
    // nothing predicted yes: precision, recall and F1 are 0, not NaN
    assert_eq!(scores.get(Metric::PopeF1), Some(0.0));
}

#[test]
fn cli_errors_are_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = file_with(
        dir.path(),
        "bad.jsonl",
        format!("{GOOD}\n{{\"id\": \"q2\", \"labels\": [\"a\"]}}\n").as_bytes(),
    );
    let out = vicrop(&["eval", "score", "--task", "nope", "--predictions", s(&path)]);
    assert_clean_failure(&out, "unknown task `nope`");
    let out = vicrop(&[
        "eval",
        "score",
        "--task",
        "textvqa",
        "--predictions",
        s(&path),
    ]);
    assert_clean_failure(&out, "line 2: missing field `prediction`");
}
