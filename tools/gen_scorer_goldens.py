#!/usr/bin/env python3
"""Scorer goldens (tests/fixtures/goldens/scorers.json), computed by the official evaluation code.

This script holds none of the official code: it loads it from the files you point it at and
only builds inputs and records what that code returns. The files, as fetched for the committed
goldens (the script records each file's SHA-256 in the output):

  --vqa-eval        PythonEvaluationTools/vqaEvaluation/vqaEval.py of
                    https://github.com/GT-Vision-Lab/VQA at a013f0043c1e2cdc995922dfe257f7149aa9af06
                    (the VQAv2 evaluation; Python 2 source: its two `print "..."` statements are
                    turned into calls with the standard library's lib2to3 `fix_print` fixer,
                    nothing else is changed)
  --m4c-evaluators  mmf/utils/m4c_evaluators.py of https://github.com/facebookresearch/mmf at
                    b0ffc7fba39f210f833c127362146aec01a2f259 (file last changed in 2dc099af7c):
                    EvalAIAnswerProcessor, TextVQAAccuracyEvaluator, STVQAANLSEvaluator (needs the
                    `editdistance` package, 0.8.1)
  --reference-dir   a checkout of https://github.com/saccharomycetes/mllms_know at
                    a64c5d5a0ece793a2f7dc96e926d283a199033c1 (the ViCrop reference; its
                    get_score.py is loaded, with an empty stand-in for `pandas`, which it imports
                    but only uses in main())
  --pope-evaluate   evaluate.py of https://github.com/RUCAIBox/POPE at
                    3df3ba1b110ecce25696989577fad583b67d4239 (a script whose first two lines,
                    `ans_file = ''` and `label_file = ''`, are meant to be filled in: the script
                    fills them with temporary files and runs it)
  --aokvqa-eval     evaluation/eval_predictions.py of https://github.com/allenai/aokvqa at
                    83786de0b24c4fef0bfe39420684f6f73d9f3581 (eval_aokvqa; an empty stand-in for
                    its `load_aokvqa` import, used only in its __main__ block)

difflib is Python's own (the reference's `str_simi`).

    git --git-dir=<mirror of GT-Vision-Lab/VQA> show a013f00:PythonEvaluationTools/vqaEvaluation/vqaEval.py > /tmp/official/vqaEval.py
    ...
    tools/.venv/bin/python tools/gen_scorer_goldens.py --vqa-eval /tmp/official/vqaEval.py \\
        --m4c-evaluators /tmp/official/m4c_evaluators.py --reference-dir /tmp/official/mllms_know \\
        --pope-evaluate /tmp/official/pope_evaluate.py --aokvqa-eval /tmp/official/eval_predictions.py

TextVQA's evaluator asserts exactly 10 answers per question; for the cases with another number
of answers the same file is also compiled with asserts stripped (`compile(..., optimize=1)`),
which is what `python -O` does, so the generalisation the Rust code makes (leave each answer
out in turn) is checked against the official loop too. Those cases are marked `textvqa_n10:
false`. Inputs come from a fixed seed; reruns give byte-identical output. Floats are stored as
Python's repr strings ("0.18181818181818182"): serde_json's default float parser is not
correctly rounded, Rust's `str::parse::<f64>` is, so the tests compare bit for bit.
"""

import argparse
import contextlib
import hashlib
import io
import json
import random
import re
import sys
import tempfile
import types
import unicodedata
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "goldens" / "scorers.json"
SEED = 20250801


# ---------------------------------------------------------------------------------------------
# Loading the official code
# ---------------------------------------------------------------------------------------------

def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_module(name, path, source=None, optimize=-1):
    """Executes a source file as a fresh module (optionally with converted source)."""
    path = str(path)
    if source is None:
        source = Path(path).read_text(encoding="utf-8")
    module = types.ModuleType(name)
    module.__file__ = path
    code = compile(source, path, "exec", optimize=optimize)
    exec(code, module.__dict__)
    return module


