#!/usr/bin/env python3
"""Goldens for the trained demo LLaVA (tests/fixtures/llava-demo), computed with transformers.

1. The bundled scene subset tests/fixtures/scenes/ (tools/demo_scenes.py, its own seed, not
   seen in training): written first if missing.
2. tests/fixtures/goldens/vicrop-demo.json, two parts:
   - "answers": for every subset item, transformers' greedy ids of the plain answer (one image)
     and of the answer with the oracle crop (image + the square of side S, the model's input
     side, centred on the sign, as vicrop_eval::scenes::oracle_box makes it), with the smallest top-1/top-2 logit
     margin of each generation;
   - "cases": full ViCrop pipeline goldens (map, box, both answers) for a few items and every
     method, in the schema of tools/gen_vicrop_goldens.py, whose reference code computes them.

    tools/.venv/bin/python tools/gen_demo_goldens.py

Needs Pillow 11.0.0 (checked by gen_vicrop_goldens), float32 compute from the f16 weights.
"""

import json
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo_scenes  # noqa: E402
import gen_vicrop_goldens as ref  # noqa: E402

FIX = ref.FIX
SUBSET = FIX / "scenes"
SUBSET_SEED = 90210
SUBSET_HARD, SUBSET_EASY = 30, 6
CHECKPOINT = "llava-demo"
# (item id, method, high_res) for the full-pipeline cases
CASES = [(0, "rel-att", False), (0, "grad-att", False), (0, "pure-grad", False),
         (1, "rel-att", False), (2, "rel-att", True), (2, "grad-att", True)]


def oracle_box(bbox, size, side):
    def axis(a0, a1, length):
        s = min(max(side, a1 - a0), length)
        start = min(max((a0 + a1) // 2 - s // 2, 0), length - s)
        return start, start + s
    x0, x1 = axis(bbox[0], bbox[2], size[0])
    y0, y1 = axis(bbox[1], bbox[3], size[1])
    return [x0, y0, x1, y1]


def main():
    import PIL
    if PIL.__version__ != ref.PILLOW:
        sys.exit(f"Pillow {PIL.__version__} is installed, the goldens need {ref.PILLOW}")
    torch.set_num_threads(2)
    if not (SUBSET / "items.jsonl").exists():
        demo_scenes.write_set(SUBSET, SUBSET_SEED, SUBSET_HARD, SUBSET_EASY)
    items = [json.loads(line) for line in (SUBSET / "items.jsonl").read_text().splitlines() if line.strip()]
    m = ref.Llava(CHECKPOINT)
    answers = []
    for it in items:
        img = Image.open(SUBSET / it["image"]).convert("RGB")
        box = oracle_box(it["bbox"], img.size, m.side)
        plain = m.generate([img], it["question"])
        crop = m.generate([img, img.crop(tuple(box))], it["question"])
        answers.append({"id": it["id"], "image": it["image"], "question": it["question"],
                        "oracle_bbox": box, "plain": plain, "oracle": crop})
        print(f"item {it['id']} ({it['kind']}): {it['answers'][0]!r} plain {plain['text']!r} "
              f"oracle {crop['text']!r} margins {plain['min_margin']:.3f}/{crop['min_margin']:.3f}")
    cases = []
    for i, method, high_res in CASES:
        it = items[i]
        img = Image.open(SUBSET / it["image"]).convert("RGB")
        r = ref.vicrop(m, img, it["question"], method, high_res)
        stem = "scenes/" + it["image"].removesuffix(".png")
        r.update({"checkpoint": CHECKPOINT, "image": stem, "question": it["question"],
                  "method": method, "high_res": high_res})
        cases.append(r)
        print(f"case {stem} {method} high_res={high_res}: bbox {r['bbox']} "
              f"{r['baseline']['text']!r} -> {r['crop']['text']!r}")
    margins = [a[k]["min_margin"] for a in answers for k in ("plain", "oracle")]
    margins += [c[k]["min_margin"] for c in cases for k in ("baseline", "crop")]
    worst = min(x for x in margins if x is not None)
    print("smallest greedy margin:", worst)
    out = {"generator": "tools/gen_demo_goldens.py", "checkpoint": CHECKPOINT,
           "max_new_tokens": ref.MAX_NEW_TOKENS, "answers": answers, "cases": cases}
    (FIX / "goldens" / "vicrop-demo.json").write_text(json.dumps(out) + "\n")
    if worst < 1e-3:
        print("WARNING: a greedy margin is below 1e-3", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
