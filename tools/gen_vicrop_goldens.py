#!/usr/bin/env python3
"""Golden outputs of the ViCrop pipeline on the tiny LLaVA checkpoints, computed with
transformers the way the ViCrop reference (saccharomycetes/mllms_know) does: full forwards
with `output_attentions`, autograd, PIL/torchvision/scipy/skimage filters. Our own code,
following shared/docs/method.md; run tools/make_llava_fixtures.py first.

    tools/.venv/bin/python tools/gen_vicrop_goldens.py
    tools/.venv/bin/python tools/gen_vicrop_goldens.py --keep-existing   # only new cases

Writes tests/fixtures/goldens/vicrop.json. `--keep-existing` copies the entries already in that
file (matched by checkpoint, image, question, method, high_res) and computes only the missing
cases: the maps' last bits depend on the machine's float kernels (another machine moved them by
up to 4e-6 relative, and the margins likewise), so adding a case need not rewrite the others.
Use it only when the checkpoints, images and tokenizer are unchanged.

Pillow must be the pinned 11.0.0 (checked): Pillow 13.0 resizes vertically first when the height
shrinks by more than twice as many pixels as the width, which changes pure-grad's high-pass mask
of portrait images (see vicrop-core/src/pil.rs). Also importable: `python -m` style use by
tools/bench_vicrop.py for side-by-side timings.
"""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import PIL
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image, ImageOps
from scipy.ndimage import median_filter
from skimage.measure import block_reduce
from transformers import LlavaForConditionalGeneration, LlavaProcessor

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
GENERAL = "Write a general description of the image."
PROMPT = "{tags}\nUSER: {q} Answer the question using a single word or phrase.\nASSISTANT:"
IMAGE_TOKEN = 32000
MAX_NEW_TOKENS = 20
RATIOS = [1, 1.2, 1.4, 1.6, 1.8, 2]
# The Pillow the Rust port (vicrop_core::pil) reproduces and tools/requirements.txt pins.
PILLOW = "11.0.0"


