//! `vicrop eval run` and `vicrop eval merge` end to end on the bundled evaluation set
//! (tests/fixtures/evalset: twelve questions on ten generated sign scenes) with a tiny
//! random-weight LLaVA checkpoint: resume after a kill, a torn last line, refused reruns,
//! shards and merge, failed items, both model families and the attention ratio.
//!
//! `llava-tiny-b` (224 px, 197 image tokens) with three new tokens per answer keeps an item
//! near a tenth of a second; `llava-tiny-a` (576 image tokens) is three times slower here.
//!
//! The rows of every way of getting there (resumed, repaired, sharded and merged) must equal
//! those of one uninterrupted run, ignoring the timings and the cost (work shared by
//! consecutive questions on one image is charged to the first question the process ran).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{assert_clean_failure, fixture, s, vicrop};
use serde_json::Value;

const ITEMS: usize = 12;
/// The checkpoint of most runs, and its input side (the oracle crop's side).
const MODEL: &str = "llava-tiny-b";
const SIDE: u64 = 224;
/// Its language model's layers (one attention ratio each).
const LAYERS: usize = 3;
/// Another checkpoint, for a refused rerun.
const OTHER_MODEL: &str = "llava-tiny-a";
/// New tokens per answer (the random-weight models never stop early).
const TOKENS: &str = "3";

/// `args` with `flag`'s value set to `value` (appended if absent).
fn with(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    match args.iter().position(|a| a == flag) {
        Some(i) => args[i + 1] = value.to_string(),
        None => args.extend([flag.to_string(), value.to_string()]),
    }
    args
}

/// `vicrop eval run` on the bundled set with tiny LLaVA and rel-att into `out`, plus `extra`.
fn run_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "eval",
        "run",
        "--model",
        s(&fixture(MODEL)),
        "--task",
        "textvqa",
        "--format",
        "reference",
        "--data",
        s(&fixture("evalset")),
        "--images",
        s(&fixture("scenes")),
        "--method",
        "rel-att",
        "--out",
        s(out),
        "--max-new-tokens",
        TOKENS,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn vicrop_owned(args: &[String]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    vicrop(&refs)
}

fn assert_ok(out: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "vicrop failed: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    serde_json::from_slice(&out.stdout).expect("a JSON summary on stdout")
}

/// The rows of a results file, parsed.
fn rows(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("results file");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect()
}

/// A row without its timings and cost.
fn content(row: &Value) -> Value {
    let mut row = row.clone();
    let obj = row.as_object_mut().expect("row object");
    obj.remove("seconds");
    obj.remove("cost");
    obj.remove("timings_ms");
    for part in ["baseline", "crop"] {
        if let Some(Value::Object(o)) = obj.get_mut(part) {
            o.remove("seconds");
        }
    }
    row
}

fn contents(rows: &[Value]) -> Vec<Value> {
    rows.iter().map(content).collect()
}

/// A fresh folder under the test target's scratch space.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("eval_run")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// One uninterrupted run over the whole set (made once, shared by the tests).
fn reference() -> &'static (PathBuf, Vec<Value>) {
    static REF: OnceLock<(PathBuf, Vec<Value>)> = OnceLock::new();
    REF.get_or_init(|| {
        let out = scratch("reference");
        let summary = assert_ok(&vicrop_owned(&run_args(&out, &[])));
        assert_eq!(summary["items"], ITEMS);
        assert_eq!(summary["written"], ITEMS);
        assert_eq!(summary["errors"], 0);
        let rows = rows(&out.join("results.jsonl"));
        (out, rows)
    })
}

