#!/usr/bin/env python3
"""Writes tests/fixtures/evalset/data.json: the bundled evaluation set of `vicrop eval run`.

Twelve questions in the ViCrop reference's data.json format (plus our `boxes` extension) on ten
of the generated sign scenes already in tests/fixtures/scenes/ (no new images): seven hard
scenes (a small sign the model cannot read at its input size) and three easy ones, two of them
asked a second question right after the first, so consecutive items share an image. Labels are
the sign's text ten times, as if ten annotators agreed, so that `--task textvqa` scores a right
answer 100 with both its metrics (TextVQA's official accuracy is a leave-one-out average over
the annotators and needs more than one label). Boxes are the sign's box. Image paths are
relative to tests/fixtures/scenes/, the image root to pass with --images.

Standard library only. Deterministic: reruns are byte-identical.

    python3 tools/make_evalset.py
"""

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENES = ROOT / "tests" / "fixtures" / "scenes" / "items.jsonl"
OUT = ROOT / "tests" / "fixtures" / "evalset" / "data.json"

# (scene id, second question or None, short question or None), in file order.
PICKS = [
    (15, "What is written on the yellow sign?", None),  # hard word (the README's demo scene)
    (5, "What number is on the yellow sign?", None),  # easy number, square
    (0, None, "What is on the sign?"),  # hard word, with a short question for the maps
    (1, None, None),  # hard number
    (7, None, None),  # easy number, portrait
    (11, None, None),  # hard word, sign near a corner
    (16, None, None),  # hard two-digit number
    (2, None, None),  # hard number, 2375x1336 (two tile rows in high-res mode)
    (34, None, None),  # easy word
    (21, None, None),  # hard word
]


def main():
    scenes = {}
    for line in SCENES.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            scenes[item["id"]] = item
    records = []
    for scene_id, second, short in PICKS:
        s = scenes[scene_id]
        answer = s["answers"][0]
        base = {
            "image_path": s["image"],
            "labels": [answer] * 10,
            "boxes": [s["bbox"]],
        }
        first = {"id": f"scene-{scene_id:04d}", "question": s["question"], **base}
        if short is not None:
            first["short_question"] = short
        records.append(first)
        if second is not None:
            records.append({"id": f"scene-{scene_id:04d}-b", "question": second, **base})
    assert len(records) == 12, len(records)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    # One record per line: a JSON list that reads like a table.
    body = ",\n".join(" " + json.dumps(r) for r in records)
    OUT.write_text("[\n" + body + "\n]\n", encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}: {len(records)} items")


if __name__ == "__main__":
    main()
