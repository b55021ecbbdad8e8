//! The dataset loaders (`vicrop_eval::data`): each format loads its sample in
//! `tests/fixtures/datasets/<format>/` (the benchmark's own layout and field names), and each
//! kind of bad input is a clear error naming the file and the line, index or key, never a
//! panic. A missing image is not a load error but shows in `missing_images`.

mod common;

use std::path::{Path, PathBuf};

use common::fixture;
use vicrop_eval::data::{DataError, Dataset, Format, LoadOptions};

fn sample(format: &str) -> PathBuf {
    fixture("datasets").join(format)
}

fn load(format: Format, data: &Path) -> Dataset {
    Dataset::load(format, data, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("loading {}: {e}", data.display()))
}

fn load_err(format: Format, data: &Path) -> String {
    load_err_with(format, data, &LoadOptions::default())
}

fn load_err_with(format: Format, data: &Path, options: &LoadOptions) -> String {
    match Dataset::load(format, data, options) {
        Ok(d) => panic!(
            "{} loaded ({} items) but should not",
            data.display(),
            d.len()
        ),
        Err(e) => {
            // Shown with --nocapture: the messages users see.
            eprintln!("{e}");
            e.to_string()
        }
    }
}

/// Asserts that `message` contains every one of `needles`.
fn assert_has(message: &str, needles: &[&str]) {
    for n in needles {
        assert!(message.contains(n), "{message:?} lacks {n:?}");
    }
}

fn write(dir: &Path, name: &str, content: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, content).expect("write");
    path
}

fn no_missing_images(d: &Dataset) {
    let missing = d.missing_images();
    assert!(missing.is_empty(), "missing images: {missing:?}");
}

// ---- each format loads its sample -------------------------------------------------------

#[test]
fn reference_sample() {
    let root = sample("reference");
    let d = load(Format::Reference, &root);
    assert_eq!(d.file, root.join("data.json"));
    assert_eq!(d.image_root, root.join("images"));
    assert_eq!(d.len(), 3);
    let [a, b, c] = &d.items[..] else {
        panic!("3 items")
    };
    assert_eq!(a.id, "0000000000");
    assert_eq!(a.image, root.join("images/sign.png"));
    assert_eq!(a.labels.len(), 10);
    assert_eq!(a.short_question, None);
    assert_eq!(a.map_question(), a.question);
    // `labels` as one string; no `image_path`: `{image_id}.jpg`.
    assert_eq!(b.labels, ["no"]);
    assert_eq!(b.image, root.join("images/1001.jpg"));
    // short_question, the options/boxes extensions; the reference's output `bbox` is ignored.
    assert_eq!(
        c.short_question.as_deref(),
        Some("What is the colour of the sign?")
    );
    assert_eq!(c.map_question(), "What is the colour of the sign?");
    assert_eq!(
        c.options.as_deref(),
        Some(&["(A) blue".to_string(), "(B) red".to_string()][..])
    );
    assert_eq!(c.boxes, vec![[4.0, 4.0, 20.0, 12.0]]);
    no_missing_images(&d);
    // The file itself works as --data too.
    assert_eq!(load(Format::Reference, &root.join("data.json")), d);
}

#[test]
fn textvqa_sample_with_answer_boxes() {
    let root = sample("textvqa");
    let d = load(Format::TextVqa, &root);
    assert_eq!(d.file, root.join("TextVQA_0.5.1_val.json"));
    assert_eq!(d.extra_files, vec![root.join("TextVQA_GT_bbox.jsonl")]);
    assert_eq!(d.len(), 2);
    let a = &d.items[0];
    assert_eq!(a.id, "34602");
    assert_eq!(a.question, "what is written on the dark label?");
    assert_eq!(a.image, root.join("train_images/0a1b2c3d4e5f6071.jpg"));
    assert_eq!(a.labels.len(), 10);
    assert_eq!(a.labels[3], "acme co");
    assert_eq!(a.image_size, Some((48, 32)));
    // [x, y, w, h] = [10, 6, 20, 8] -> corners.
    assert_eq!(a.boxes, vec![[10.0, 6.0, 30.0, 14.0]]);
    let b = &d.items[1];
    assert_eq!(b.id, "34603");
    assert!(b.boxes.is_empty());
    assert_eq!(b.image_size, Some((32, 48)));
    no_missing_images(&d);
}

