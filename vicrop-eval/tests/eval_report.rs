//! `vicrop eval report` on the hand-made run folders of `tests/fixtures/eval-runs/`: the main
//! table's numbers (recomputed per item with `vicrop_eval::score`, and by construction), the
//! answer-box size bins, the attention ratio's confidence intervals, the files written (PNGs
//! decoded), and bad inputs.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;
use vicrop_eval::report::{
    mean_ci95, relative_box_area, MetricSet, Report, ReportError, Run, SizeBin,
};
use vicrop_eval::score::{score_task, Metric, Prediction, Task};

const MODEL: &str = "llava-1.5-7b-hf";
const BLIP: &str = "instructblip-vicuna-7b";

fn runs(rel: &str) -> PathBuf {
    common::fixture("eval-runs").join(rel)
}

fn good_dirs() -> Vec<PathBuf> {
    [
        "llava-textvqa-rel-att",
        "llava-textvqa-rel-att-high",
        "llava-textvqa-oracle",
        "llava-vstar-rel-att",
        "blip-pope-baseline",
    ]
    .map(runs)
    .to_vec()
}

fn report() -> Report {
    Report::from_dirs(&good_dirs()).expect("the fixture runs make a report")
}

/// The rows of a fixture's results.jsonl.
fn rows(folder: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(runs(folder).join("results.jsonl")).expect("read rows");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("row json"))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("string").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The expected accuracy (percent) of one answer (`baseline` or `crop`) over `rows`: each
/// answered row scored alone by `score_task`, a failed row (error, or no answer) 0.
fn expected(task: Task, rows: &[&Value], answer: &str, metric: Metric) -> f64 {
    let mut sum = 0.0;
    for r in rows {
        let text = r[answer]["text"].as_str();
        if let (true, Some(text)) = (r["error"].is_null(), text) {
            let mut p = Prediction::new(r["id"].as_str().expect("id"), text, strings(&r["labels"]));
            if !r["options"].is_null() {
                p = p.with_options(strings(&r["options"]));
            }
            let s = score_task(task, &[p]).expect("score one row");
            sum += s.get(metric).expect("metric of the task");
        }
    }
    sum / rows.len() as f64
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

fn run<'a>(report: &'a Report, model: &str, label: &str, task: Task) -> &'a Run {
    report
        .run(model, label, task)
        .unwrap_or_else(|| panic!("no run {model} {label} {task}"))
}

#[test]
fn main_table_numbers_follow_the_scorers() {
    let report = report();
    let cases = [
        (
            "llava-textvqa-rel-att",
            "rel-att",
            Task::TextVqa,
            8,
            1,
            61.25,
            62.5,
        ),
        (
            "llava-textvqa-rel-att-high",
            "rel-att high-res",
            Task::TextVqa,
            2,
            0,
            50.0,
            50.0,
        ),
        (
            "llava-textvqa-oracle",
            "oracle",
            Task::TextVqa,
            5,
            1,
            60.0,
            80.0,
        ),
        (
            "llava-vstar-rel-att",
            "rel-att",
            Task::Vstar,
            4,
            0,
            50.0,
            50.0,
        ),
    ];
    for (folder, label, task, n, failed, no_crop, crop) in cases {
        let r = run(&report, MODEL, label, task);
        assert_eq!((r.n, r.failed), (n, failed), "{folder}");
        let rows = rows(folder);
        let rows: Vec<&Value> = rows.iter().collect();
        for &metric in task.metrics() {
            let want_no = expected(task, &rows, "baseline", metric);
            let want_crop = expected(task, &rows, "crop", metric);
            assert!(
                close(r.no_crop.get(metric).unwrap(), want_no),
                "{folder} {metric}"
            );
            let got_crop = r.crop.as_ref().and_then(|c| c.get(metric)).unwrap();
            assert!(close(got_crop, want_crop), "{folder} {metric}");
        }
        // by construction (1 right of 2 = 50%; t5 earns 0.9 for 3 matching answers of 10)
        let primary = MetricSet::Reference.primary(task);
        assert!(close(r.no_crop.get(primary).unwrap(), no_crop), "{folder}");
        assert!(
            close(r.crop.as_ref().unwrap().get(primary).unwrap(), crop),
            "{folder}"
        );
    }

    // POPE, method baseline: no crop column; the failed row (label no) counts as a wrong yes
    let pope = run(&report, BLIP, "baseline", Task::Pope);
    assert!(pope.crop.is_none());
    assert_eq!((pope.n, pope.failed), (4, 1));
    for (metric, want) in [
        (Metric::PopeAccuracy, 50.0),  // p1, p2 right of 4
        (Metric::PopePrecision, 50.0), // tp p1, fp p4
        (Metric::PopeRecall, 50.0),    // tp p1, fn p3
        (Metric::PopeF1, 50.0),
        (Metric::PopeYesRatio, 50.0),
    ] {
        assert!(close(pope.no_crop.get(metric).unwrap(), want), "{metric}");
    }

    // one row per model x method; the two tasks of llava rel-att share a row
    assert_eq!(
        report.rows(),
        vec![
            (BLIP, "baseline"),
            (MODEL, "rel-att"),
            (MODEL, "rel-att high-res"),
            (MODEL, "oracle")
        ]
    );
    assert_eq!(report.tasks(), vec![Task::TextVqa, Task::Pope, Task::Vstar]);
    let md = report.markdown();
    assert!(
        md.contains("| model | method | textvqa no crop | textvqa crop | pope no crop | pope crop | vstar no crop | vstar crop |"),
        "{md}"
    );
    assert!(
        md.contains("| llava-1.5-7b-hf | rel-att | 61.25 | 62.50 |  |  | 50.00 | 50.00 |"),
        "{md}"
    );
    assert!(
        md.contains("| instructblip-vicuna-7b | baseline |  |  | 50.00 | – |  |  |"),
        "{md}"
    );
    assert!(
        md.contains("| llava-1.5-7b-hf | oracle | 60.00 | 80.00 |  |  |  |  |"),
        "{md}"
    );
    assert!(md.contains("textvqa `vqa_reference`"), "{md}");
}

