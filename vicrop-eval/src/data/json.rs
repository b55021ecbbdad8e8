//! Reading the JSON and JSONL files of the loaders: UTF-8 checks, records streamed one at a
//! time (a 300 MB annotation file never becomes one `serde_json::Value`), and field access
//! with messages that name the field and what was found.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;
use serde_json::{Map, Value};

use super::{DataError, Location};

/// The whole file as text: an I/O error or a [`DataError::NotUtf8`] naming where the first
/// bad byte is. A leading UTF-8 byte-order mark is dropped.
pub(crate) fn read_text(file: &Path) -> Result<String, DataError> {
    let bytes = std::fs::read(file).map_err(|source| DataError::Io {
        file: file.to_path_buf(),
        source,
    })?;
    match String::from_utf8(bytes) {
        Ok(mut text) => {
            if text.starts_with('\u{feff}') {
                text.drain(..'\u{feff}'.len_utf8());
            }
            Ok(text)
        }
        Err(e) => {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            Err(DataError::NotUtf8 {
                file: file.to_path_buf(),
                line,
                column: valid.len() - line_start + 1,
            })
        }
    }
}

/// serde_json's message without its " at line L column C" tail.
fn bare_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let tail = format!(" at line {} column {}", e.line(), e.column());
    full.strip_suffix(&tail).unwrap_or(&full).to_string()
}

/// Calls `sink` with every non-blank line of a JSONL text, parsed, and its 1-based line number.
pub(crate) fn for_each_line(
    file: &Path,
    text: &str,
    mut sink: impl FnMut(Location, Value) -> Result<(), DataError>,
) -> Result<(), DataError> {
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = Location::Line(i + 1);
        let value: Value = serde_json::from_str(line).map_err(|e| DataError::Record {
            file: file.to_path_buf(),
            at: at.clone(),
            message: format!(
                "not valid JSON (column {}): {}",
                e.column(),
                bare_message(&e)
            ),
        })?;
        sink(at, value)?;
    }
    Ok(())
}

/// Where the records of a JSON file are.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Container<'k> {
    /// The file is a list of records.
    List,
    /// The file is an object whose key `.0` holds the list of records.
    ListAt(&'k str),
    /// The file is an object mapping ids to records (GQA).
    Map,
}

/// The state shared by the streaming visitors: the caller's sink and the error it returned.
struct Ctx<'s> {
    sink: &'s mut dyn FnMut(Location, Value) -> Result<(), DataError>,
    failed: Option<DataError>,
}

impl Ctx<'_> {
    fn give<E: de::Error>(&mut self, at: Location, value: Value) -> Result<(), E> {
        (self.sink)(at, value).map_err(|e| {
            self.failed = Some(e);
            E::custom("record rejected")
        })
    }
}

/// Streams the records of a JSON text to `sink`, one parsed `Value` at a time, with their
/// [`Location`]. For [`Container::ListAt`], the top-level values of `keep` keys (other than the
/// list) are returned.
pub(crate) fn for_each_record(
    file: &Path,
    text: &str,
    container: Container<'_>,
    keep: &[&str],
    mut sink: impl FnMut(Location, Value) -> Result<(), DataError>,
) -> Result<BTreeMap<String, Value>, DataError> {
    let ctx = RefCell::new(Ctx {
        sink: &mut sink,
        failed: None,
    });
    let mut de = serde_json::Deserializer::from_str(text);
    let result = Top {
        ctx: &ctx,
        container,
        keep,
    }
    .deserialize(&mut de)
    .and_then(|kept| de.end().map(|()| kept));
    if let Some(e) = ctx.borrow_mut().failed.take() {
        return Err(e);
    }
    result.map_err(|e| DataError::Json {
        file: file.to_path_buf(),
        message: match e.classify() {
            Category::Syntax | Category::Eof => format!("not valid JSON: {e}"),
            Category::Data | Category::Io => format!("not the expected layout: {e}"),
        },
    })
}

struct Top<'a, 's, 'k> {
    ctx: &'a RefCell<Ctx<'s>>,
    container: Container<'k>,
    keep: &'a [&'a str],
}

impl<'de> DeserializeSeed<'de> for Top<'_, '_, '_> {
    type Value = BTreeMap<String, Value>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.container {
            Container::List => d
                .deserialize_seq(Records {
                    ctx: self.ctx,
                    list: None,
                })
                .map(|()| BTreeMap::new()),
            Container::ListAt(key) => d.deserialize_map(Holder {
                ctx: self.ctx,
                key,
                keep: self.keep,
            }),
            Container::Map => d
                .deserialize_map(Entries { ctx: self.ctx })
                .map(|()| BTreeMap::new()),
        }
    }
}

/// A list of records (top level, or under `list`).
struct Records<'a, 's> {
    ctx: &'a RefCell<Ctx<'s>>,
    list: Option<&'a str>,
}

impl<'de> Visitor<'de> for Records<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.list {
            Some(key) => write!(f, "a list of records under {key:?}"),
            None => f.write_str("a list of records"),
        }
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(value) = seq.next_element::<Value>()? {
            let at = Location::Index {
                list: self.list.map(str::to_string),
                index,
            };
            self.ctx.borrow_mut().give(at, value)?;
            index += 1;
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Records<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

/// An object holding the list of records under `key`.
struct Holder<'a, 's, 'k> {
    ctx: &'a RefCell<Ctx<'s>>,
    key: &'k str,
    keep: &'a [&'a str],
}