#[test]
fn textvqa_boxes_option() {
    let tmp = tempfile::tempdir().expect("tmp");
    let questions = std::fs::read(sample("textvqa").join("TextVQA_0.5.1_val.json")).unwrap();
    let file = write(tmp.path(), "TextVQA_0.5.1_val.json", questions);
    // No box file next to it: no boxes.
    let d = load(Format::TextVqa, &file);
    assert!(d.items.iter().all(|i| i.boxes.is_empty()));
    assert!(d.extra_files.is_empty());
    // A box set given as a JSON list, two rows for one question (integer ids are fine too).
    let boxes = write(
        tmp.path(),
        "boxes.json",
        r#"[{"dataset_id": 34603, "bbox": [1, 2, 3, 4]}, {"dataset_id": "34603", "bbox": [0, 0, 5, 5]},
            {"dataset_id": "999", "bbox": [0, 0, 1, 1]}]"#,
    );
    let options = LoadOptions {
        boxes: Some(boxes.clone()),
        ..LoadOptions::default()
    };
    let d = Dataset::load(Format::TextVqa, &file, &options).expect("load");
    assert_eq!(d.extra_files, vec![boxes]);
    assert!(d.items[0].boxes.is_empty());
    assert_eq!(
        d.items[1].boxes,
        vec![[1.0, 2.0, 4.0, 6.0], [0.0, 0.0, 5.0, 5.0]]
    );
}

#[test]
fn vqav2_sample() {
    let root = sample("vqav2");
    let d = load(Format::VqaV2, &root);
    assert_eq!(
        d.file,
        root.join("v2_OpenEnded_mscoco_val2014_questions.json")
    );
    assert_eq!(
        d.extra_files,
        vec![root.join("v2_mscoco_val2014_annotations.json")]
    );
    assert_eq!(d.len(), 3);
    let a = &d.items[0];
    assert_eq!(a.id, "42000");
    assert_eq!(a.image, root.join("val2014/COCO_val2014_000000000042.jpg"));
    assert_eq!(a.labels.len(), 10);
    assert_eq!(a.labels[2], "violet");
    assert_eq!(a.category.as_deref(), Some("other"));
    assert_eq!(d.items[1].category.as_deref(), Some("yes/no"));
    assert_eq!(
        d.items[2].image,
        root.join("val2014/COCO_val2014_000000000073.jpg")
    );
    no_missing_images(&d);
    assert_eq!(
        load(
            Format::VqaV2,
            &root.join("v2_OpenEnded_mscoco_val2014_questions.json")
        ),
        d
    );
}

#[test]
fn gqa_sample() {
    let root = sample("gqa");
    let d = load(Format::Gqa, &root);
    assert_eq!(d.len(), 2);
    let a = &d.items[0];
    assert_eq!(a.id, "20968379");
    assert_eq!(a.question, "What color is the picture?");
    assert_eq!(a.labels, ["brown"]);
    assert_eq!(a.image, root.join("images/n100001.jpg"));
    assert_eq!(d.items[1].labels, ["yes"]);
    no_missing_images(&d);
}

#[test]
fn aokvqa_sample() {
    let root = sample("aokvqa");
    let d = load(Format::AOkVqa, &root);
    assert_eq!(d.len(), 2);
    let a = &d.items[0];
    assert_eq!(a.id, "2aA8Fh3xYzQvLm5nPq7rSt");
    assert_eq!(a.image, root.join("val2017/000000000139.jpg"));
    assert_eq!(a.labels.len(), 10);
    assert_eq!(a.labels[0], "gardening");
    assert_eq!(
        a.options.as_deref(),
        Some(&["painting", "gardening", "cooking", "swimming"].map(String::from)[..])
    );
    no_missing_images(&d);
}