#[test]
fn a_run_writes_the_contract_and_a_rerun_adds_nothing() {
    let (out, rows) = reference();
    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("evalset/data.json")).expect("data.json"),
    )
    .expect("json");
    assert_eq!(rows.len(), ITEMS);
    for (i, row) in rows.iter().enumerate() {
        let record = &data[i];
        assert_eq!(row["index"], i);
        assert_eq!(row["id"], record["id"]);
        assert_eq!(row["question"], record["question"]);
        assert_eq!(row["labels"], record["labels"]);
        assert_eq!(row["boxes"].as_array().map(Vec::len), Some(1));
        assert!(row["error"].is_null(), "{row}");
        assert!(row["attention_ratio"].is_null());
        let [w, h] = [&row["image_size"][0], &row["image_size"][1]].map(|v| v.as_u64().unwrap());
        let b: Vec<u64> = row["crop"]["bbox"]
            .as_array()
            .expect("bbox")
            .iter()
            .map(|v| v.as_u64().expect("u32"))
            .collect();
        assert!(
            b[0] < b[2] && b[1] < b[3] && b[2] <= w && b[3] <= h,
            "{b:?} in {w}x{h}"
        );
        assert!(row["baseline"]["text"].is_string());
        assert!(row["baseline"]["token_ids"].is_array());
        assert!(row["crop"]["text"].is_string());
        assert!(row["cost"]["llm_positions"].as_u64().unwrap() > 0);
        for t in [
            &row["seconds"],
            &row["baseline"]["seconds"],
            &row["crop"]["seconds"],
        ] {
            assert!(t.as_f64().is_some_and(|t| t >= 0.0), "{row}");
        }
    }
    // The second question on an image reuses the first one's encoding.
    assert_eq!(rows[0]["image"], rows[1]["image"]);
    assert!(
        rows[1]["cost"]["vision_images"].as_u64() < rows[0]["cost"]["vision_images"].as_u64(),
        "{} vs {}",
        rows[1]["cost"],
        rows[0]["cost"]
    );

    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    for (key, want) in [
        ("model_name", Value::from(MODEL)),
        ("family", "llava".into()),
        ("task", "textvqa".into()),
        ("format", "reference".into()),
        ("method", "rel-att".into()),
        ("high_res", false.into()),
        ("layer", Value::Null),
        ("placement", "whole-image".into()),
        ("max_new_tokens", 3.into()),
        ("attention_ratio", false.into()),
        ("shards", 1.into()),
    ] {
        assert_eq!(manifest[key], want, "manifest {key}");
    }
    for key in ["vicrop_version", "model", "data", "checkpoint_digest"] {
        assert!(manifest[key].is_string(), "manifest {key}");
    }

    // Done is done: a rerun writes nothing and leaves the file as it was.
    let before = std::fs::read(out.join("results.jsonl")).expect("results");
    let summary = assert_ok(&vicrop_owned(&run_args(out, &[])));
    assert_eq!(summary["written"], 0);
    assert_eq!(summary["resumed"], ITEMS);
    assert_eq!(
        std::fs::read(out.join("results.jsonl")).expect("results"),
        before
    );

    // The library reads the folder as the report does.
    let read = vicrop_eval::run::read_results(out).expect("read_results");
    assert_eq!(read.rows.len(), ITEMS);
    assert_eq!(read.manifest.method, vicrop_eval::run::RunMethod::RelAtt);
    let err = vicrop_eval::run::merge(out, false).expect_err("not sharded");
    assert!(err.to_string().contains("not a sharded run"), "{err}");
}