def load_vqa_eval(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import lib2to3.refactor as refactor
    src = Path(path).read_text(encoding="utf-8")
    if not src.endswith("\n"):
        src += "\n"
    tool = refactor.RefactoringTool(["lib2to3.fixes.fix_print"])
    converted = str(tool.refactor_string(src, str(path)))
    return load_module("vqaEval", path, converted)


def load_reference(ref_dir):
    if "pandas" not in sys.modules:
        sys.modules["pandas"] = types.ModuleType("pandas")
    return load_module("get_score", Path(ref_dir) / "get_score.py")


def load_aokvqa(path):
    if "load_aokvqa" not in sys.modules:
        stub = types.ModuleType("load_aokvqa")
        stub.load_aokvqa = None
        sys.modules["load_aokvqa"] = stub
    return load_module("aokvqa_eval", path)


class _Questions:
    """The two objects VQAEval reads: `qa` and `getQuesIds()`."""

    def __init__(self, qa):
        self.qa = qa

    def getQuesIds(self):
        return list(self.qa.keys())


def make_vqa_eval_class(vqa_eval_module):
    class Recording(vqa_eval_module.VQAEval):
        """VQAEval with the per-question accuracy recorded before it is rounded."""

        def setEvalQA(self, quesId, acc):
            self.raw_acc = getattr(self, "raw_acc", {})
            self.raw_acc[quesId] = acc
            super().setEvalQA(quesId, acc)

    return Recording


def vqav2_run(VQAEvalRec, items, n_digits=14):
    """Runs the official VQAEval.evaluate on (prediction, labels) items. Answer ids are distinct,
    as in the VQAv2 annotations, so each answer is left out once."""
    gts, res = {}, {}
    for qid, (pred, labels) in enumerate(items):
        gts[qid] = {
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                        for i, a in enumerate(labels)],
            "question_type": "what", "answer_type": "other",
        }
        res[qid] = {"answer": pred}
    ev = VQAEvalRec(_Questions(gts), _Questions(res), n=n_digits)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    return [ev.raw_acc[q] for q in range(len(items))], ev.accuracy["overall"]


def pope_run(source_path, decisions, labels):
    """Runs POPE's evaluate.py on answers `decisions` and labels; returns its variables."""
    src = Path(source_path).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        ans = Path(tmp) / "answers.jsonl"
        lab = Path(tmp) / "labels.jsonl"
        ans.write_text("".join(json.dumps({"answer": d}) + "\n" for d in decisions))
        lab.write_text("".join(json.dumps({"label": l}) + "\n" for l in labels))
        for line, value in (("ans_file = ''", ans), ("label_file = ''", lab)):
            if src.count(line) != 1:
                sys.exit(f"{source_path}: expected one line `{line}`")
            src = src.replace(line, f"{line.split(' =')[0]} = {str(value)!r}")
        ns = {"__name__": "pope_evaluate"}
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(src, str(source_path), "exec"), ns)
    return {k: ns[k] for k in ("acc", "precision", "recall", "f1", "yes_ratio")}


def F(x):
    """A float as Python's repr (the shortest text that reads back to the same double): the
    goldens store numbers as such strings, since serde_json's default float parser is not
    correctly rounded."""
    return None if x is None else repr(float(x))


@contextlib.contextmanager
def quiet():
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        yield


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