#[test]
fn pope_sample_file_and_folder() {
    let root = sample("pope");
    let options = LoadOptions {
        images: Some(root.join("val2014")),
        ..LoadOptions::default()
    };
    let file = root.join("coco_pope_random.json");
    let d = Dataset::load(Format::Pope, &file, &options).expect("load");
    assert_eq!(d.len(), 3);
    let ids: Vec<&str> = d.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3"]);
    let a = &d.items[0];
    assert_eq!(a.question, "Is there a cup in the image?");
    assert_eq!(a.labels, ["yes"]);
    assert_eq!(a.category.as_deref(), Some("coco_pope_random"));
    assert_eq!(a.image, root.join("val2014/COCO_val2014_000000000164.jpg"));
    no_missing_images(&d);

    // A folder: every file, ids prefixed with the file's stem.
    let d = Dataset::load(Format::Pope, &root, &options).expect("load");
    let ids: Vec<&str> = d.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "coco_pope_random/1",
            "coco_pope_random/2",
            "coco_pope_random/3"
        ]
    );

    // Without --images the names are taken next to the file: all missing, reported per item.
    let d = load(Format::Pope, &file);
    let missing = d.missing_images();
    assert_eq!(missing.len(), 3);
    assert_eq!(missing[0].id, "1");
    assert_eq!(missing[0].reason, "does not exist");
}

#[test]
fn vstar_sample() {
    let root = sample("vstar");
    let d = load(Format::VStar, &root);
    assert_eq!(d.file, root.join("test_questions.jsonl"));
    assert_eq!(d.len(), 2);
    let a = &d.items[0];
    assert_eq!(a.id, "0");
    assert_eq!(a.image, root.join("direct_attributes/sa_101.jpg"));
    assert!(a
        .question
        .starts_with("What is the colour of the small square?\n(A) white\n"));
    assert_eq!(
        a.short_question.as_deref(),
        Some("What is the colour of the small square?")
    );
    assert_eq!(
        a.options.as_deref(),
        Some(&["(A) white", "(B) dark blue", "(C) orange", "(D) green"].map(String::from)[..])
    );
    assert_eq!(a.labels, ["B"]);
    assert_eq!(a.category.as_deref(), Some("direct_attributes"));
    // The annotation's [x, y, w, h] = [40, 30, 8, 8].
    assert_eq!(a.boxes, vec![[40.0, 30.0, 48.0, 38.0]]);
    // No "label" on the line: the annotation's first option ("left") is option (B).
    let b = &d.items[1];
    assert_eq!(b.labels, ["B"]);
    assert_eq!(
        b.boxes,
        vec![[4.0, 20.0, 12.0, 28.0], [0.0, 0.0, 64.0, 48.0]]
    );
    no_missing_images(&d);
    assert_eq!(
        vicrop_eval::data::vstar::option_lines(&a.question),
        a.options.clone().unwrap()
    );
}

#[test]
fn docvqa_sample() {
    let root = sample("docvqa");
    let d = load(Format::DocVqa, &root);
    assert_eq!(d.file, root.join("val_v1.0_withQT.json"));
    assert_eq!(d.len(), 2);
    let a = &d.items[0];
    assert_eq!(a.id, "51001");
    assert_eq!(a.image, root.join("documents/abcd0001_1.png"));
    assert_eq!(a.labels, ["TITLE", "title"]);
    assert_eq!(d.items[1].labels, ["1/8/93"]);
    no_missing_images(&d);
}

#[test]
fn images_option_replaces_the_root() {
    let root = sample("reference");
    let options = LoadOptions {
        images: Some(PathBuf::from("/elsewhere")),
        ..LoadOptions::default()
    };
    let d = Dataset::load(Format::Reference, &root, &options).expect("load");
    assert_eq!(d.image_root, PathBuf::from("/elsewhere"));
    assert_eq!(d.items[0].image, PathBuf::from("/elsewhere/sign.png"));
}