#[test]
fn a_killed_run_resumes_without_losing_or_repeating_a_row() {
    let (_, want) = reference();
    let out = scratch("killed");
    let results = out.join("results.jsonl");
    let mut child = Command::new(env!("CARGO_BIN_EXE_vicrop"))
        .args(run_args(&out, &[]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vicrop");
    let deadline = Instant::now() + Duration::from_secs(120);
    let finished_early = loop {
        let lines = std::fs::read_to_string(&results)
            .map(|t| t.matches('\n').count())
            .unwrap_or(0);
        if lines >= 3 {
            child.kill().expect("kill");
            let _ = child.wait();
            break false;
        }
        if child.try_wait().expect("poll").is_some() {
            break true;
        }
        assert!(Instant::now() < deadline, "no rows after 120 s");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(
        !finished_early,
        "the run finished before it could be killed"
    );
    let text = std::fs::read_to_string(&results).expect("results");
    let complete = text.matches('\n').count();
    assert!(
        (3..ITEMS).contains(&complete),
        "{complete} rows at the kill"
    );

    let summary = assert_ok(&vicrop_owned(&run_args(&out, &[])));
    assert_eq!(summary["resumed"], complete);
    assert_eq!(summary["written"], ITEMS - complete);
    let got = rows(&results);
    assert_eq!(contents(&got), contents(want));
}

#[test]
fn a_torn_last_line_is_cut_off_and_its_item_runs_again() {
    let (ref_dir, want) = reference();
    let out = scratch("torn");
    std::fs::copy(ref_dir.join("manifest.json"), out.join("manifest.json")).expect("copy");
    let text = std::fs::read_to_string(ref_dir.join("results.jsonl")).expect("results");
    let lines: Vec<&str> = text.lines().collect();
    let mut torn = lines[..4].join("\n");
    torn.push('\n');
    torn.push_str(&lines[4][..lines[4].len() / 2]);
    std::fs::write(out.join("results.jsonl"), torn).expect("write");

    let out_run = vicrop_owned(&run_args(&out, &["--limit", "6"]));
    let summary = assert_ok(&out_run);
    let stderr = String::from_utf8_lossy(&out_run.stderr);
    assert!(
        stderr.contains("torn"),
        "no warning about the torn line: {stderr}"
    );
    assert_eq!(summary["resumed"], 4);
    assert_eq!(summary["written"], 2);
    assert_eq!(
        contents(&rows(&out.join("results.jsonl"))),
        contents(&want[..6])
    );

    // A larger limit goes on from there.
    let summary = assert_ok(&vicrop_owned(&run_args(&out, &["--limit", "7"])));
    assert_eq!(summary["resumed"], 6);
    assert_eq!(summary["written"], 1);
    assert_eq!(
        contents(&rows(&out.join("results.jsonl"))),
        contents(&want[..7])
    );
}

#[test]
fn a_rerun_with_other_settings_is_refused_naming_the_fields() {
    let (ref_dir, _) = reference();
    let out = scratch("refused");
    std::fs::copy(ref_dir.join("manifest.json"), out.join("manifest.json")).expect("copy");
    let cases: [(Vec<String>, &[&str]); 3] = [
        (
            with(run_args(&out, &["--layer", "1"]), "--max-new-tokens", "5"),
            &["max_new_tokens", "layer"],
        ),
        (
            run_args(&out, &["--placement", "map-region"]),
            &["placement", "whole-image", "map-region"],
        ),
        (
            with(run_args(&out, &[]), "--model", s(&fixture(OTHER_MODEL))),
            &["checkpoint_digest", "model_name"],
        ),
    ];
    for (args, needles) in cases {
        let out_run = vicrop_owned(&args);
        for needle in needles {
            assert_clean_failure(&out_run, needle);
        }
        assert_clean_failure(&out_run, "other settings");
    }
    let out_run = vicrop_owned(&with(run_args(&out, &[]), "--method", "grad-att"));
    assert_clean_failure(&out_run, "method");
    assert_clean_failure(&out_run, "\"rel-att\"");
    assert!(
        !out.join("results.jsonl").exists(),
        "a refused run wrote rows"
    );

    // A sharded rerun into an unsharded folder.
    assert_clean_failure(
        &vicrop_owned(&run_args(&out, &["--shard", "0/2"])),
        "shards",
    );
    // Options that do not fit the method.
    let base = with(
        run_args(&scratch("refused-options"), &["--high-res"]),
        "--method",
        "baseline",
    );
    assert_clean_failure(
        &vicrop_owned(&base),
        "--high-res applies to the map methods",
    );
}

#[test]
fn bad_shard_specs_are_clear_errors() {
    let out = scratch("bad-shards");
    for (spec, needle) in [
        ("3/2", "K must be below N"),
        ("2/2", "K must be below N"),
        ("0/0", "N must be at least 1"),
        ("a/b", "is not K/N"),
        ("1", "is not K/N"),
        ("1/-2", "is not K/N"),
    ] {
        let got = vicrop_owned(&run_args(&out, &["--shard", spec]));
        assert_clean_failure(&got, needle);
        assert_clean_failure(&got, spec);
    }
    assert!(std::fs::read_dir(&out).expect("dir").next().is_none());
}

#[test]
fn sharded_runs_merge_into_the_rows_of_one_run() {
    let (_, want) = reference();
    let out = scratch("sharded");
    let s0 = assert_ok(&vicrop_owned(&run_args(&out, &["--shard", "0/2"])));
    assert_eq!(s0["items"], ITEMS / 2);
    for row in rows(&out.join("results-0-of-2.jsonl")) {
        assert_eq!(row["index"].as_u64().expect("index") % 2, 0);
    }

    // Shard 1 has not run: merge refuses and says so; --allow-partial merges what is there.
    let refused = vicrop(&["eval", "merge", s(&out)]);
    assert_clean_failure(&refused, "shard 1/2 never ran");
    let partial = assert_ok(&vicrop(&["eval", "merge", s(&out), "--allow-partial"]));
    assert_eq!(partial["rows"], ITEMS / 2);

    // Shard 1, killed after its first rows by a --limit, then incomplete.
    assert_ok(&vicrop_owned(&run_args(
        &out,
        &["--shard", "1/2", "--limit", "4"],
    )));
    let refused = vicrop(&["eval", "merge", s(&out)]);
    assert_clean_failure(&refused, "different numbers of items");

    let s1 = assert_ok(&vicrop_owned(&run_args(&out, &["--shard", "1/2"])));
    assert_eq!(s1["resumed"], 2);
    let merged = assert_ok(&vicrop(&["eval", "merge", s(&out)]));
    assert_eq!(merged["rows"], ITEMS);
    assert_eq!(contents(&rows(&out.join("results.jsonl"))), contents(want));
    let read = vicrop_eval::run::read_results(&out).expect("read_results");
    assert_eq!(read.rows.len(), ITEMS);

    // A row lost from a shard file: merge lists it.
    let shard1 = out.join("results-1-of-2.jsonl");
    let text = std::fs::read_to_string(&shard1).expect("shard file");
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("\"index\":5,"))
        .collect();
    std::fs::write(&shard1, kept.join("\n") + "\n").expect("write");
    let refused = vicrop(&["eval", "merge", s(&out)]);
    assert_clean_failure(&refused, "missing indices 5");
    // A row written twice: merge refuses.
    let row5 = text
        .lines()
        .find(|l| l.contains("\"index\":5,"))
        .expect("row 5");
    std::fs::write(&shard1, format!("{text}{row5}\n")).expect("write");
    assert_clean_failure(&vicrop(&["eval", "merge", s(&out)]), "repeats");
    // A row of shard 0 in shard 1's file: merge refuses.
    let row0 = std::fs::read_to_string(out.join("results-0-of-2.jsonl")).expect("shard 0");
    let row0 = row0.lines().next().expect("a row");
    std::fs::write(&shard1, format!("{text}{row0}\n")).expect("write");
    assert_clean_failure(
        &vicrop(&["eval", "merge", s(&out)]),
        "does not belong to shard 1/2",
    );
}

/// A small data.json in `dir` on copies of two small scenes: items 0 and 3 fine, item 1's
/// image missing, item 2 without boxes.
fn small_set(dir: &Path) -> PathBuf {
    let images = dir.join("images");
    std::fs::create_dir_all(&images).expect("images");
    for name in ["0005.png", "0010.png"] {
        std::fs::copy(fixture("scenes/images").join(name), images.join(name)).expect("copy");
    }
    let data = dir.join("data.json");
    std::fs::write(
        &data,
        r#"[
 {"id": "a", "question": "What number is on the sign?", "labels": ["594"], "image_path": "0005.png", "boxes": [[105, 237, 519, 460]]},
 {"id": "b", "question": "What number is on the sign?", "labels": ["1"], "image_path": "nope.png", "boxes": [[0, 0, 10, 10]]},
 {"id": "c", "question": "What number is on the sign?", "labels": ["453"], "image_path": "0010.png"},
 {"id": "d", "question": "Which number?", "labels": ["453"], "image_path": "0010.png", "boxes": [[249, 301, 395, 381]]}
]
"#,
    )
    .expect("data.json");
    data
}

fn small_args(data: &Path, images: &Path, out: &Path, method: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "eval",
        "run",
        "--model",
        s(&fixture(MODEL)),
        "--task",
        "textvqa",
        "--format",
        "reference",
        "--data",
        s(data),
        "--images",
        s(images),
        "--method",
        method,
        "--out",
        s(out),
        "--max-new-tokens",
        TOKENS,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

#[test]
fn failed_items_are_recorded_and_the_run_goes_on() {
    let dir = scratch("failures");
    let data = small_set(&dir);
    let images = dir.join("images");

    let out = dir.join("baseline");
    let summary = assert_ok(&vicrop_owned(&small_args(
        &data,
        &images,
        &out,
        "baseline",
        &[],
    )));
    assert_eq!(summary["written"], 4);
    assert_eq!(summary["errors"], 1);
    let got = rows(&out.join("results.jsonl"));
    assert_eq!(got.len(), 4);
    let err = got[1]["error"]
        .as_str()
        .expect("an error for the missing image");
    assert!(err.contains("nope.png"), "{err}");
    assert!(got[1]["baseline"].is_null() && got[1]["image_size"].is_null());
    for i in [0, 2, 3] {
        assert!(got[i]["error"].is_null(), "{}", got[i]);
        assert!(got[i]["baseline"]["text"].is_string());
        assert!(got[i]["crop"].is_null(), "baseline runs have no crop");
    }
    assert!(got[2].get("boxes").is_none(), "no boxes: no field");

    // The image turns up; --retry-errors runs that item again, in place of its error row.
    std::fs::copy(fixture("scenes/images/0010.png"), images.join("nope.png")).expect("copy");
    let summary = assert_ok(&vicrop_owned(&small_args(
        &data,
        &images,
        &out,
        "baseline",
        &["--retry-errors"],
    )));
    assert_eq!(
        (summary["written"].as_u64(), summary["errors"].as_u64()),
        (Some(1), Some(0))
    );
    let again = rows(&out.join("results.jsonl"));
    assert_eq!(again.len(), 4);
    let mut indices: Vec<u64> = again.iter().map(|r| r["index"].as_u64().unwrap()).collect();
    indices.sort_unstable();
    assert_eq!(indices, [0, 1, 2, 3]);
    std::fs::remove_file(images.join("nope.png")).expect("remove");

    // The oracle: items without boxes fail (and the missing image); the crop is the
    // square around the answer box.
    let out = dir.join("oracle");
    let summary = assert_ok(&vicrop_owned(&small_args(
        &data,
        &images,
        &out,
        "oracle",
        &[],
    )));
    assert_eq!(summary["errors"], 2);
    let got = rows(&out.join("results.jsonl"));
    assert!(got[2]["error"]
        .as_str()
        .expect("no box")
        .contains("no answer box"));
    let b: Vec<u64> = got[3]["crop"]["bbox"]
        .as_array()
        .expect("bbox")
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(b[2] - b[0], SIDE, "{b:?}");
    assert!(
        b[0] <= 249 && b[1] <= 301 && b[2] >= 395 && b[3] >= 381,
        "{b:?}"
    );
}

#[test]
fn duplicate_ids_and_bad_data_are_refused_at_load() {
    let dir = scratch("duplicates");
    let data = dir.join("data.json");
    std::fs::write(
        &data,
        r#"[{"id": "x", "question": "Q?", "labels": ["a"], "image_path": "0005.png"},
            {"id": "x", "question": "Q?", "labels": ["b"], "image_path": "0005.png"}]"#,
    )
    .expect("write");
    let out = dir.join("out");
    let got = vicrop_owned(&small_args(&data, &dir, &out, "baseline", &[]));
    assert_clean_failure(&got, "duplicate id \"x\"");
    assert!(
        !out.exists(),
        "nothing is written for data that does not load"
    );
    // An unknown task, and a format name that is not one.
    let args = with(
        small_args(&data, &dir, &out, "baseline", &[]),
        "--task",
        "imagenet",
    );
    assert_clean_failure(&vicrop_owned(&args), "imagenet");
    let args = with(
        small_args(&data, &dir, &out, "baseline", &[]),
        "--format",
        "csv",
    );
    assert_clean_failure(&vicrop_owned(&args), "unknown dataset format");
}

#[test]
fn both_families_and_the_attention_ratio_per_layer() {
    let dir = scratch("families");
    let data = small_set(&dir);
    let images = dir.join("images");
    // InstructBLIP (6 LLM layers), grad-att.
    let out = dir.join("blip");
    let args = small_args(
        &data,
        &images,
        &out,
        "grad-att",
        &["--attention-ratio", "--limit", "1"],
    );
    assert_ok(&vicrop_owned(&with(
        args,
        "--model",
        s(&fixture("instructblip-tiny-a")),
    )));
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).expect("m"))
            .expect("json");
    assert_eq!(manifest["family"], "instructblip");
    let got = rows(&out.join("results.jsonl"));
    let ratio = got[0]["attention_ratio"].as_array().expect("ratios");
    assert_eq!(ratio.len(), 6);
    assert!(ratio
        .iter()
        .all(|r| r.as_f64().is_some_and(|r| r.is_finite() && r > 0.0)));

    // LLaVA: the plain answer with the ratio.
    let out = dir.join("llava-ratio");
    let args = small_args(&data, &images, &out, "baseline", &["--attention-ratio"]);
    assert_ok(&vicrop_owned(&args));
    let got = rows(&out.join("results.jsonl"));
    assert_eq!(
        got[0]["attention_ratio"].as_array().map(Vec::len),
        Some(LAYERS)
    );
    assert!(got[2]["attention_ratio"].is_null(), "no boxes: no ratio");

    // A box beside LLaVA's centre crop (wide.png is 1200x500: the encoder sees x 350..850):
    // no ratio, the answer stands.
    let wide = dir.join("wide.json");
    std::fs::write(
        &wide,
        r#"[{"id": "w", "question": "What is on the left?", "labels": ["car"],
             "image_path": "wide.png", "boxes": [[10, 10, 200, 200]]}]"#,
    )
    .expect("write");
    let out = dir.join("llava-wide");
    let args = small_args(
        &wide,
        &fixture("images"),
        &out,
        "baseline",
        &["--attention-ratio"],
    );
    assert_ok(&vicrop_owned(&args));
    let got = rows(&out.join("results.jsonl"));
    assert!(got[0]["error"].is_null(), "{}", got[0]);
    assert!(got[0]["attention_ratio"].is_null(), "{}", got[0]);
    assert!(got[0]["baseline"]["text"].is_string());
}