#[test]
fn official_metric_set_switches_the_primary_metric() {
    let report = Report::from_dirs_with(&good_dirs(), MetricSet::Official).unwrap();
    assert_eq!(report.metric_set(), MetricSet::Official);
    assert_eq!(
        MetricSet::Official.primary(Task::TextVqa),
        Metric::VqaOfficial
    );
    assert_eq!(MetricSet::Official.primary(Task::DocVqa), Metric::Anls);
    assert_eq!(
        MetricSet::Reference.primary(Task::DocVqa),
        Metric::DocvqaSubstring
    );
    assert!(report.markdown().contains("textvqa `vqa_official`"));
    // t5: 3 of 10 annotators; leave-one-out (3 * 2/3 + 7 * 1) / 10 = 0.9, as the reference
    let r = run(&report, MODEL, "rel-att", Task::TextVqa);
    assert!(close(r.no_crop.get(Metric::VqaOfficial).unwrap(), 61.25));
}

#[test]
fn size_bins_use_the_bounding_box_of_the_answer_boxes() {
    // t4: two 30x30 boxes -> their bounding box is 80x80 (medium), their summed area small
    let t4 = relative_box_area(
        &[[10.0, 10.0, 40.0, 40.0], [60.0, 60.0, 90.0, 90.0]],
        [1000.0, 800.0],
    );
    assert_eq!(t4, Some(0.008));
    assert_eq!(SizeBin::of_relative_area(0.008), SizeBin::Medium);
    assert_eq!(
        SizeBin::of_relative_area(1800.0 / 800_000.0),
        SizeBin::Small
    );
    // the boundaries belong to the larger bin
    assert_eq!(
        relative_box_area(&[[0.0, 0.0, 40.0, 100.0]], [1000.0, 800.0]),
        Some(0.005)
    );
    assert_eq!(SizeBin::of_relative_area(0.005), SizeBin::Medium);
    assert_eq!(SizeBin::of_relative_area(0.004_999), SizeBin::Small);
    assert_eq!(SizeBin::of_relative_area(0.05), SizeBin::Large);
    assert_eq!(SizeBin::of_relative_area(0.049_999), SizeBin::Medium);
    // corners in either order, clipped to the image; no box or no image size: no bin
    assert_eq!(
        relative_box_area(&[[20.0, 10.0, 0.0, 0.0]], [100.0, 100.0]),
        Some(0.02)
    );
    assert_eq!(
        relative_box_area(&[[-50.0, -50.0, 10.0, 10.0]], [100.0, 100.0]),
        Some(0.01)
    );
    assert_eq!(relative_box_area(&[], [100.0, 100.0]), None);
    assert_eq!(
        relative_box_area(&[[0.0, 0.0, 1.0, 1.0]], [0.0, 100.0]),
        None
    );

    let report = report();
    let r = run(&report, MODEL, "rel-att", Task::TextVqa);
    let ids: [&[&str]; 3] = [&["t1", "t7"], &["t2", "t4", "t8"], &["t3"]];
    let by_construction = [(50.0, 100.0), (200.0 / 3.0, 200.0 / 3.0), (100.0, 0.0)];
    let all = rows("llava-textvqa-rel-att");
    for (k, cell) in r.by_size.iter().enumerate() {
        assert_eq!(cell.bin, SizeBin::ALL[k]);
        assert_eq!(cell.n, ids[k].len(), "{}", cell.bin);
        let members: Vec<&Value> = all
            .iter()
            .filter(|row| ids[k].contains(&row["id"].as_str().unwrap()))
            .collect();
        let m = Metric::VqaReference;
        let no_crop = cell.no_crop.as_ref().unwrap().get(m).unwrap();
        let crop = cell.crop.as_ref().unwrap().get(m).unwrap();
        assert!(close(
            no_crop,
            expected(Task::TextVqa, &members, "baseline", m)
        ));
        assert!(close(crop, expected(Task::TextVqa, &members, "crop", m)));
        assert!(close(no_crop, by_construction[k].0), "{}", cell.bin);
        assert!(close(crop, by_construction[k].1), "{}", cell.bin);
    }
    assert_eq!(r.without_box, 2, "t5 has no boxes, t6 no image size");

    // the oracle's failed row keeps its box: counted wrong in its bin
    let o = run(&report, MODEL, "oracle", Task::TextVqa);
    let small = &o.by_size[0];
    assert_eq!((small.n, small.failed), (3, 1));
    assert!(close(
        small
            .no_crop
            .as_ref()
            .unwrap()
            .get(Metric::VqaReference)
            .unwrap(),
        100.0 / 3.0
    ));
    assert!(close(
        small
            .crop
            .as_ref()
            .unwrap()
            .get(Metric::VqaReference)
            .unwrap(),
        200.0 / 3.0
    ));

    // V*: 2000x1500 images
    let v = run(&report, MODEL, "rel-att", Task::Vstar);
    let got: Vec<(usize, f64, f64)> = v
        .by_size
        .iter()
        .map(|c| {
            (
                c.n,
                c.no_crop
                    .as_ref()
                    .unwrap()
                    .get(Metric::VstarOption)
                    .unwrap(),
                c.crop.as_ref().unwrap().get(Metric::VstarOption).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![(1, 0.0, 100.0), (1, 100.0, 100.0), (1, 100.0, 0.0)]
    );

    // POPE has no boxes: no size table for it
    let md = report.markdown();
    assert!(md.contains("### textvqa (`vqa_reference`)"), "{md}");
    assert!(md.contains("### vstar (`vstar_option`)"), "{md}");
    assert!(!md.contains("### pope"), "{md}");
    assert!(
        md.contains("| llava-1.5-7b-hf | rel-att | 50.00 | 100.00 | 66.67 | 66.67 | 100.00 | 0.00 | 2/3/1 |"),
        "{md}"
    );
}

#[test]
fn confidence_interval_is_mean_plus_minus_1_96_sd_over_sqrt_n() {
    let ci = mean_ci95(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
    let sd = (32.0f64 / 7.0).sqrt(); // sample sd, divisor n - 1
    let half = 1.96 * sd / 8.0f64.sqrt();
    assert_eq!(ci.n, 8);
    assert!(close(ci.mean, 5.0));
    assert!(close(ci.sd.unwrap(), sd));
    assert!(close(ci.low.unwrap(), 5.0 - half));
    assert!(close(ci.high.unwrap(), 5.0 + half));
    let one = mean_ci95(&[3.0]).unwrap();
    assert_eq!(
        (one.mean, one.sd, one.low, one.high),
        (3.0, None, None, None)
    );
    assert!(mean_ci95(&[]).is_none());

    let report = report();
    let r = run(&report, MODEL, "rel-att", Task::TextVqa);
    let a = r.attention.as_ref().expect("attention ratios");
    let rows = rows("llava-textvqa-rel-att");
    let arrays: Vec<Vec<f64>> = rows
        .iter()
        .filter_map(|r| r["attention_ratio"].as_array())
        .map(|a| a.iter().map(|v| v.as_f64().unwrap()).collect())
        .collect();
    assert_eq!(a.n, 7, "t6 failed without ratios");
    assert_eq!(a.all.len(), 3);
    for (k, stat) in a.all.iter().enumerate() {
        let values: Vec<f64> = arrays.iter().map(|v| v[k]).collect();
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        assert!(close(stat.mean, mean), "layer {k}");
        assert!(
            close(stat.low.unwrap(), mean - 1.96 * sd / n.sqrt()),
            "layer {k}"
        );
        assert!(
            close(stat.high.unwrap(), mean + 1.96 * sd / n.sqrt()),
            "layer {k}"
        );
    }
    // layer 1 is 1..7: mean 4, sd sqrt(28/6)
    assert!(close(a.all[1].mean, 4.0));
    assert!(close(a.all[1].sd.unwrap(), (28.0f64 / 6.0).sqrt()));
    // layer 0 is constant: a zero-width interval
    assert_eq!((a.all[0].low, a.all[0].high), (Some(1.0), Some(1.0)));
    // right without the crop: t2, t3, t5 (0.9), t7, t8; wrong: t1, t4
    let correct = a.correct.as_ref().unwrap();
    let incorrect = a.incorrect.as_ref().unwrap();
    assert_eq!((correct[0].n, incorrect[0].n), (5, 2));
    assert!(close(incorrect[2].mean, 2.5));
    assert!(close(correct[1].mean, (2.0 + 3.0 + 5.0 + 6.0 + 7.0) / 5.0));

    let csv = report.attention_csv();
    let line = csv
        .lines()
        .find(|l| l.starts_with("llava-1.5-7b-hf,rel-att,textvqa,all,1,"))
        .expect("layer 1 line");
    let fields: Vec<&str> = line.split(',').collect();
    assert_eq!(fields[5], "7");
    assert!(close(fields[6].parse().unwrap(), 4.0));
    assert!(close(fields[8].parse().unwrap(), a.all[1].low.unwrap()));
    assert!(close(fields[9].parse().unwrap(), a.all[1].high.unwrap()));
    let md = report.markdown();
    assert!(
        md.contains("| layer | llava-1.5-7b-hf rel-att (n=7) |"),
        "{md}"
    );
    assert!(md.contains("| 0 | 1.00 [1.00, 1.00] |"), "{md}");
}

#[test]
fn csv_holds_every_metric() {
    let report = report();
    let csv = report.main_csv();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("model,method,task,metric,primary,n,failed,no_crop,crop,folder")
    );
    // 3 textvqa runs x 2 metrics + vstar 1 + pope 5
    assert_eq!(lines.clone().count(), 12);
    let row = lines
        .clone()
        .find(|l| l.starts_with("llava-1.5-7b-hf,rel-att,textvqa,vqa_reference,true,8,1,"))
        .unwrap_or_else(|| panic!("{csv}"));
    let fields: Vec<&str> = row.split(',').collect();
    assert!(close(fields[7].parse().unwrap(), 61.25), "{row}");
    assert!(close(fields[8].parse().unwrap(), 62.5), "{row}");
    assert!(fields[9].ends_with("llava-textvqa-rel-att"), "{row}");
    assert!(
        lines.any(|l| l.starts_with("instructblip-vicuna-7b,baseline,pope,pope_f1,false,4,1,50,,"))
    );
    let sizes = report.by_size_csv();
    assert!(sizes.starts_with("model,method,task,size,metric,primary,n,failed,no_crop,crop\n"));
    assert!(
        sizes.contains("\nllava-1.5-7b-hf,oracle,textvqa,medium,vqa_reference,true,1,0,100,100\n"),
        "{sizes}"
    );
}

fn assert_png(path: &Path) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()))
        .to_rgb8();
    assert_eq!(img.dimensions(), (1100, 560), "{}", path.display());
    let dark = img
        .pixels()
        .filter(|p| p.0.iter().all(|&c| c < 100))
        .count();
    let colored = img
        .pixels()
        .filter(|p| p.0.iter().max().unwrap() - p.0.iter().min().unwrap() > 60)
        .count();
    assert!(dark > 500, "{}: no text or axes drawn", path.display());
    assert!(colored > 500, "{}: no series drawn", path.display());
}

