//! Answer normalisation exactly as the official evaluation code does it.
//!
//! Two normalisers exist upstream and they differ:
//!
//! - VQAv2's `vqaEval.py` (GT-Vision-Lab/VQA, `PythonEvaluationTools/vqaEvaluation/vqaEval.py`,
//!   commit a013f00): [`vqa_process_punctuation`] then [`vqa_process_digit_article`]
//!   ([`vqa_normalize`]). Its evaluation loop first replaces newlines and tabs by spaces and
//!   strips ([`vqa_clean_whitespace`]), and normalises only when the human answers disagree
//!   (see [`crate::score::metrics::vqav2_accuracy`]). The ViCrop reference
//!   (saccharomycetes/mllms_know `get_score.py::process_text`) applies the same two steps,
//!   always, without the whitespace cleaning ([`reference_normalize`]).
//! - The EvalAI answer processor TextVQA's evaluator uses (facebookresearch/mmf
//!   `mmf/utils/m4c_evaluators.py::EvalAIAnswerProcessor`): lower-cases, deletes every comma and
//!   question mark and splits `'s` off *before* the punctuation step ([`evalai_normalize`]), so
//!   `1,000` becomes `1000` where vqaEval gives `1000` only by its digit-comma rule, and its
//!   comma-between-digits rule can never fire.
//!
//! Python semantics kept on purpose: `str.split()`/`str.strip()` whitespace (which includes
//! U+001C..U+001F, unlike Rust's [`char::is_whitespace`]), `\d` matching any Unicode decimal
//! digit (category Nd, Unicode 14 as in Python 3.11), the period regex
//! `(?!<=\d)(\.)(?!\d)` whose first look-ahead is a typo that never fires, and
//! `periodStrip.sub("", text, re.UNICODE)`, which passes `re.UNICODE` (= 32) as the *count*:
//! at most 32 periods are removed.

/// Whether Python's `str.isspace()` holds for `c` (the set `str.split()` and `str.strip()`
/// split and strip on).
pub fn is_py_space(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | '\u{1c}'..=' '
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// Unicode decimal digits (general category Nd), Unicode 14.0: what Python 3.11's `re` matches
/// with `\d` in a str pattern.
const DECIMAL_RANGES: &[(u32, u32)] = &[
    (0x30, 0x39),
    (0x660, 0x669),
    (0x6F0, 0x6F9),
    (0x7C0, 0x7C9),
    (0x966, 0x96F),
    (0x9E6, 0x9EF),
    (0xA66, 0xA6F),
    (0xAE6, 0xAEF),
    (0xB66, 0xB6F),
    (0xBE6, 0xBEF),
    (0xC66, 0xC6F),
    (0xCE6, 0xCEF),
    (0xD66, 0xD6F),
    (0xDE6, 0xDEF),
    (0xE50, 0xE59),
    (0xED0, 0xED9),
    (0xF20, 0xF29),
    (0x1040, 0x1049),
    (0x1090, 0x1099),
    (0x17E0, 0x17E9),
    (0x1810, 0x1819),
    (0x1946, 0x194F),
    (0x19D0, 0x19D9),
    (0x1A80, 0x1A89),
    (0x1A90, 0x1A99),
    (0x1B50, 0x1B59),
    (0x1BB0, 0x1BB9),
    (0x1C40, 0x1C49),
    (0x1C50, 0x1C59),
    (0xA620, 0xA629),
    (0xA8D0, 0xA8D9),
    (0xA900, 0xA909),
    (0xA9D0, 0xA9D9),
    (0xA9F0, 0xA9F9),
    (0xAA50, 0xAA59),
    (0xABF0, 0xABF9),
    (0xFF10, 0xFF19),
    (0x104A0, 0x104A9),
    (0x10D30, 0x10D39),
    (0x11066, 0x1106F),
    (0x110F0, 0x110F9),
    (0x11136, 0x1113F),
    (0x111D0, 0x111D9),
    (0x112F0, 0x112F9),
    (0x11450, 0x11459),
    (0x114D0, 0x114D9),
    (0x11650, 0x11659),
    (0x116C0, 0x116C9),
    (0x11730, 0x11739),
    (0x118E0, 0x118E9),
    (0x11950, 0x11959),
    (0x11C50, 0x11C59),
    (0x11D50, 0x11D59),
    (0x11DA0, 0x11DA9),
    (0x16A60, 0x16A69),
    (0x16AC0, 0x16AC9),
    (0x16B50, 0x16B59),
    (0x1D7CE, 0x1D7FF),
    (0x1E140, 0x1E149),
    (0x1E2F0, 0x1E2F9),
    (0x1E950, 0x1E959),
    (0x1FBF0, 0x1FBF9),
];

/// Whether Python's `re` matches `c` with `\d` (a Unicode decimal digit, Unicode 14.0).
pub fn is_py_decimal(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    let c = u32::from(c);
    DECIMAL_RANGES
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Python's `str.strip()` with no argument.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Python's `str.split()` with no argument: runs of whitespace separate, no empty words.
pub fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|w| !w.is_empty())
}