NORMALIZE_SEEDS = [
    "", " ", "\n", "\t", "  padded  ", "\ttab\tinside\t", "line\nbreak", "multi\n\nline\n",
    "Two", "two dogs", "TWO", "two.", "none", "None of them", "zero", "ten", "eleven",
    "one two three four five six seven eight nine ten", "a", "an", "the", "The", "a an the",
    "the cat", "a dog", "an apple", "The Beatles", "theatre", "another",
    "dont", "isnt", "Im", "Ive", "I'm", "im", "cant", "can't", "wont", "won't", "hes", "whats up",
    "yall", "ow's'at", "'ows'at", "somebody'd", "Id've", "I'dve", "shouldnt've", "y'allll",
    "let's go", "twas", "oclock", "5 oclock", "she's", "dog's bone", "children's", "it's",
    "'tis", "O'Neill", "rock 'n' roll", "don't stop", "the dog's", "'s", "s's",
    "1,000", "1,000,000", "1, 000", "1 ,000", "1,,000", ",5", "5,", "a,b", "1,a", "hello, world",
    "1, 2, 3", "3,4 and x-y", "\u0663,\u0664", "\u0663,\u0664 a-b", "\uff11,\uff12 (x)",
    "3.14", "3.", ".5", "end.", "e.g.", "U.S.A.", "mr. smith", "Mr.Smith", "yes.", "No.",
    "www.google.com", "version 2.0.1", "a.b.c", "...", "1.a", "a.1", "\u0663.\u0664", "x.\uff15",
    "a." * 40, "." * 40, "1." * 40,
    "No!", "why?", "wow!", "semi;colon", "(a)", "[b]", "{c}", "\"quoted\"", "x = y", "a+b",
    "back\\slash", "snake_case", "a>b", "<tag>", "user@example.com", "`code`",
    "well-known", "- dash", "dash -", "x - y", "x -y", "x- y", "half-time 2-1", "2-1",
    "red/blue", "1/2", "3 / 4", "a/b/c", "and/or", "t-shirt", "T shirt", "Coca-Cola",
    "10 a.m.", "5:30", "$5.00", "50%", "#1", "a&b", "x*y", "^_^", "~tilde~", "pipe|pipe", "a'b",
    "\u00c9COLE", "Stra\u00dfe", "STRASSE", "\u039f\u0394\u039f\u03a3", "\u0130stanbul",
    "na\u00efve caf\u00e9", "\uff11\uff12\uff13", "\u0661\u0662", "\u65e5\u672c\u8a9e",
    "\u041c\u043e\u0441\u043a\u0432\u0430", "emoji \U0001f600 face", "\x1cfile\x1fsep", "a\u00a0b",
    "em\u2003space", "a\u3000b", "a\u2028b", "a\x85b", "a\u200bb", "\u00bd", "\u00b2", "\u2163",
    "x\u2014y", "\u201cquoted\u201d", "\u2018single\u2019", "caf\u00e9!", "\u00bfqu\u00e9?",
    "Yes", "yes", "NO", "no", "Yes, there is.", "No, there is not.", "stop sign", "STOP",
    "It is a stop sign.", "The answer is: two", "2 dogs", "Two Dogs.", "  Two   dogs  ",
]

WORDS = ["two", "2", "Two", "dog", "dogs", "the", "a", "an", "none", "ten", "dont", "isnt",
         "can't", "Im", "red", "blue", "stop", "sign", "1,000", "3.14", "e.g.", "U.S.",
         "well-known", "it's", "dog's", "yes", "no", "coca-cola", "5:30", "$5", "caf\u00e9",
         "STRASSE", "\u00bd", "x/y", "(a)", "O'Neill", "end.", "hi!", "why?", "\u0663,\u0664"]
SEPS = [" ", " ", " ", "  ", ", ", " - ", "-", "/", "\n", "\t", ". ", "; ", " (", ") "]


def random_text(rng, max_words=5):
    n = rng.randint(1, max_words)
    out = ""
    for i in range(n):
        w = rng.choice(WORDS)
        r = rng.random()
        if r < 0.15:
            w = w.upper()
        elif r < 0.25:
            w = w.capitalize()
        out += w
        if i + 1 < n:
            out += rng.choice(SEPS)
    r = rng.random()
    if r < 0.15:
        out = " " + out + " "
    elif r < 0.25:
        out += "."
    elif r < 0.3:
        out += "\n"
    return out