#[test]
fn write_makes_markdown_csv_and_decodable_pngs() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("report");
    let files = report().write(&dir).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "report.md",
        "main.csv",
        "by_size.csv",
        "attention_ratio.csv",
        "by_size-textvqa.png",
        "by_size-vstar.png",
        "attention_ratio-textvqa.png",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        assert!(dir.join(want).is_file(), "{want}");
    }
    assert_eq!(names.len(), 7, "{names:?}");
    for name in names.iter().filter(|n| n.ends_with(".png")) {
        assert_png(&dir.join(name));
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("](by_size-textvqa.png)"), "{md}");
    assert!(md.contains("](attention_ratio-textvqa.png)"), "{md}");
    assert!(md.starts_with(&report().markdown()));
}

#[test]
fn cli_prints_markdown_and_writes_files() {
    let out = tempfile::tempdir().unwrap();
    let dirs = good_dirs();
    let mut args = vec!["eval", "report"];
    args.extend(dirs.iter().map(|d| common::s(d)));
    args.extend(["--out", common::s(out.path())]);
    let o = common::vicrop(&args);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stdout.contains("| llava-1.5-7b-hf | rel-att | 61.25 | 62.50 |"),
        "{stdout}"
    );
    assert!(stderr.contains("by_size-textvqa.png"), "{stderr}");
    assert!(out.path().join("attention_ratio-textvqa.png").is_file());

    let o = common::vicrop(&["eval", "report", common::s(&runs("bad/shards-only"))]);
    common::assert_clean_failure(&o, "vicrop eval merge");
    let o = common::vicrop(&["eval", "report"]);
    assert!(!o.status.success());
}