/// The contraction table of the official code (identical in vqaEval.py, the EvalAI processor
/// and the ViCrop reference), sorted by key. Keys with capitals (`Im`, `Ive`, `Id've`, `I'dve`)
/// never match: the lookup runs on lower-cased words. `somebody'd` maps to `somebodyd`
/// (upstream's entry, reversed from the others).
pub const CONTRACTIONS: &[(&str, &str)] = &[
    ("'ow'sat", "'ow's'at"),
    ("'ows'at", "'ow's'at"),
    ("I'dve", "I'd've"),
    ("Id've", "I'd've"),
    ("Im", "I'm"),
    ("Ive", "I've"),
    ("aint", "ain't"),
    ("arent", "aren't"),
    ("cant", "can't"),
    ("couldn'tve", "couldn't've"),
    ("couldnt", "couldn't"),
    ("couldnt've", "couldn't've"),
    ("couldve", "could've"),
    ("didnt", "didn't"),
    ("doesnt", "doesn't"),
    ("dont", "don't"),
    ("hadn'tve", "hadn't've"),
    ("hadnt", "hadn't"),
    ("hadnt've", "hadn't've"),
    ("hasnt", "hasn't"),
    ("havent", "haven't"),
    ("he'dve", "he'd've"),
    ("hed", "he'd"),
    ("hed've", "he'd've"),
    ("hes", "he's"),
    ("howd", "how'd"),
    ("howll", "how'll"),
    ("hows", "how's"),
    ("isnt", "isn't"),
    ("it'dve", "it'd've"),
    ("itd", "it'd"),
    ("itd've", "it'd've"),
    ("itll", "it'll"),
    ("let's", "let's"),
    ("maam", "ma'am"),
    ("mightn'tve", "mightn't've"),
    ("mightnt", "mightn't"),
    ("mightnt've", "mightn't've"),
    ("mightve", "might've"),
    ("mustnt", "mustn't"),
    ("mustve", "must've"),
    ("neednt", "needn't"),
    ("notve", "not've"),
    ("oclock", "o'clock"),
    ("oughtnt", "oughtn't"),
    ("ow's'at", "'ow's'at"),
    ("shant", "shan't"),
    ("she'dve", "she'd've"),
    ("she's", "she's"),
    ("shed've", "she'd've"),
    ("shouldn'tve", "shouldn't've"),
    ("shouldnt", "shouldn't"),
    ("shouldnt've", "shouldn't've"),
    ("shouldve", "should've"),
    ("somebody'd", "somebodyd"),
    ("somebody'dve", "somebody'd've"),
    ("somebodyd've", "somebody'd've"),
    ("somebodyll", "somebody'll"),
    ("somebodys", "somebody's"),
    ("someone'dve", "someone'd've"),
    ("someoned", "someone'd"),
    ("someoned've", "someone'd've"),
    ("someonell", "someone'll"),
    ("someones", "someone's"),
    ("something'dve", "something'd've"),
    ("somethingd", "something'd"),
    ("somethingd've", "something'd've"),
    ("somethingll", "something'll"),
    ("thats", "that's"),
    ("there'dve", "there'd've"),
    ("thered", "there'd"),
    ("thered've", "there'd've"),
    ("therere", "there're"),
    ("theres", "there's"),
    ("they'dve", "they'd've"),
    ("theyd", "they'd"),
    ("theyd've", "they'd've"),
    ("theyll", "they'll"),
    ("theyre", "they're"),
    ("theyve", "they've"),
    ("twas", "'twas"),
    ("wasnt", "wasn't"),
    ("we'dve", "we'd've"),
    ("wed've", "we'd've"),
    ("werent", "weren't"),
    ("weve", "we've"),
    ("whatll", "what'll"),
    ("whatre", "what're"),
    ("whats", "what's"),
    ("whatve", "what've"),
    ("whens", "when's"),
    ("whered", "where'd"),
    ("wheres", "where's"),
    ("whereve", "where've"),
    ("who'dve", "who'd've"),
    ("whod", "who'd"),
    ("whod've", "who'd've"),
    ("wholl", "who'll"),
    ("whos", "who's"),
    ("whove", "who've"),
    ("whyll", "why'll"),
    ("whyre", "why're"),
    ("whys", "why's"),
    ("wont", "won't"),
    ("wouldn'tve", "wouldn't've"),
    ("wouldnt", "wouldn't"),
    ("wouldnt've", "wouldn't've"),
    ("wouldve", "would've"),
    ("y'all'dve", "y'all'd've"),
    ("y'alld've", "y'all'd've"),
    ("y'allll", "y'all'll"),
    ("yall", "y'all"),
    ("yall'd've", "y'all'd've"),
    ("yall'll", "y'all'll"),
    ("you'dve", "you'd've"),
    ("youd", "you'd"),
    ("youd've", "you'd've"),
    ("youll", "you'll"),
    ("youre", "you're"),
    ("youve", "you've"),
];