#[test]
fn format_names() {
    for f in Format::ALL {
        assert_eq!(f.name().parse::<Format>(), Ok(f));
        assert_eq!(f.to_string(), f.name());
    }
    assert_eq!("TextVQA".parse::<Format>(), Ok(Format::TextVqa));
    assert_eq!("A-OKVQA".parse::<Format>(), Ok(Format::AOkVqa));
    let e = "coco".parse::<Format>().unwrap_err().to_string();
    assert_has(
        &e,
        &[
            "unknown dataset format \"coco\"",
            "reference, textvqa, vqav2, gqa, aokvqa, pope, vstar, docvqa",
        ],
    );
}

// ---- bad input --------------------------------------------------------------------------

#[test]
fn missing_image_is_reported_not_an_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    write(tmp.path(), "images/here.png", b"not decoded");
    std::fs::create_dir_all(tmp.path().join("images/a_folder.png")).unwrap();
    let file = write(
        tmp.path(),
        "data.json",
        r#"[{"id": "1", "question": "q?", "labels": ["a"], "image_path": "here.png"},
            {"id": "2", "question": "q?", "labels": ["a"], "image_path": "gone.png"},
            {"id": "3", "question": "q?", "labels": ["a"], "image_path": "a_folder.png"}]"#,
    );
    let d = load(Format::Reference, &file);
    assert_eq!(d.len(), 3);
    assert!(d.items[0].check_image().is_ok());
    let missing = d.missing_images();
    assert_eq!(missing.len(), 2);
    assert_eq!(missing[0].id, "2");
    assert_eq!(missing[0].path, tmp.path().join("images/gone.png"));
    assert_has(
        &missing[0].to_string(),
        &["item \"2\"", "gone.png", "does not exist"],
    );
    assert_eq!(missing[1].id, "3");
    assert_eq!(missing[1].reason, "is not a file");
}

#[test]
fn duplicate_ids_name_both_records() {
    let tmp = tempfile::tempdir().expect("tmp");
    // JSON list: indices.
    let file = write(
        tmp.path(),
        "data.json",
        r#"[{"id": "7", "question": "a?", "labels": ["x"], "image_path": "a.png"},
            {"id": "8", "question": "b?", "labels": ["x"], "image_path": "b.png"},
            {"id": 7, "question": "c?", "labels": ["x"], "image_path": "c.png"}]"#,
    );
    let e = load_err(Format::Reference, &file);
    assert_has(
        &e,
        &[
            "data.json",
            "duplicate id \"7\"",
            "record [0] and record [2]",
        ],
    );

    // JSONL: lines.
    let file = write(
        tmp.path(),
        "pope.jsonl",
        "{\"question_id\": 1, \"image\": \"a.jpg\", \"text\": \"Is there a cat?\", \"label\": \"yes\"}\n\
         \n\
         {\"question_id\": 1, \"image\": \"b.jpg\", \"text\": \"Is there a dog?\", \"label\": \"no\"}\n",
    );
    let e = load_err(Format::Pope, &file);
    assert_has(
        &e,
        &["pope.jsonl", "duplicate id \"1\"", "line 1 and line 3"],
    );

    // A JSON object with a repeated key (GQA).
    let file = write(
        tmp.path(),
        "gqa.json",
        r#"{"5": {"imageId": "n1", "question": "a?", "answer": "x"},
            "5": {"imageId": "n2", "question": "b?", "answer": "y"}}"#,
    );
    let e = load_err(Format::Gqa, &file);
    assert_has(
        &e,
        &[
            "gqa.json",
            "duplicate id \"5\"",
            "record \"5\" and record \"5\"",
        ],
    );

    // Nested list (DocVQA `data`).
    let file = write(
        tmp.path(),
        "doc.json",
        r#"{"data": [{"questionId": 3, "question": "a?", "image": "documents/a.png", "answers": ["x"]},
                     {"questionId": 3, "question": "b?", "image": "documents/b.png", "answers": ["y"]}]}"#,
    );
    let e = load_err(Format::DocVqa, &file);
    assert_has(
        &e,
        &["doc.json", "duplicate id \"3\"", "data[0] and data[1]"],
    );
}