#[test]
fn high_res_maps_on_a_large_scene() {
    // Item 0 is 1806x1204: two tile rows.
    let out = scratch("high-res");
    assert_ok(&vicrop_owned(&run_args(
        &out,
        &["--high-res", "--limit", "1", "--save-maps"],
    )));
    let got = rows(&out.join("results.jsonl"));
    assert!(got[0]["error"].is_null(), "{}", got[0]);
    assert!(got[0]["crop"]["bbox"].is_array());
    // --save-maps: the stitched map of two tile rows; the stage times are there.
    let map = &got[0]["map"];
    let (r, c) = (map["rows"].as_u64(), map["cols"].as_u64());
    let values = map["values"].as_array().expect("map values");
    assert_eq!(Some(values.len() as u64), r, "{map}");
    assert!(values
        .iter()
        .all(|v| v.as_array().map(|v| v.len() as u64) == c));
    assert!(got[0]["timings_ms"]["map"]
        .as_f64()
        .is_some_and(|t| t > 0.0));
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).expect("m"))
            .expect("json");
    assert_eq!(manifest["high_res"], true);
}

/// The bundled set end to end: the report reads what the runner wrote (tables, CSV, a plot).
#[test]
fn the_report_reads_a_finished_run() {
    let (dir, _) = reference();
    let out = scratch("report");
    let output = vicrop_owned(&[
        "eval".to_string(),
        "report".to_string(),
        s(dir).to_string(),
        "--out".to_string(),
        s(&out).to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "vicrop eval report failed: {stderr}"
    );
    let markdown = String::from_utf8_lossy(&output.stdout);
    assert!(
        markdown.contains(&format!("| {MODEL} | rel-att |")),
        "{markdown}"
    );
    for file in [
        "report.md",
        "main.csv",
        "by_size.csv",
        "by_size-textvqa.png",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let plot = image::open(out.join("by_size-textvqa.png")).expect("a PNG");
    assert!(plot.width() > 100 && plot.height() > 100);
}