/// Number words the official code turns into digits (`manualMap` / `NUMBER_MAP`).
pub const NUMBER_MAP: &[(&str, &str)] = &[
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
];

/// Words the official code drops.
pub const ARTICLES: &[&str] = &["a", "an", "the"];

/// The punctuation list of the official code, in its order. Not in it (kept as is): `'`,
/// `:`, `*`, `#`, `$`, `%`, `&`, `^`, `|`, `~`; the period has its own rule.
pub const PUNCTUATION: &[char] = &[
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];

/// How many periods the period rule removes at most (`re.UNICODE` passed as `count`).
const PERIOD_STRIP_COUNT: usize = 32;

fn contraction(word: &str) -> Option<&'static str> {
    CONTRACTIONS
        .binary_search_by(|(k, _)| (*k).cmp(word))
        .ok()
        .map(|i| CONTRACTIONS[i].1)
}

fn number_word(word: &str) -> Option<&'static str> {
    NUMBER_MAP.iter().find(|(k, _)| *k == word).map(|(_, v)| *v)
}

/// vqaEval's `commaStrip` search, `(\d)(\,)(\d)`: a comma between two digits anywhere.
fn has_digit_comma_digit(chars: &[char]) -> bool {
    chars
        .windows(3)
        .any(|w| is_py_decimal(w[0]) && w[1] == ',' && is_py_decimal(w[2]))
}