fn err(dirs: &[PathBuf]) -> String {
    match Report::from_dirs(dirs) {
        Ok(_) => panic!("expected an error for {dirs:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_folders_are_clear_errors() {
    assert!(matches!(Report::from_dirs(&[]), Err(ReportError::NoRuns)));

    let missing = runs("does-not-exist");
    let e = err(&[missing]);
    assert!(
        e.contains("does-not-exist") && e.contains("does not exist"),
        "{e}"
    );

    let e = err(&[runs("bad/no-manifest")]);
    assert!(
        e.contains("no-manifest") && e.contains("no manifest.json"),
        "{e}"
    );

    let e = err(&[runs("bad/no-results")]);
    assert!(
        e.contains("no-results") && e.contains("no results.jsonl"),
        "{e}"
    );

    let r = Report::from_dirs(&[runs("bad/shards-only")]);
    assert!(
        matches!(r, Err(ReportError::ShardsNotMerged { .. })),
        "{r:?}"
    );
    let e = err(&[runs("bad/shards-only")]);
    assert!(
        e.contains("results-0-of-2.jsonl, results-1-of-2.jsonl") && e.contains("vicrop eval merge"),
        "{e}"
    );

    // same model x method x task in two folders: both named
    let e = err(&[runs("llava-textvqa-rel-att"), runs("bad/same-as-rel-att")]);
    assert!(
        e.contains("llava-textvqa-rel-att") && e.contains("same-as-rel-att"),
        "{e}"
    );
    assert!(e.contains("`rel-att`") && e.contains("`textvqa`"), "{e}");
}

const MANIFEST: &str = r#"{"model_name": "m", "task": "textvqa", "method": "rel-att", "high_res": false, "future": 1}"#;

fn row(id: &str, extra: &str) -> String {
    format!(
        r#"{{"id": "{id}", "labels": ["a","a","a","a","a","a","a","a","a","a"], "baseline": {{"text": "a"}}, "crop": {{"text": "b"}}, "error": null{extra}}}"#
    )
}

/// A run folder in a temp dir with the given manifest and results text.
fn folder(manifest: &str, results: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.json"), manifest).unwrap();
    std::fs::write(dir.path().join("results.jsonl"), results).unwrap();
    dir
}

fn err_in(manifest: &str, results: &str) -> String {
    let dir = folder(manifest, results);
    err(&[dir.path().to_path_buf()])
}

#[test]
fn bad_rows_and_manifests_name_the_file_and_line() {
    let ok = format!("{}\n{}\n", row("1", ""), row("2", ""));
    let dir = folder(MANIFEST, &ok);
    let r = Report::from_dirs(&[dir.path().to_path_buf()]).unwrap();
    let run = &r.runs()[0];
    assert!(close(run.no_crop.get(Metric::VqaReference).unwrap(), 100.0));
    assert!(close(
        run.crop
            .as_ref()
            .unwrap()
            .get(Metric::VqaReference)
            .unwrap(),
        0.0
    ));
    assert_eq!(run.without_box, 2);
    assert!(run.attention.is_none());

    let e = err_in(MANIFEST, &format!("{}\nnot json\n", row("1", "")));
    assert!(
        e.contains("results.jsonl: line 2: not a results row"),
        "{e}"
    );

    let e = err_in(MANIFEST, &format!("{}\n{{\"id\": \"2\"}}\n", row("1", "")));
    assert!(
        e.contains("line 2") && e.contains("missing field `labels`"),
        "{e}"
    );

    let e = err_in(MANIFEST, &format!("{}\n\n{}\n", row("1", ""), row("1", "")));
    assert!(
        e.contains("id `1` appears on line 1 and again on line 3"),
        "{e}"
    );

    let e = err_in(MANIFEST, "\n");
    assert!(e.contains("no results in the file"), "{e}");

    let e = err_in(
        MANIFEST,
        &format!(
            "{}\n{}\n",
            row("1", r#", "attention_ratio": [1.0, 2.0]"#),
            row("2", r#", "attention_ratio": [1.0, 2.0, 3.0]"#)
        ),
    );
    assert!(
        e.contains("line 2") && e.contains("has 3 layers, line 1 has 2"),
        "{e}"
    );

    let e = err_in(&MANIFEST.replace("textvqa", "textvqa2"), &ok);
    assert!(
        e.contains("manifest.json") && e.contains("textvqa2") && e.contains("vstar"),
        "{e}"
    );

    let e = err_in(r#"{"task": "textvqa", "method": "rel-att"}"#, &ok);
    assert!(
        e.contains("manifest.json") && e.contains("model_name"),
        "{e}"
    );

    // a row the task cannot score: POPE's label must be yes or no
    let pope = MANIFEST.replace("textvqa", "pope");
    let e = err_in(
        &pope,
        r#"{"id": "1", "labels": ["yes"], "baseline": {"text": "yes"}, "crop": {"text": "no"}}
{"id": "2", "labels": ["maybe"], "baseline": {"text": "yes"}, "crop": {"text": "no"}}
"#,
    );
    assert!(e.contains("line 2") && e.contains("maybe"), "{e}");

    // not UTF-8
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("manifest.json"), MANIFEST).unwrap();
    let mut bytes = format!("{}\n", row("1", "")).into_bytes();
    bytes.extend_from_slice(b"{\"id\": \"\xff\"}\n");
    std::fs::write(dir.path().join("results.jsonl"), bytes).unwrap();
    let e = err(&[dir.path().to_path_buf()]);
    assert!(e.contains("line 2: not valid UTF-8"), "{e}");
}

#[test]
fn an_unfinished_last_line_is_skipped() {
    // a run still writing (or killed mid-line): the last line has no newline yet
    let text = format!("{}\n{}\n{{\"id\": \"3\", \"lab", row("1", ""), row("2", ""));
    let dir = folder(MANIFEST, &text);
    let r = Report::from_dirs(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(r.runs()[0].n, 2);
    // the same line with its newline is an error
    let e = err_in(MANIFEST, &format!("{text}\n"));
    assert!(e.contains("line 3"), "{e}");
}

#[test]
fn row_labels_carry_high_res_placement_and_layer() {
    let m = r#"{"model_name": "m", "task": "gqa", "method": "grad-att", "high_res": true, "placement": "map-region", "layer": 10}"#;
    let dir = folder(m, &format!("{}\n", row("1", "")));
    let r = Report::from_dirs(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(r.runs()[0].label, "grad-att high-res map-region layer 10");
    assert_eq!(r.runs()[0].method, "grad-att");
    assert!(r.runs()[0].high_res);
}
