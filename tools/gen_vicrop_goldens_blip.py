#!/usr/bin/env python3
"""Golden outputs of the ViCrop pipeline on the tiny InstructBLIP checkpoints, computed with
transformers the way the ViCrop reference (saccharomycetes/mllms_know, blip_methods.py and its
modified InstructBLIP generate) does: full forwards with `output_attentions`, autograd,
PIL/torchvision/scipy/skimage filters. Our own code, following shared/docs/method.md; run
tools/make_instructblip_fixtures.py first.

    tools/.venv/bin/python tools/gen_vicrop_goldens_blip.py

Writes tests/fixtures/goldens/vicrop-instructblip.json.

The language model always sees [queries of each image..., `</s>` + "Question: {q} Short answer:"]
(the reference's generate() for one or several images, and transformers' forward for one image,
in both hub layouts). Maps read the query positions 0..num_query_tokens of the LLM attention row
(the reference slices 256 positions and crashes, its issue #30).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from scipy.ndimage import median_filter
from skimage.measure import block_reduce
import transformers
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_vicrop_goldens import RATIOS, load, select_box, tiles  # noqa: E402
from make_instructblip_fixtures import (  # noqa: E402
    CONFIG_EOS,
    GENERAL,
    PROMPT,
    cross_index_layer,
    default_cross_index,
    default_lm_layer,
    image_features,
    lm_inputs_embeds,
    margins_of,
)

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
MAX_NEW_TOKENS = 20
MIN_MARGIN = 1e-2  # greedy answers
MIN_DECISION_MARGIN = 1e-4  # box search: relative gaps (see decision_margins)
MASK_TOLERANCE = 1e-5  # pure-grad: high-pass values this close (relative) to the median may flip


class Blip:
    def __init__(self, name):
        self.name = name
        self.dir = FIX / name
        self.model = InstructBlipForConditionalGeneration.from_pretrained(
            self.dir, torch_dtype=torch.float32, attn_implementation="eager").eval()
        self.proc = InstructBlipProcessor.from_pretrained(self.dir)
        cfg = self.model.config
        self.side = cfg.vision_config.image_size
        self.patch = cfg.vision_config.patch_size
        self.grid = self.side // self.patch
        self.nq = cfg.num_query_tokens
        self.layer = default_lm_layer(cfg.text_config.num_hidden_layers)
        self.kx = default_cross_index(cfg.qformer_config)
        # the reference's generate() maps generated id 0 to 2 for this architecture name
        self.zero_to_two = cfg.text_config.architectures[0] == "LLaMAForCausalLM"

    def pixels(self, images):
        return self.proc.image_processor(images, return_tensors="pt")["pixel_values"]

    def text(self, question):
        prompt = PROMPT.format(q=question)
        return (self.proc.tokenizer(prompt, return_tensors="pt").input_ids,
                self.proc.qformer_tokenizer(prompt, return_tensors="pt").input_ids)

    def forward(self, pixel_values, question, output_attentions=True):
        ids, qids = self.text(question)
        vis, qf, _, proj = image_features(self.model, pixel_values, qids, output_attentions=output_attentions)
        embeds = lm_inputs_embeds(self.model, proj, ids)
        lm = self.model.language_model(inputs_embeds=embeds, output_attentions=output_attentions)
        return qf, lm

    @torch.no_grad()
    def generate(self, images, question):
        ids, qids = self.text(question)
        _, _, _, proj = image_features(self.model, self.pixels(images), qids)
        embeds = lm_inputs_embeds(self.model, proj, ids)
        out = self.model.language_model.generate(
            inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
            do_sample=False, max_new_tokens=MAX_NEW_TOKENS, output_scores=True, return_dict_in_generate=True)
        seq = out.sequences[0].clone()  # new tokens only: the LM saw no input_ids
        if self.zero_to_two:
            seq[seq == 0] = 2
        text = self.proc.batch_decode(seq[None], skip_special_tokens=True)[0]  # the reference: no strip
        new = seq.tolist()
        margins = margins_of(out.scores)
        eos = CONFIG_EOS in new
        if eos:
            new = new[: new.index(CONFIG_EOS)]
            margins = margins[: len(new) + 1]
        return {"ids": new, "eos": eos, "text": text, "min_margin": min(margins)}

    # ---- maps (method.md section 3, InstructBLIP)
    def att_parts(self, qf_att, lm_att):
        """Q = mean over heads of the cross-attention without the CLS column -> [queries, patches];
        s = mean over heads of the last LLM row at the query positions -> [queries]."""
        q = qf_att[0, :, :, 1:].mean(dim=0)
        s = lm_att[0, :, -1, : self.nq].mean(dim=0)
        return s, q

    @torch.no_grad()
    def attention_map(self, image, question):
        qf, lm = self.forward(self.pixels([image]), question)
        s, q = self.att_parts(qf.cross_attentions[self.kx], lm.attentions[self.layer])
        return (s @ q).float().numpy().reshape(self.grid, self.grid)

    def rel_att(self, image, question):
        a = self.attention_map(image, question)
        g = self.attention_map(image, GENERAL)
        return a / g, {"qa": a, "general": g}

    def grad_att(self, image, question):
        qf, lm = self.forward(self.pixels([image]), question)
        logits = lm.logits[:, -1, :]
        loss = -F.cross_entropy(logits, logits.argmax(dim=1))  # log-softmax prob of the argmax
        qa, la = qf.cross_attentions[self.kx], lm.attentions[self.layer]
        gq, gl = torch.autograd.grad(loss, (qa, la))
        s, q = self.att_parts(qa * F.relu(gq), la * F.relu(gl))
        return (s @ q).detach().float().numpy().reshape(self.grid, self.grid), {}

    def pixel_grad_norm(self, image, question):
        pv = self.pixels([image]).requires_grad_(True)
        _, lm = self.forward(pv, question, output_attentions=False)
        logits = lm.logits[:, -1, :]
        loss = -F.cross_entropy(logits, logits.argmax(dim=1))
        (g,) = torch.autograd.grad(loss, pv)
        return np.linalg.norm(g.float().numpy()[0].transpose(1, 2, 0), axis=2)

    def high_pass(self, image):
        """The whole image resized to side x side (PIL bilinear; BLIP's processor squashes the same
        way, so mask and gradient cover the same pixels), 3x3 Gaussian high-pass, channel norm,
        7x7 median."""
        small = TF.resize(image, (self.side, self.side))
        t = TF.to_tensor(small).unsqueeze(0)
        low = TF.gaussian_blur(t, kernel_size=(3, 3)).squeeze().numpy()
        h = t.squeeze().numpy() - low
        return median_filter(np.sqrt(np.square(h).sum(axis=0)), size=7)

    def pure_grad(self, image, question):
        r = self.pixel_grad_norm(image, question) / self.pixel_grad_norm(image, GENERAL)
        hp = self.high_pass(image)
        med = np.median(hp)
        near = np.abs(hp - med) <= MASK_TOLERANCE * abs(med)

        def reduce(mask):
            return block_reduce(r * mask, block_size=(self.patch, self.patch), func=np.mean)[: self.grid, : self.grid]

        # the map, and the maps with every pixel within MASK_TOLERANCE of the median forced out
        # of / into the mask (what a different but correct float evaluation could decide)
        variants = [reduce(hp > med * (1 + MASK_TOLERANCE)), reduce(hp > med * (1 - MASK_TOLERANCE))]
        return reduce(hp > med), {"mask_near_median": int(near.sum()), "variants": variants}

    def map(self, image, question, method):
        return {"rel-att": self.rel_att, "grad-att": self.grad_att, "pure-grad": self.pure_grad}[method](image, question)


def decision_margins(att, size, side):
    """How far select_box's decisions are from a tie, relative to the float noise scale of the
    quantities compared: per ratio, (best window sum - runner-up) / |best|; across ratios,
    (best sharpness - runner-up) / (|best window sum| / window area). None when the first ratio
    already covers the whole map (no decision)."""
    rows, cols = att.shape
    bw, bh = size[0] / cols, size[1] / rows
    windows, sharp = [], []
    for k, ratio in enumerate(RATIOS):
        nx = min(int(side * ratio / bw), cols)
        ny = min(int(side * ratio / bh), rows)
        if cols - nx < 1 and rows - ny < 1:
            if k == 0:
                return None
            continue
        sums = np.array([[att[y:y + ny, x:x + nx].astype(np.float64).sum() for x in range(cols - nx + 1)]
                         for y in range(rows - ny + 1)])
        flat = np.sort(sums.ravel())[::-1]
        top = flat[0]
        if len(flat) > 1:
            windows.append(float((flat[0] - flat[1]) / abs(top)))
        y, x = np.unravel_index(np.argmax(sums.T.ravel()), sums.T.shape)[::-1]  # first max, x outer
        x, y = int(x), int(y)
        assert sums[y, x] == top
        nb = [sums[y, x + dx] for dx in (-1, 1) if 0 <= x + dx < sums.shape[1]]
        nb += [sums[y + dy, x] for dy in (-1, 1) if 0 <= y + dy < sums.shape[0]]
        sharp.append(((top - np.mean(nb)) / (nx * ny), abs(top) / (nx * ny)))
    out = {"window": min(windows) if windows else None, "ratio": None}
    if len(sharp) > 1:
        order = sorted(range(len(sharp)), key=lambda i: -sharp[i][0])
        b, s = sharp[order[0]], sharp[order[1]]
        out["ratio"] = float((b[0] - s[0]) / b[1])
    return out


def vicrop(m, image, question, method, high_res):
    baseline = m.generate([image], question)
    extra = {}
    if high_res:
        boxes, v, cols = tiles(image)
        parts = [m.map(image.crop(b), question, method) for b in boxes]
        att = stitch([p[0] for p in parts], v, cols)
        extra["tiles"] = [list(b) for b in boxes]
        infos = [p[1] for p in parts]
    else:
        att, info = m.map(image, question, method)
        infos = [info]
        extra.update({f"map_{k}": val.astype(np.float32).tolist() for k, val in info.items() if k in ("qa", "general")})
    bbox = select_box(att, image.size, m.side)
    if method == "pure-grad":
        extra["mask_near_median"] = sum(i["mask_near_median"] for i in infos)
        for k in range(2):  # the box must not depend on how near-median pixels are decided
            alt = stitch([i["variants"][k] for i in infos], v, cols) if high_res else infos[0]["variants"][k]
            assert select_box(alt, image.size, m.side) == bbox, "pure-grad box depends on mask ties"
    crop = image.crop(tuple(bbox))
    final = m.generate([image, crop], question)
    return {"lm_layer": m.layer, "cross_attn_index": m.kx,
            "cross_attn_layer": cross_index_layer(m.model.config.qformer_config, m.kx),
            "baseline": baseline, "map": att.astype(np.float32).tolist(), "map_shape": list(att.shape),
            "bbox": bbox, "decision_margins": decision_margins(att, image.size, m.side), "crop": final, **extra}


def stitch(maps, v, cols):
    return np.block([maps[j * cols:(j + 1) * cols] for j in range(v)])


CASES = [
    # (checkpoint, image, question, method, high_res). Questions picked (from
    # make_instructblip_fixtures.QUESTIONS) so that every greedy margin is >= MIN_MARGIN.
    ("instructblip-tiny-a", "chelsea", "What is the number on the bus?", "rel-att", False),
    ("instructblip-tiny-a", "chelsea", "What is the number on the bus?", "grad-att", False),
    ("instructblip-tiny-a", "chelsea", "What animal is in the picture?", "pure-grad", False),
    ("instructblip-tiny-a", "wide", "Where is the green circle?", "rel-att", True),
    ("instructblip-tiny-a", "wide", "What color is the car on the left?", "grad-att", True),
    # Not "wide" for pure-grad: on flat synthetic images the strict greater-than-median mask is
    # decided by float rounding noise, in any implementation. A real photo pair instead.
    ("instructblip-tiny-a", "chelsea_pair", "What color is the car on the left?", "pure-grad", True),
    ("instructblip-tiny-a", "coffee_small", "What is written on the sign?", "rel-att", False),
    ("instructblip-tiny-b", "chelsea", "What is the number on the bus?", "rel-att", False),
    ("instructblip-tiny-b", "chelsea", "What is the number on the bus?", "grad-att", False),
    ("instructblip-tiny-b", "chelsea", "What is the number on the bus?", "pure-grad", False),
    ("instructblip-tiny-b", "wide", "What color is the car on the left?", "rel-att", True),
    ("instructblip-tiny-b", "wide", "What color is the car on the left?", "grad-att", True),
]


def main():
    # The Rust port reproduces Pillow 11's resize; Pillow 13 orders the passes differently for
    # images whose height shrinks much more than the width (see vicrop-core/src/pil.rs).
    import PIL
    if PIL.__version__ != "11.0.0":
        sys.exit(f"Pillow {PIL.__version__} is installed; the fixtures need 11.0.0 (tools/requirements.txt)")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    models, out = {}, []
    for name, stem, q, method, high_res in CASES:
        if name not in models:
            models[name] = Blip(name)
        m = models[name]
        r = vicrop(m, load(stem), q, method, high_res)
        r = {"checkpoint": name, "image": stem, "question": q, "method": method, "high_res": high_res, **r}
        out.append(r)
        print(f"{name} {stem} {method} high_res={high_res}: bbox {r['bbox']} "
              f"answers {r['baseline']['ids']} / {r['crop']['ids']} "
              f"margins {r['baseline']['min_margin']:.4f}/{r['crop']['min_margin']:.4f} "
              f"decision {r['decision_margins']}")
    worst = min(min(r["baseline"]["min_margin"], r["crop"]["min_margin"]) for r in out)
    dec = [v for r in out if r["decision_margins"] for v in r["decision_margins"].values() if v is not None]
    print("smallest greedy margin:", worst, "smallest decision margin:", min(dec))
    doc = {"generator": "tools/gen_vicrop_goldens_blip.py", "max_new_tokens": MAX_NEW_TOKENS,
           "prompt_template": PROMPT, "general_question": GENERAL, "min_greedy_margin": worst,
           "min_decision_margin": min(dec), "cases": out}
    (FIX / "goldens" / "vicrop-instructblip.json").write_text(json.dumps(doc) + "\n")
    bad = worst < MIN_MARGIN or min(dec) < MIN_DECISION_MARGIN
    if bad:
        print(f"WARNING: a greedy margin below {MIN_MARGIN} or a decision margin below {MIN_DECISION_MARGIN}",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