#[test]
fn empty_labels_are_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let file = write(
        tmp.path(),
        "data.json",
        r#"[{"id": "1", "question": "a?", "labels": ["x"], "image_path": "a.png"},
            {"id": "2", "question": "b?", "labels": [], "image_path": "b.png"}]"#,
    );
    let e = load_err(Format::Reference, &file);
    assert_has(
        &e,
        &[
            "data.json",
            "record [1]",
            "field \"labels\" is an empty list",
        ],
    );

    let file = write(
        tmp.path(),
        "data.json",
        r#"[{"id": "1", "question": "a?", "labels": "", "image_path": "a.png"}]"#,
    );
    let e = load_err(Format::Reference, &file);
    assert_has(&e, &["record [0]", "field \"labels\" is an empty string"]);

    let file = write(
        tmp.path(),
        "TextVQA_0.5.1_val.json",
        r#"{"data": [{"question_id": 1, "image_id": "ab", "question": "q?", "answers": []}]}"#,
    );
    let e = load_err(Format::TextVqa, &file);
    assert_has(
        &e,
        &[
            "TextVQA_0.5.1_val.json",
            "data[0]",
            "\"answers\" is an empty list",
        ],
    );

    // DocVQA's test file has no answers at all.
    let file = write(
        tmp.path(),
        "test_v1.0.json",
        r#"{"data": [{"questionId": 1, "question": "q?", "image": "documents/a.png"}]}"#,
    );
    let e = load_err(Format::DocVqa, &file);
    assert_has(
        &e,
        &["test_v1.0.json", "data[0]", "field \"answers\" is missing"],
    );

    // VQAv2: the annotations file is named.
    let dir = tmp.path().join("vqa");
    write(
        &dir,
        "v2_OpenEnded_mscoco_val2014_questions.json",
        r#"{"data_subtype": "val2014", "questions": [{"image_id": 1, "question": "q?", "question_id": 10}]}"#,
    );
    write(
        &dir,
        "v2_mscoco_val2014_annotations.json",
        r#"{"annotations": [{"question_id": 10, "image_id": 1, "answers": []}]}"#,
    );
    let e = load_err(Format::VqaV2, &dir);
    assert_has(
        &e,
        &[
            "v2_mscoco_val2014_annotations.json",
            "annotations[0]",
            "\"answers\" is an empty list",
        ],
    );

    // An empty file of records is an error too.
    let file = write(tmp.path(), "empty.json", "[]");
    let e = load_err(Format::Reference, &file);
    assert_has(&e, &["empty.json", "holds no items"]);
}

#[test]
fn non_utf8_text_is_an_error_naming_the_file_and_place() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut bytes = b"{\"question_id\": 1, \"image\": \"a.jpg\", \"text\": \"Is there a cat?\", \"label\": \"yes\"}\n".to_vec();
    bytes.extend_from_slice(b"{\"question_id\": 2, \"image\": \"b.jpg\", \"text\": \"Is there a caf\xe9?\", \"label\": \"no\"}\n");
    let file = write(tmp.path(), "latin1.jsonl", bytes);
    let e = load_err(Format::Pope, &file);
    assert_has(&e, &["latin1.jsonl", "not UTF-8", "line 2, column 61"]);

    let file = write(
        tmp.path(),
        "data.json",
        b"[{\"id\": \"1\", \"question\": \"\xff?\", \"labels\": [\"x\"], \"image_path\": \"a.png\"}]",
    );
    let e = load_err(Format::Reference, &file);
    assert_has(&e, &["data.json", "not UTF-8", "line 1, column 27"]);

    // A UTF-8 byte-order mark is fine.
    let mut bom = "\u{feff}".as_bytes().to_vec();
    bom.extend_from_slice(
        br#"[{"id": "1", "question": "q?", "labels": ["x"], "image_path": "a.png"}]"#,
    );
    let file = write(tmp.path(), "bom.json", bom);
    assert_eq!(load(Format::Reference, &file).len(), 1);
}