# Answer families: spellings of one answer that normalise alike (or nearly).
FAMILIES = [
    ["two", "2", "Two", "two.", " two", "TWO", "2."],
    ["stop sign", "stop", "Stop Sign", "a stop sign", "the stop sign", "stop-sign", "stop sign."],
    ["coca cola", "coca-cola", "Coca-Cola", "cocacola", "coca cola!"],
    ["1,000", "1000", "1 000", "one thousand", "1,000."],
    ["dont", "don't", "do not", "Dont"],
    ["yes", "Yes", "yes.", "YES", "yeah"],
    ["3.14", "3.14.", "3,14", "pi"],
    ["new york", "New York", "new-york", "NY", "new york city"],
    ["red", "Red", "red.", "dark red", "the red one"],
    ["mcdonald's", "mcdonalds", "McDonald's", "mc donalds"],
    ["12:30", "12.30", "twelve thirty", "12:30 pm"],
    ["t-shirt", "t shirt", "tshirt", "T-Shirt"],
    ["\u00e9cole", "\u00c9COLE", "ecole", "\u00e9cole."],
    ["", " ", "none", "0"],
]


def vqa_items(rng):
    items = []
    for fam in FAMILIES:
        # all agree, prediction differs only by normalisation (the vqaEval rule)
        for pred in fam[:4]:
            items.append((pred, [fam[0]] * 10))
        items.append((fam[1], [fam[1]] * 10))
    for _ in range(170):
        fam = rng.choice(FAMILIES)
        n = rng.choice([1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 10, 10, 10])
        labels = []
        for _ in range(n):
            r = rng.random()
            if r < 0.75:
                labels.append(rng.choice(fam))
            elif r < 0.9:
                labels.append(rng.choice(rng.choice(FAMILIES)))
            else:
                labels.append(random_text(rng, 3))
        r = rng.random()
        if r < 0.55:
            pred = rng.choice(fam)
        elif r < 0.75:
            pred = rng.choice(labels)
        elif r < 0.85:
            pred = "It is " + rng.choice(fam) + "."
        else:
            pred = random_text(rng, 4)
        items.append((pred, labels))
    # DocVQA-like strings for ANLS and substring
    docs = ["ITC Limited", "itc limited", "I.T.C. Ltd", "ITC", "12/15/88", "12/15/89",
            "Dear Dr. Lobo", "Dr. Lobo", "Denver Broncos", "Denver R. Broncos", "$ 1,250.00",
            "1250", "0.5%", "Stra\u00dfe 5", "STRASSE 5", "  spaced   out  ", "a", "ab", "abc",
            "abcd", "x", "", "\u00bd cup", "new\nline"]
    for _ in range(40):
        labels = rng.sample(docs, rng.randint(1, 3))
        pred = rng.choice(docs) if rng.random() < 0.8 else random_text(rng, 3)
        items.append((pred, labels))
    return items


def difflib_pairs(rng):
    pairs = []
    shorts = ["yes", "no", "Yes", "No", "", "y", "n", "nope", "yeah", "Yes, there is a dog.",
              "There is no dog.", "I don't know", "no yes", "yes no", "(A) red", "(B) blue",
              "A", "B", "red", "The answer is B.", "abcd", "bcda", "abab", "baba", "aaaa", "a"]
    for a in shorts:
        for b in ["yes", "no", "(A) red", "(B) blue", "abab"]:
            pairs.append((a, b))
    for _ in range(60):
        alpha = rng.choice(["ab", "abc", "abcd", "xyz ", "yesno", "ab c"])
        a = "".join(rng.choice(alpha) for _ in range(rng.randint(0, 12)))
        b = "".join(rng.choice(alpha) for _ in range(rng.randint(0, 12)))
        pairs.append((a, b))
    for _ in range(30):
        pairs.append((random_text(rng, 6), random_text(rng, 6)))
    # long b: the autojunk heuristic (len(b) >= 200; elements more frequent than 1% + 1 dropped)
    for _ in range(24):
        alpha = rng.choice(["ab", "abcde ", "abcdefghijklmnopqrstuvwxyz ", "ab\u00e9\u65e5",
                            "aaaaaaaaab", "0123456789"])
        lb = rng.choice([150, 199, 200, 201, 250, 400, 600])
        la = rng.choice([0, 3, 20, 100, 199, 200, 300, 600])
        b = "".join(rng.choice(alpha) for _ in range(lb))
        if rng.random() < 0.5 and la > 0:
            start = rng.randint(0, max(0, lb - 1))
            a = b[start:start + la]
            a = "".join(c if rng.random() > 0.1 else rng.choice(alpha) for c in a)
        else:
            a = "".join(rng.choice(alpha) for _ in range(la))
        pairs.append((a, b))
    # a long text with rare characters in it: popular letters are junked, rare ones anchor
    text = " ".join(random_text(rng, 8) for _ in range(12))
    pairs.append((text[:150], text))
    pairs.append((text, text[::-1]))
    pairs.append((text, text))
    pairs.append(("yes", text))
    return pairs