/// The EvalAI processor's `COMMA_STRIP` search, `(?<=\d)(\,)+(?=\d)`: a run of commas between
/// two digits anywhere.
fn has_digit_commas_digit(chars: &[char]) -> bool {
    let mut i = 1;
    while i < chars.len() {
        if chars[i] == ',' && is_py_decimal(chars[i - 1]) {
            let mut j = i;
            while j < chars.len() && chars[j] == ',' {
                j += 1;
            }
            if j < chars.len() && is_py_decimal(chars[j]) {
                return true;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    false
}

/// The period rule: `(?!<=\d)(\.)(?!\d)` substituted with `""`, count 32.
fn strip_periods(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut removed = 0;
    for (i, &c) in chars.iter().enumerate() {
        if c == '.'
            && removed < PERIOD_STRIP_COUNT
            && !chars.get(i + 1).is_some_and(|&n| is_py_decimal(n))
        {
            removed += 1;
            continue;
        }
        out.push(c);
    }
    out
}

/// Shared punctuation step: each listed mark is deleted when it touches a space somewhere in
/// the input (or when `delete_all`), and replaced by a space otherwise; then the period rule.
fn process_punctuation(text: &str, delete_all: bool) -> String {
    let mut out = text.to_string();
    let mut pat = String::with_capacity(8);
    for &p in PUNCTUATION {
        let touches_space = {
            pat.clear();
            pat.push(p);
            pat.push(' ');
            let after = text.contains(pat.as_str());
            pat.clear();
            pat.push(' ');
            pat.push(p);
            after || text.contains(pat.as_str())
        };
        if !out.contains(p) {
            continue;
        }
        out = if touches_space || delete_all {
            out.replace(p, "")
        } else {
            out.replace(p, " ")
        };
    }
    strip_periods(&out)
}

/// vqaEval's `processPunctuation`: delete a listed mark when it touches a space anywhere in
/// the text or when the text holds a comma between two digits (then every mark is deleted),
/// else replace it by a space; then delete up to 32 periods not followed by a digit.
pub fn vqa_process_punctuation(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    process_punctuation(text, has_digit_comma_digit(&chars))
}

/// vqaEval's `processDigitArticle`: lower-case, split on whitespace, number words to digits,
/// drop `a`/`an`/`the`, expand the contraction table, join with single spaces.
pub fn vqa_process_digit_article(text: &str) -> String {
    let lower = text.to_lowercase();
    let words: Vec<&str> = py_split(&lower)
        .map(|w| number_word(w).unwrap_or(w))
        .filter(|w| !ARTICLES.contains(w))
        .map(|w| contraction(w).unwrap_or(w))
        .collect();
    words.join(" ")
}

/// vqaEval's answer normalisation: [`vqa_process_punctuation`] then
/// [`vqa_process_digit_article`].
pub fn vqa_normalize(text: &str) -> String {
    vqa_process_digit_article(&vqa_process_punctuation(text))
}

/// The ViCrop reference's `process_text` (saccharomycetes/mllms_know `get_score.py`, commit
/// a64c5d5): the same two steps as [`vqa_normalize`] (its tables and regexes are vqaEval's),
/// applied to the raw text.
pub fn reference_normalize(text: &str) -> String {
    vqa_normalize(text)
}

/// What vqaEval's loop does to every answer before anything else: newlines and tabs become
/// spaces, then Python's `strip()`.
pub fn vqa_clean_whitespace(text: &str) -> String {
    py_strip(&text.replace(['\n', '\t'], " ")).to_string()
}

/// The EvalAI answer processor (mmf `EvalAIAnswerProcessor.__call__`, TextVQA's and ST-VQA's
/// evaluators): lower-case; delete `,` and `?`; `'s` -> ` 's`; strip; newlines and tabs to
/// spaces; strip; the punctuation step (its digit-comma rule is
/// `(?<=\d)(\,)+(?=\d)`, dead after the comma deletion); then [`vqa_process_digit_article`].
pub fn evalai_normalize(text: &str) -> String {
    let lower = text.to_lowercase();
    let tokenized = lower.replace([',', '?'], "").replace("'s", " 's");
    let stripped = py_strip(&tokenized);
    let spaced = stripped.replace(['\n', '\t'], " ");
    let item = py_strip(&spaced);
    let chars: Vec<char> = item.chars().collect();
    let punct = process_punctuation(item, has_digit_commas_digit(&chars));
    vqa_process_digit_article(&punct)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_for_binary_search() {
        assert!(CONTRACTIONS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(DECIMAL_RANGES.windows(2).all(|w| w[0].1 < w[1].0));
    }

    #[test]
    fn examples() {
        assert_eq!(vqa_normalize("Two dogs."), "2 dogs");
        assert_eq!(vqa_normalize("1,000"), "1000");
        assert_eq!(vqa_normalize("3.14"), "3.14");
        assert_eq!(vqa_normalize("dont"), "don't");
        assert_eq!(evalai_normalize("The dog's bone?"), "dog 's bone");
        assert_eq!(vqa_normalize(&".".repeat(40)), ".".repeat(8));
        assert!(is_py_space('\u{1c}') && !'\u{1c}'.is_whitespace());
        assert!(is_py_decimal('\u{ff11}') && !is_py_decimal('\u{bd}'));
    }
}