#[test]
fn malformed_jsonl_records_name_the_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let good = r#"{"question_id": 1, "image": "a.jpg", "text": "Is there a cat?", "label": "yes"}"#;
    let cases: [(&str, &[&str]); 6] = [
        (
            r#"{"question_id": 2, "image": "b.jpg", "text": "Is there"#,
            &["line 2", "not valid JSON", "EOF while parsing"],
        ),
        (
            r#"{"question_id": 2, "image": "b.jpg", "text": "Is there a dog?"}"#,
            &["line 2", "field \"label\" is missing"],
        ),
        (
            r#"{"question_id": [2], "image": "b.jpg", "text": "Is there a dog?", "label": "no"}"#,
            &[
                "line 2",
                "field \"question_id\" must be a string or an integer, found a list",
            ],
        ),
        (
            r#"{"question_id": 2, "image": "b.jpg", "text": "Is there a dog?", "label": "maybe"}"#,
            &[
                "line 2",
                "\"label\" must be \"yes\" or \"no\", found \"maybe\"",
            ],
        ),
        (
            r#"{"question_id": 2, "image": "b.jpg", "text": "   ", "label": "no"}"#,
            &["line 2", "field \"text\" is empty"],
        ),
        (
            r#"["question_id", 2]"#,
            &["line 2", "the record is a list, not a JSON object"],
        ),
    ];
    for (bad, needles) in cases {
        let file = write(tmp.path(), "pope.jsonl", format!("{good}\n{bad}\n"));
        let e = load_err(Format::Pope, &file);
        assert_has(&e, &["pope.jsonl"]);
        assert_has(&e, needles);
    }
}

#[test]
fn malformed_json_records_name_the_index_or_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Syntax error: serde_json's line and column.
    let file = write(
        tmp.path(),
        "data.json",
        "[\n  {\"id\": \"1\", \"question\": \"q?\",\n  \"labels\": [\"x\"] \"image_path\": \"a.png\"}\n]",
    );
    let e = load_err(Format::Reference, &file);
    assert_has(&e, &["data.json", "not valid JSON", "line 3 column"]);

    // Wrong top level.
    let file = write(
        tmp.path(),
        "TextVQA_0.5.1_val.json",
        r#"[{"question_id": 1}]"#,
    );
    let e = load_err(Format::TextVqa, &file);
    assert_has(
        &e,
        &[
            "TextVQA_0.5.1_val.json",
            "not the expected layout",
            "list of records under \"data\"",
        ],
    );
    let file = write(
        tmp.path(),
        "TextVQA_0.5.1_val.json",
        r#"{"dataset_type": "val"}"#,
    );
    let e = load_err(Format::TextVqa, &file);
    assert_has(&e, &["the top-level object has no \"data\" list"]);

    // A wrong field type, by index.
    let file = write(
        tmp.path(),
        "aokvqa_v1p0_val.json",
        r#"[{"split": "val", "image_id": 1, "question_id": "a", "question": "q?", "direct_answers": ["x"]},
            {"split": "val", "image_id": "one", "question_id": "b", "question": "q?", "direct_answers": ["x"]}]"#,
    );
    let e = load_err(Format::AOkVqa, &file);
    assert_has(
        &e,
        &[
            "aokvqa_v1p0_val.json",
            "record [1]",
            "field \"image_id\" must be a non-negative integer, found \"one\"",
        ],
    );
    let file = write(
        tmp.path(),
        "aokvqa_v1p0_val.json",
        r#"[{"split": "val", "image_id": 1, "question_id": "a", "question": "q?", "choices": ["x", "y"],
             "correct_choice_idx": 2, "direct_answers": ["x"]}]"#,
    );
    let e = load_err(Format::AOkVqa, &file);
    assert_has(
        &e,
        &[
            "record [0]",
            "\"correct_choice_idx\" is 2 but there are 2 choices",
        ],
    );

    // By key (GQA), a label element of the wrong type (reference).
    let file = write(
        tmp.path(),
        "gqa.json",
        r#"{"11": {"imageId": "n1", "question": "a?", "answer": "x"}, "12": {"imageId": "n2", "question": "b?"}}"#,
    );
    let e = load_err(Format::Gqa, &file);
    assert_has(
        &e,
        &["gqa.json", "record \"12\"", "field \"answer\" is missing"],
    );
    let file = write(
        tmp.path(),
        "data.json",
        r#"[{"id": "1", "question": "q?", "labels": ["x", 3], "image_path": "a.png"}]"#,
    );
    let e = load_err(Format::Reference, &file);
    assert_has(
        &e,
        &[
            "record [0]",
            "field \"labels\"[1] must be a string, found a number",
        ],
    );
    let file = write(
        tmp.path(),
        "data.json",
        r#"[{"id": "1", "question": "q?", "labels": ["x"]}]"#,
    );
    let e = load_err(Format::Reference, &file);
    assert_has(&e, &["record [0]", "field \"image_path\" is missing"]);
    let file = write(
        tmp.path(),
        "data.json",
        r#"[{"id": "1", "question": "q?", "labels": ["x"], "image_path": "a.png", "boxes": [[5, 5, 1, 9]]}]"#,
    );
    let e = load_err(Format::Reference, &file);
    assert_has(&e, &["record [0]", "field \"boxes\"[0]", "x0 < x1"]);
}