impl<'de> Visitor<'de> for Holder<'_, '_, '_> {
    type Value = BTreeMap<String, Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a JSON object with a list of records under {:?}",
            self.key
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = false;
        let mut kept = BTreeMap::new();
        while let Some(k) = map.next_key::<String>()? {
            if k == self.key && !found {
                found = true;
                map.next_value_seed(Records {
                    ctx: self.ctx,
                    list: Some(self.key),
                })?;
            } else if self.keep.contains(&k.as_str()) {
                kept.insert(k, map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if !found {
            return Err(de::Error::custom(format_args!(
                "the top-level object has no {:?} list",
                self.key
            )));
        }
        Ok(kept)
    }
}

/// An object mapping ids to records.
struct Entries<'a, 's> {
    ctx: &'a RefCell<Ctx<'s>>,
}

impl<'de> Visitor<'de> for Entries<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object mapping question ids to records")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(k) = map.next_key::<String>()? {
            let value = map.next_value::<Value>()?;
            self.ctx.borrow_mut().give(Location::Key(k), value)?;
        }
        Ok(())
    }
}

/// How a JSON value is named in messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The record as a JSON object.
pub(crate) fn object(v: &Value) -> Result<&Map<String, Value>, String> {
    v.as_object()
        .ok_or_else(|| format!("the record is {}, not a JSON object", kind(v)))
}

/// A present, non-null field.
pub(crate) fn required<'v>(obj: &'v Map<String, Value>, key: &str) -> Result<&'v Value, String> {
    match obj.get(key) {
        None => Err(format!("field {key:?} is missing")),
        Some(Value::Null) => Err(format!("field {key:?} is null")),
        Some(v) => Ok(v),
    }
}

/// A string field.
pub(crate) fn string<'v>(obj: &'v Map<String, Value>, key: &str) -> Result<&'v str, String> {
    let v = required(obj, key)?;
    v.as_str()
        .ok_or_else(|| format!("field {key:?} must be a string, found {}", kind(v)))
}

/// A string field that must hold more than whitespace (questions, image names).
pub(crate) fn text<'v>(obj: &'v Map<String, Value>, key: &str) -> Result<&'v str, String> {
    let s = string(obj, key)?;
    if s.trim().is_empty() {
        return Err(format!("field {key:?} is empty"));
    }
    Ok(s)
}

/// An optional string field (absent or null: `None`).
pub(crate) fn opt_string<'v>(
    obj: &'v Map<String, Value>,
    key: &str,
) -> Result<Option<&'v str>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(format!("field {key:?} must be a string, found {}", kind(v))),
    }
}

/// An id field: a string, or an integer written as its decimal digits.
pub(crate) fn id(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match required(obj, key)? {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        Value::String(_) => Err(format!("field {key:?} is empty")),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        v => Err(format!(
            "field {key:?} must be a string or an integer, found {}",
            kind(v)
        )),
    }
}

/// A non-negative integer field (also accepted as a string of digits, as COCO image ids are
/// in some files).
pub(crate) fn uint(obj: &Map<String, Value>, key: &str) -> Result<u64, String> {
    match required(obj, key)? {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("field {key:?} must be a non-negative integer, found {n}")),
        Value::String(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("field {key:?} must be a non-negative integer, found {s:?}")),
        v => Err(format!(
            "field {key:?} must be a non-negative integer, found {}",
            kind(v)
        )),
    }
}

/// An optional non-negative integer field that fits in `u32`.
pub(crate) fn opt_u32(obj: &Map<String, Value>, key: &str) -> Result<Option<u32>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => {
            let n = uint(obj, key)?;
            u32::try_from(n)
                .map(Some)
                .map_err(|_| format!("field {key:?} is too large ({n})"))
        }
    }
}

/// A list of strings.
pub(crate) fn string_list(obj: &Map<String, Value>, key: &str) -> Result<Vec<String>, String> {
    let v = required(obj, key)?;
    let list = v
        .as_array()
        .ok_or_else(|| format!("field {key:?} must be a list of strings, found {}", kind(v)))?;
    list.iter()
        .enumerate()
        .map(|(i, e)| {
            e.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("field {key:?}[{i}] must be a string, found {}", kind(e)))
        })
        .collect()
}

/// The labels of an item: a non-empty list (the error names the field and says it is empty).
pub(crate) fn labels(obj: &Map<String, Value>, key: &str) -> Result<Vec<String>, String> {
    let labels = string_list(obj, key)?;
    if labels.is_empty() {
        return Err(format!(
            "field {key:?} is an empty list: the item has no labels"
        ));
    }
    Ok(labels)
}

/// Four finite numbers.
pub(crate) fn four_numbers(v: &Value, what: &str) -> Result<[f64; 4], String> {
    let list = v
        .as_array()
        .ok_or_else(|| format!("{what} must be a list of 4 numbers, found {}", kind(v)))?;
    if list.len() != 4 {
        return Err(format!(
            "{what} must be a list of 4 numbers, found {} values",
            list.len()
        ));
    }
    let mut out = [0.0; 4];
    for (slot, e) in out.iter_mut().zip(list) {
        *slot = e
            .as_f64()
            .ok_or_else(|| format!("{what} must be a list of 4 numbers, found {}", kind(e)))?;
    }
    Ok(out)
}