POPE_PREDS = ["Yes", "yes", "No", "no", "no.", "Yes.", "Yes, there is a dog in the image.",
              "No, there is no dog.", "There is no dog.", "", " ", "Y", "N", "nope", "yeah",
              "I don't know", "NO", "YES", "yes no", "no yes", "Not sure", "Nes", "yo",
              "There is a dog.", "none", "not", "o", "e", "s", "ye", "es", "yess", "noo",
              "\u00bfs\u00ed?", "Yes\n", "no\n\n", "The answer is yes", "The answer is no",
              "Absolutely", "Negative", "ofcourse", "nonono", "yesyes", "Nope, there isn't.",
              "yes, no", "no, yes"]


VSTAR_OPTIONS = [
    ("What is the color of the glove?", ["rubber", "cotton", "kevlar", "leather"]),
    ("What is the color of the woman's shirt?", ["white", "black", "red", "green"]),
    ("Is the dog on the left or right side of the cat?", ["left", "right"]),
    ("What is the material of the bag?", ["plastic", "paper", "leather", "cloth"]),
    ("Is the red car on the left or right side of the tree?", ["right", "left"]),
]
VSTAR_PREDS = ["A", "B", "C", "D", "(A)", "(B) cotton", "red", "left", "right", "The answer is C.",
               "", "leather", "D. leather", "a", "b", "cloth", "black", "I think it's (C) kevlar",
               "green", "white", "Left", "Right.", "E", "paper bag", "It's on the right side."]


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vqa-eval", required=True, type=Path)
    ap.add_argument("--m4c-evaluators", required=True, type=Path)
    ap.add_argument("--reference-dir", required=True, type=Path)
    ap.add_argument("--pope-evaluate", required=True, type=Path)
    ap.add_argument("--aokvqa-eval", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    vqa = load_vqa_eval(args.vqa_eval)
    VQAEvalRec = make_vqa_eval_class(vqa)
    m4c = load_module("m4c_evaluators", args.m4c_evaluators)
    m4c_noassert = load_module("m4c_evaluators_O", args.m4c_evaluators, optimize=1)
    ref = load_reference(args.reference_dir)
    aok = load_aokvqa(args.aokvqa_eval)
    import difflib  # noqa: F401  (the reference's str_simi uses it)

    rng = random.Random(SEED)
    vqa_ev = VQAEvalRec(_Questions({}), _Questions({}))
    evalai = m4c.EvalAIAnswerProcessor()
    textvqa = m4c.TextVQAAccuracyEvaluator()
    textvqa_any = m4c_noassert.TextVQAAccuracyEvaluator()
    anls_ev = m4c.STVQAANLSEvaluator()

    # --- tables the Rust code carries, as the official code holds them
    tables = {
        "unicode_version": unicodedata.unidata_version,
        "python_whitespace": [c for c in range(0x110000) if chr(c).isspace()],
        "python_decimal": [c for c in range(0x110000) if re.match(r"\d", chr(c))],
        # copies: the number maps grow with every word normalised (`setdefault`)
        "vqa_eval": {"contractions": dict(vqa_ev.contractions),
                     "manual_map": dict(vqa_ev.manualMap),
                     "articles": list(vqa_ev.articles), "punct": list(vqa_ev.punct)},
        "evalai": {"contractions": dict(evalai.CONTRACTIONS),
                   "manual_map": dict(evalai.NUMBER_MAP),
                   "articles": list(evalai.ARTICLES), "punct": list(evalai.PUNCTUATIONS)},
        "reference": {"contractions": dict(ref.contractions), "manual_map": dict(ref.manualMap),
                      "articles": list(ref.articles), "punct": list(ref.punct)},
    }

    # --- normalisers
    strings = list(NORMALIZE_SEEDS)
    strings += [random_text(rng, 6) for _ in range(160)]
    normalize = []
    for s in strings:
        normalize.append({
            "s": s,
            "vqa_punct": vqa_ev.processPunctuation(s),
            "vqa_norm": vqa_ev.processDigitArticle(vqa_ev.processPunctuation(s)),
            "evalai": evalai(s),
            "reference": ref.process_text(s),
        })
    # --- per-item VQA-style metrics
    items = vqa_items(rng)
    vqav2_acc, _ = vqav2_run(VQAEvalRec, items)
    vqa_cases = []
    for (pred, labels), v2 in zip(items, vqav2_acc):
        entry = {"prediction": pred, "labels": labels, "vqav2": F(v2)}
        ev = textvqa if len(labels) == 10 else textvqa_any
        entry["textvqa"] = F(ev.eval_pred_list([{"pred_answer": pred, "gt_answers": labels}]))
        entry["textvqa_n10"] = len(labels) == 10
        ds = [{"question_id": "q", "choices": [], "direct_answers": labels,
               "difficult_direct_answer": False, "correct_choice_idx": 0}]
        entry["aokvqa"] = F(aok.eval_aokvqa(ds, {"q": pred}, multiple_choice=False,
                                             strict=False))
        entry["reference"] = F(ref.get_acc(pred, labels))
        entry["gqa"] = F(ref.get_acc_gqa(pred, labels))
        with quiet():
            entry["docvqa"] = F(ref.evaluate_docvqa(
                [{"original_answer": pred, "crop_answer": pred, "labels": labels}])[0])
        try:
            entry["anls"] = F(anls_ev.eval_pred_list([{"pred_answer": pred,
                                                         "gt_answers": labels}]))
        except ZeroDivisionError:
            entry["anls"] = None
        vqa_cases.append(entry)

    # --- difflib
    diff = [{"a": a, "b": b, "ratio": F(ref.str_simi(a, b))} for a, b in difflib_pairs(rng)]

    # --- POPE
    preds = list(POPE_PREDS) + [random_text(rng, 4) for _ in range(30)]
    pope_decisions = [{"prediction": p, "decision": ref.match_mcq(p, ["yes", "no"])} for p in preds]
    pope_sets = []
    for k in range(8):
        n = rng.randint(8, 40)
        labels = [rng.choice(["yes", "no"]) for _ in range(n)]
        predictions = [rng.choice(preds) for _ in range(n)]
        decisions = [ref.match_mcq(p, ["yes", "no"]) for p in predictions]
        try:
            m = pope_run(args.pope_evaluate, decisions, labels)
        except ZeroDivisionError:
            continue
        with quiet():
            acc = ref.evaluate_pope([{"original_answer": p, "crop_answer": p, "labels": l}
                                     for p, l in zip(predictions, labels)])[0]
        pope_sets.append({"predictions": predictions, "labels": labels,
                          "pope": {k: F(v) for k, v in m.items()},
                          "reference_accuracy": F(acc)})

    # --- V*
    vstar = []
    for q, opts in VSTAR_OPTIONS:
        letters = "ABCD"[:len(opts)]
        question = q + "\n" + "\n".join(f"({l}) {o}" for l, o in zip(letters, opts)) + \
            "\nAnswer with the option's letter from the given choices directly."
        for pred in VSTAR_PREDS:
            candidates = question.split("\n")[1:-1]
            index = ref.get_index(pred, candidates)
            # the reference's own V* path: with the label letter repeated 4 times its get_acc
            # gives 100 for the chosen letter and 0 otherwise
            hits = []
            for l in letters:
                with quiet():
                    hits.append(ref.evaluate_vstar([{"question": question, "labels": [l] * 4,
                                                     "original_answer": pred,
                                                     "crop_answer": pred}])[0])
            if hits != [100 if i == index else 0 for i in range(len(letters))]:
                sys.exit(f"V* disagreement on {pred!r}: {hits} vs {index}")
            vstar.append({"question": question, "options": opts, "prediction": pred,
                          "candidates": candidates, "index": index})

    # --- whole tasks, scored by each official aggregate
    tasks = []

    def preds_of(rows):
        return [{"id": f"q{i}", **r} for i, r in enumerate(rows)]

    ten = [(p, l) for p, l in items if len(l) == 10]
    rows = [{"prediction": p, "labels": l} for p, l in ten[:40]]
    with quiet():
        ref_acc = ref.evaluate_textvqa([{"original_answer": r["prediction"],
                                         "crop_answer": r["prediction"], "labels": r["labels"]}
                                        for r in rows])[0]
    tv = textvqa.eval_pred_list([{"pred_answer": r["prediction"], "gt_answers": r["labels"]}
                                 for r in rows]) * 100
    tasks.append({"task": "textvqa", "predictions": preds_of(rows),
                  "metrics": {"vqa_official": F(tv), "vqa_reference": F(ref_acc)}})
    rows2 = [{"prediction": p, "labels": l} for p, l in ten[40:80]]
    _, overall = vqav2_run(VQAEvalRec, [(r["prediction"], r["labels"]) for r in rows2])
    with quiet():
        ref_acc = ref.evaluate_vqav2([{"original_answer": r["prediction"],
                                       "crop_answer": r["prediction"], "labels": r["labels"]}
                                      for r in rows2])[0]
    tasks.append({"task": "vqav2", "predictions": preds_of(rows2),
                  "metrics": {"vqa_official": F(overall), "vqa_reference": F(ref_acc)}})
    rows3 = [{"prediction": p, "labels": l} for p, l in ten[:30]]
    ds = [{"question_id": f"q{i}", "choices": [], "direct_answers": r["labels"],
           "difficult_direct_answer": False, "correct_choice_idx": 0} for i, r in enumerate(rows3)]
    ao = aok.eval_aokvqa(ds, {f"q{i}": r["prediction"] for i, r in enumerate(rows3)},
                         multiple_choice=False, strict=True)
    with quiet():
        ref_acc = ref.evaluate_aokvqa([{"original_answer": r["prediction"],
                                        "crop_answer": r["prediction"], "labels": r["labels"]}
                                       for r in rows3])[0]
    tasks.append({"task": "aokvqa", "predictions": preds_of(rows3),
                  "metrics": {"vqa_official": F(ao), "vqa_reference": F(ref_acc)}})
    rows4 = [{"prediction": p, "labels": l[:1]} for p, l in items[:40]]
    with quiet():
        g = ref.evaluate_gqa([{"original_answer": r["prediction"], "crop_answer": r["prediction"],
                               "labels": r["labels"]} for r in rows4])[0]
    tasks.append({"task": "gqa", "predictions": preds_of(rows4), "metrics": {"gqa_contains": F(g)}})
    rows5 = [{"prediction": c["prediction"], "labels": c["labels"]} for c in vqa_cases[-40:]
             if c["anls"] is not None]
    with quiet():
        d = ref.evaluate_docvqa([{"original_answer": r["prediction"],
                                  "crop_answer": r["prediction"], "labels": r["labels"]}
                                 for r in rows5])[0]
    a = anls_ev.eval_pred_list([{"pred_answer": r["prediction"], "gt_answers": r["labels"]}
                                for r in rows5]) * 100
    tasks.append({"task": "docvqa", "predictions": preds_of(rows5),
                  "metrics": {"docvqa_substring": F(d), "anls": F(a)}})
    for s in pope_sets[:2]:
        m = s["pope"]
        tasks.append({"task": "pope", "predictions": preds_of(
            [{"prediction": p, "labels": [l]} for p, l in zip(s["predictions"], s["labels"])]),
            "metrics": {"pope_accuracy": s["reference_accuracy"],
                        "pope_f1": F(100 * float(m["f1"])),
                        "pope_precision": F(100 * float(m["precision"])),
                        "pope_recall": F(100 * float(m["recall"])),
                        "pope_yes_ratio": F(100 * float(m["yes_ratio"]))}})
    vrows = []
    for i, c in enumerate(vstar[::3]):
        label = "ABCD"[rng.randrange(len(c["options"]))]
        opts = c["options"] if i % 2 == 0 else c["candidates"]
        vrows.append({"prediction": c["prediction"], "labels": [label], "options": opts,
                      "question": c["question"]})
    with quiet():
        v = ref.evaluate_vstar([{"question": r["question"], "labels": r["labels"] * 4,
                                 "original_answer": r["prediction"],
                                 "crop_answer": r["prediction"]} for r in vrows])[0]
    tasks.append({"task": "vstar", "predictions": preds_of(
        [{k: r[k] for k in ("prediction", "labels", "options")} for r in vrows]),
        "metrics": {"vstar_option": F(v)}})

    out = {
        "about": "tools/gen_scorer_goldens.py: outputs of the official evaluation code; do not edit",
        "python": sys.version.split()[0],
        "sources": {
            "vqa_eval": {"repo": "GT-Vision-Lab/VQA",
                         "commit": "a013f0043c1e2cdc995922dfe257f7149aa9af06",
                         "path": "PythonEvaluationTools/vqaEvaluation/vqaEval.py",
                         "sha256": sha256(args.vqa_eval)},
            "m4c_evaluators": {"repo": "facebookresearch/mmf",
                               "commit": "b0ffc7fba39f210f833c127362146aec01a2f259",
                               "path": "mmf/utils/m4c_evaluators.py",
                               "sha256": sha256(args.m4c_evaluators)},
            "reference": {"repo": "saccharomycetes/mllms_know",
                          "commit": "a64c5d5a0ece793a2f7dc96e926d283a199033c1",
                          "path": "get_score.py",
                          "sha256": sha256(args.reference_dir / "get_score.py")},
            "pope": {"repo": "RUCAIBox/POPE", "commit": "3df3ba1b110ecce25696989577fad583b67d4239",
                     "path": "evaluate.py", "sha256": sha256(args.pope_evaluate)},
            "aokvqa": {"repo": "allenai/aokvqa",
                       "commit": "83786de0b24c4fef0bfe39420684f6f73d9f3581",
                       "path": "evaluation/eval_predictions.py",
                       "sha256": sha256(args.aokvqa_eval)},
        },
        "tables": tables,
        "normalize": normalize,
        "vqa": vqa_cases,
        "difflib": diff,
        "pope_decisions": pope_decisions,
        "pope_sets": pope_sets,
        "vstar": vstar,
        "tasks": tasks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, ensure_ascii=True, indent=None, separators=(",", ":"))
    args.out.write_text(text + "\n")
    print(f"wrote {args.out} ({len(text) // 1024} KiB): {len(normalize)} strings, "
          f"{len(vqa_cases)} VQA cases, {len(diff)} difflib pairs, {len(pope_decisions)} POPE "
          f"predictions, {len(pope_sets)} POPE sets, {len(vstar)} V* cases, {len(tasks)} tasks")


if __name__ == "__main__":
    main()