#[test]
fn textvqa_bad_box_file_names_the_box_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let questions = std::fs::read(sample("textvqa").join("TextVQA_0.5.1_val.json")).unwrap();
    let file = write(tmp.path(), "TextVQA_0.5.1_val.json", questions);
    write(
        tmp.path(),
        "TextVQA_GT_bbox.jsonl",
        "{\"dataset_id\": \"34602\", \"bbox\": [1, 2, 3, 4]}\n{\"dataset_id\": \"34603\", \"bbox\": [1, 2, 0, 4]}\n",
    );
    let e = load_err(Format::TextVqa, &file);
    assert_has(&e, &["TextVQA_GT_bbox.jsonl", "line 2", "has no area"]);
    write(
        tmp.path(),
        "TextVQA_GT_bbox.jsonl",
        "{\"dataset_id\": \"34602\", \"bbox\": [1, 2, 3]}\n",
    );
    let e = load_err(Format::TextVqa, &file);
    assert_has(
        &e,
        &[
            "TextVQA_GT_bbox.jsonl",
            "line 1",
            "field \"bbox\" must be a list of 4 numbers, found 3 values",
        ],
    );
    // A box file for another format is refused.
    let options = LoadOptions {
        boxes: Some(tmp.path().join("TextVQA_GT_bbox.jsonl")),
        ..LoadOptions::default()
    };
    let e = load_err_with(Format::Gqa, &sample("gqa"), &options);
    assert_has(&e, &["only read for textvqa, not for gqa"]);
}

#[test]
fn vqav2_question_without_annotation() {
    let tmp = tempfile::tempdir().expect("tmp");
    let q = write(
        tmp.path(),
        "v2_OpenEnded_mscoco_val2014_questions.json",
        r#"{"data_subtype": "val2014", "questions": [{"image_id": 1, "question": "q?", "question_id": 10},
                                                     {"image_id": 1, "question": "r?", "question_id": 11}]}"#,
    );
    write(
        tmp.path(),
        "v2_mscoco_val2014_annotations.json",
        r#"{"annotations": [{"question_id": 10, "image_id": 1, "answers": [{"answer": "x"}]}]}"#,
    );
    let e = load_err(Format::VqaV2, &q);
    assert_has(
        &e,
        &[
            "v2_OpenEnded_mscoco_val2014_questions.json",
            "questions[1]",
            "question_id 11 has no annotation in",
            "v2_mscoco_val2014_annotations.json",
        ],
    );
    // No data_subtype: the images cannot be named.
    write(
        tmp.path(),
        "v2_OpenEnded_mscoco_val2014_questions.json",
        r#"{"questions": [{"image_id": 1, "question": "q?", "question_id": 10}]}"#,
    );
    let e = load_err(Format::VqaV2, &q);
    assert_has(&e, &["no \"data_subtype\""]);
}