def default_layer(n_layers):
    return min((14 * n_layers + 16) // 32, n_layers - 1)


class Llava:
    def __init__(self, name):
        self.dir = FIX / name
        self.model = LlavaForConditionalGeneration.from_pretrained(
            self.dir, torch_dtype=torch.float32, attn_implementation="eager").eval()
        self.proc = LlavaProcessor.from_pretrained(self.dir)
        vc = self.model.config.vision_config
        self.side = vc.image_size
        self.patch = vc.patch_size
        self.grid = vc.image_size // vc.patch_size
        self.layers = self.model.config.text_config.num_hidden_layers

    def inputs(self, images, question):
        text = PROMPT.format(tags="<image>" * len(images), q=question)
        return self.proc(images=images, text=text, return_tensors="pt")

    def patch_positions(self, ids):
        pos = (ids[0] == IMAGE_TOKEN).nonzero().flatten()
        first = int(pos[0])
        n = int((ids[0] == IMAGE_TOKEN).sum()) if len(pos) else 0
        # the grid*grid patch tokens are the last ones of the (single) image's run
        return first + n - self.grid * self.grid, first + n

    @torch.no_grad()
    def generate(self, images, question):
        inp = self.inputs(images, question)
        out = self.model.generate(**inp, do_sample=False, max_new_tokens=MAX_NEW_TOKENS,
                                  output_scores=True, return_dict_in_generate=True, pad_token_id=32001)
        new = out.sequences[0, inp["input_ids"].shape[1]:].tolist()
        margins = [float(torch.topk(s[0], 2).values[0] - torch.topk(s[0], 2).values[1]) for s in out.scores]
        eos = 2 in new
        if eos:
            new = new[: new.index(2)]
        return {"ids": new, "eos": eos, "text": self.proc.tokenizer.decode(new, skip_special_tokens=True).strip(),
                "min_margin": min(margins) if margins else None}

    @torch.no_grad()
    def attention_map(self, image, question, layer):
        inp = self.inputs([image], question)
        a, b = self.patch_positions(inp["input_ids"])
        att = self.model(**inp, output_attentions=True).attentions[layer]
        return att[0, :, -1, a:b].mean(dim=0).float().cpu().numpy().reshape(self.grid, self.grid)

    def rel_att(self, image, question, layer):
        return self.attention_map(image, question, layer) / self.attention_map(image, GENERAL, layer)

    def grad_att(self, image, question, layer):
        inp = self.inputs([image], question)
        a, b = self.patch_positions(inp["input_ids"])
        out = self.model(**inp, output_attentions=True)
        logits = out.logits[:, -1, :]
        loss = -F.cross_entropy(logits, logits.argmax(dim=1))
        att = out.attentions[layer]
        (g,) = torch.autograd.grad(loss, att, retain_graph=True)
        m = (att * F.relu(g))[0, :, -1, a:b].mean(dim=0)
        return m.detach().float().cpu().numpy().reshape(self.grid, self.grid)

    def pixel_grad_norm(self, image, question):
        inp = self.inputs([image], question)
        inp["pixel_values"].requires_grad_(True)
        logits = self.model(**inp).logits[:, -1, :]
        loss = -F.cross_entropy(logits, logits.argmax(dim=1))
        (g,) = torch.autograd.grad(loss, inp["pixel_values"])
        g = g.float().cpu().numpy()[0].transpose(1, 2, 0)
        return np.linalg.norm(g, axis=2)

    def high_pass(self, image):
        small = TF.resize(image, (self.side, self.side))  # PIL bilinear on the whole image
        t = TF.to_tensor(small).unsqueeze(0)
        low = TF.gaussian_blur(t, kernel_size=(3, 3)).squeeze().numpy()
        h = t.squeeze().numpy() - low
        return median_filter(np.sqrt(np.square(h).sum(axis=0)), size=7)

    def pure_grad(self, image, question):
        r = self.pixel_grad_norm(image, question) / self.pixel_grad_norm(image, GENERAL)
        hp = self.high_pass(image)
        r = r * (hp > np.median(hp))
        return block_reduce(r, block_size=(self.patch, self.patch), func=np.mean)[: self.grid, : self.grid]

    def map(self, image, question, method, layer):
        if method == "rel-att":
            return self.rel_att(image, question, layer)
        if method == "grad-att":
            return self.grad_att(image, question, layer)
        return self.pure_grad(image, question)


def tiles(image, threshold=1024):
    w, h = image.size
    v = math.ceil(h / threshold)
    cols = max(1, int(v * w / h))
    tw, th = math.ceil(w / cols), math.ceil(h / v)
    boxes = [(i * tw, j * th, (i + 1) * tw, (j + 1) * th) for j in range(v) for i in range(cols)]
    return boxes, v, cols


def select_box(att, size, side):
    """The adaptive sliding window of method.md section 4, whole-image placement."""
    rows, cols = att.shape
    bw, bh = size[0] / cols, size[1] / rows
    best = None
    for k, ratio in enumerate(RATIOS):
        nx = min(int(side * ratio / bw), cols)
        ny = min(int(side * ratio / bh), rows)
        if cols - nx < 1 and rows - ny < 1:
            if k == 0:
                return [0, 0, size[0], size[1]]
            continue
        sums = np.zeros((rows - ny + 1, cols - nx + 1))
        top, pos = -np.inf, (0, 0)
        for x in range(cols - nx + 1):
            for y in range(rows - ny + 1):
                sums[y, x] = att[y:y + ny, x:x + nx].astype(np.float64).sum()
                if sums[y, x] > top:
                    top, pos = sums[y, x], (x, y)
        x, y = pos
        nb = [sums[y, x + dx] for dx in (-1, 1) if 0 <= x + dx < sums.shape[1]]
        nb += [sums[y + dy, x] for dy in (-1, 1) if 0 <= y + dy < sums.shape[0]]
        sharp = (top - np.mean(nb)) / (nx * ny)
        if best is None or sharp > best[0]:
            best = (sharp, x, y, nx, ny, ratio)
    _, x, y, nx, ny, ratio = best
    half = (side * ratio) // 2
    xc = int(x * bw + bw * nx / 2)
    yc = int(y * bh + bh * ny / 2)
    xc = min(max(xc, half), size[0] - half)
    yc = min(max(yc, half), size[1] - half)
    return [int(max(0, xc - half)), int(max(0, yc - half)), int(min(size[0], xc + half)), int(min(size[1], yc + half))]


def vicrop(m, image, question, method, high_res, layer=None):
    layer = default_layer(m.layers) if layer is None else layer
    baseline = m.generate([image], question)
    if high_res:
        boxes, v, cols = tiles(image)
        maps = [m.map(image.crop(b), question, method, layer) for b in boxes]
        att = np.block([maps[j * cols:(j + 1) * cols] for j in range(v)])
    else:
        att = m.map(image, question, method, layer)
    bbox = select_box(att, image.size, m.side)
    crop = image.crop(tuple(bbox))
    final = m.generate([image, crop], question)
    return {"layer": layer, "baseline": baseline, "map": att.astype(np.float32).tolist(),
            "bbox": bbox, "crop": final}


CASES = [
    # (checkpoint, image, question, method, high_res)
    ("llava-tiny-a", "chelsea", "What is the number on the bus?", "rel-att", False),
    ("llava-tiny-a", "chelsea", "What is the number on the bus?", "grad-att", False),
    ("llava-tiny-a", "chelsea", "What is the number on the bus?", "pure-grad", False),
    ("llava-tiny-a", "wide", "What color is the car on the left?", "rel-att", True),
    ("llava-tiny-a", "wide", "What color is the car on the left?", "grad-att", True),
    # Not "wide" for pure-grad: on flat synthetic images the strict greater-than-median mask is
    # decided by float rounding noise, in any implementation. A real photo pair instead.
    ("llava-tiny-a", "chelsea_pair", "What color is the car on the left?", "pure-grad", True),
    ("llava-tiny-a", "coffee_small", "What is in the cup?", "rel-att", False),
    ("llava-tiny-b", "chelsea", "What is the number on the bus?", "rel-att", False),
    ("llava-tiny-b", "chelsea", "What is the number on the bus?", "grad-att", False),
    ("llava-tiny-b", "chelsea", "What is the number on the bus?", "pure-grad", False),
    # Portrait images: pure-grad's mask squashes the whole image to R x R, shrinking the height
    # more than the width, where Pillow 13 would resize vertically first (tools pin Pillow 11.0,
    # horizontal first). chelsea_tower (180x600) for both side lengths, chelsea_portrait
    # (180x300) where the height shrinks (224) only. Photo content, not flat synthetic.
    ("llava-tiny-a", "chelsea_tower", "What is the number on the bus?", "pure-grad", False),
    ("llava-tiny-b", "chelsea_tower", "What is the number on the bus?", "pure-grad", False),
    ("llava-tiny-b", "chelsea_portrait", "What is the number on the bus?", "pure-grad", False),
]

PORTRAIT_BOX = (135, 0, 315, 300)  # chelsea_portrait = chelsea.crop(PORTRAIT_BOX), 180x300


def load(stem):
    if stem == "chelsea_pair":  # chelsea beside its mirror image: 902x300, three tiles
        left = load("chelsea")
        pair = Image.new("RGB", (2 * left.width, left.height))
        pair.paste(left, (0, 0))
        pair.paste(ImageOps.mirror(left), (left.width, 0))
        return pair
    if stem == "chelsea_portrait":
        return load("chelsea").crop(PORTRAIT_BOX)
    if stem == "chelsea_tower":  # chelsea_portrait above its upside-down copy: 180x600
        top = load("chelsea_portrait")
        tower = Image.new("RGB", (top.width, 2 * top.height))
        tower.paste(top, (0, 0))
        tower.paste(ImageOps.flip(top), (0, top.height))
        return tower
    return ImageOps.exif_transpose(Image.open(FIX / "images" / f"{stem}.png")).convert("RGB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keep-existing", action="store_true",
                    help="keep the entries already in vicrop.json, compute only the missing cases")
    args = ap.parse_args()
    if PIL.__version__ != PILLOW:
        sys.exit(f"Pillow {PIL.__version__} is installed, the goldens need {PILLOW} "
                 "(tools/requirements.txt): resize results differ between versions")
    torch.set_num_threads(2)
    path = FIX / "goldens" / "vicrop.json"
    kept = {}
    if args.keep_existing and path.exists():
        for r in json.loads(path.read_text())["cases"]:
            kept[(r["checkpoint"], r["image"], r["question"], r["method"], r["high_res"])] = r
    models = {}
    out = []
    for case in CASES:
        name, stem, q, method, high_res = case
        if case in kept:
            out.append(kept[case])
            print(f"{name} {stem} {method} high_res={high_res}: kept")
            continue
        if name not in models:
            models[name] = Llava(name)
        m = models[name]
        r = vicrop(m, load(stem), q, method, high_res)
        r.update({"checkpoint": name, "image": stem, "question": q, "method": method, "high_res": high_res})
        out.append(r)
        print(f"{name} {stem} {method} high_res={high_res}: bbox {r['bbox']} "
              f"margins {r['baseline']['min_margin']:.4f}/{r['crop']['min_margin']:.4f}")
    worst = min(min(r["baseline"]["min_margin"], r["crop"]["min_margin"]) for r in out)
    print("smallest greedy margin:", worst)
    path.write_text(json.dumps({"max_new_tokens": MAX_NEW_TOKENS, "cases": out}) + "\n")
    if worst < 1e-3:
        print("WARNING: a greedy margin is below 1e-3", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