#[test]
fn vstar_bad_options_labels_and_annotations() {
    let tmp = tempfile::tempdir().expect("tmp");
    let line = |text: &str, label: Option<&str>| {
        let mut v = serde_json::json!({
            "image": "direct_attributes/sa_1.jpg",
            "text": text,
            "category": "direct_attributes",
            "question_id": 5,
        });
        if let Some(l) = label {
            v["label"] = serde_json::json!(l);
        }
        format!("{v}\n")
    };
    let text = "What colour?\n(A) red\n(B) blue\nAnswer with the option's letter.";
    let file = write(tmp.path(), "test_questions.jsonl", line(text, Some("C")));
    let e = load_err(Format::VStar, &file);
    assert_has(
        &e,
        &[
            "test_questions.jsonl",
            "line 1",
            "\"label\" is \"C\", not one of the option letters A-B",
        ],
    );
    let file = write(
        tmp.path(),
        "test_questions.jsonl",
        line("What colour?\n(A) red\nB) blue\nAnswer.", Some("A")),
    );
    let e = load_err(Format::VStar, &file);
    assert_has(&e, &["line 1", "option line 2 is \"B) blue\"", "\"(B) \""]);

    // No label and no annotation to take it from.
    let file = write(tmp.path(), "test_questions.jsonl", line(text, None));
    let e = load_err(Format::VStar, &file);
    assert_has(&e, &["line 1", "field \"label\" is missing", "sa_1.json"]);

    // A malformed annotation is named, with the line that uses it.
    write(
        tmp.path(),
        "direct_attributes/sa_1.json",
        r#"{"bbox": [[1, 2, 3]], "options": ["blue", "red"]}"#,
    );
    let file = write(tmp.path(), "test_questions.jsonl", line(text, Some("A")));
    let e = load_err(Format::VStar, &file);
    assert_has(
        &e,
        &[
            "test_questions.jsonl",
            "line 1",
            "sa_1.json",
            "field \"bbox\"[0] must be a list of 4 numbers",
        ],
    );
    // A good one gives the label when the line has none.
    write(
        tmp.path(),
        "direct_attributes/sa_1.json",
        r#"{"bbox": [[1, 2, 3, 4]], "options": ["blue", "red"]}"#,
    );
    let file = write(tmp.path(), "test_questions.jsonl", line(text, None));
    let d = load(Format::VStar, &file);
    assert_eq!(d.items[0].labels, ["B"]);
    assert_eq!(d.items[0].boxes, vec![[1.0, 2.0, 4.0, 6.0]]);
}

#[test]
fn layout_errors() {
    let tmp = tempfile::tempdir().expect("tmp");
    let e = load_err(Format::Reference, tmp.path());
    assert_has(&e, &["is a folder without data.json"]);
    let e = load_err(Format::DocVqa, tmp.path());
    assert_has(&e, &["val_v1.0_withQT.json or val_v1.0.json"]);
    let e = load_err(Format::VqaV2, tmp.path());
    assert_has(&e, &["holds no *_questions.json file"]);
    let e = load_err(Format::Pope, tmp.path());
    assert_has(&e, &["holds no POPE *.json or *.jsonl file"]);
    let e = load_err(Format::Gqa, &tmp.path().join("nope.json"));
    assert_has(&e, &["gqa data", "nope.json does not exist"]);

    // Two questions files in one folder: the user must pick one.
    write(
        tmp.path(),
        "v2_OpenEnded_mscoco_train2014_questions.json",
        "{}",
    );
    write(
        tmp.path(),
        "v2_OpenEnded_mscoco_val2014_questions.json",
        "{}",
    );
    let e = load_err(Format::VqaV2, tmp.path());
    assert_has(
        &e,
        &[
            "holds 2 *_questions.json files",
            "pass the questions file itself",
        ],
    );

    // A file that cannot be read as a file.
    let err = Dataset::load(
        Format::Reference,
        &tmp.path().join("sub"),
        &LoadOptions::default(),
    );
    assert!(matches!(err, Err(DataError::Layout(_))));
}
