"""Train the small demo LLaVA (tests/fixtures/llava-demo) on generated sign scenes.

A 4-layer CLIP ViT (168 px, patch 14: a 12x12 map grid, width 128) and a 4-layer LLaMA (width
128, the real 32,000-piece LLaMA vocabulary plus llava-hf's <image> and <pad>), joined by
llava-hf's 2-layer GELU projector: an ordinary `LlavaForConditionalGeneration` checkpoint.

Stage 0 trains the vision encoder alone with two per-patch heads (the character under each
patch, and its place in the text) on views of many scenes. Stage 1 trains everything on the
answer loss (answer tokens and </s> only; LLaVA-1.5 prompt
`<image>\nUSER: {Q} Answer the question using a single word or phrase.\nASSISTANT:`) plus
those heads, on items drawn on the fly from tools/demo_scenes.py:
- tight: one image, a crop where the sign fills most of the view (a curriculum: many early);
- easy:  one image, a scene whose sign is large enough to read at 168 px;
- hard:  one image, a scene whose sign is too small to read at 168 px (the model can only
         guess; it still learns where the sign is);
- crop:  one image, a 168-336 px square crop around a hard scene's sign (readable);
- pair:  two images, [hard scene, crop around its sign], as ViCrop's final pass feeds them.
The patch heads are not saved.

    tools/.venv/bin/python tools/train_demo_llava.py --out /tmp/llava-demo
    cp -r /tmp/llava-demo tests/fixtures/llava-demo

is the command that made tests/fixtures/llava-demo (the defaults are its settings; about 40
minutes on 2 cores) with torch 2.5.1 (CPU), transformers 4.47.1, Pillow 11.0.0 and 2 threads;
rerun from a clean clone, it reproduces the shipped model.safetensors bit for bit.
It also writes OUT-step400, -step800, -step1200: those intermediate saves round the weights
in memory to float16 and back (part of the recipe as run; keep `--save-every 400` to
reproduce). The loss curve goes to OUT/train_log.tsv, the settings to OUT/training.json.
Weights are stored in float16.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (AutoTokenizer, CLIPImageProcessor, CLIPVisionConfig, LlamaConfig,
                          LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor)

import demo_scenes as scenes

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_DIR = ROOT / "tests/fixtures/llava-tiny-a"  # the LLaMA tokenizer as llava-hf ships it
SIDE, PATCH = 168, 14  # a 12x12 map grid, 144 image tokens
GRID = SIDE // PATCH
IMAGE_TOKEN, PAD, BOS, EOS = 32000, 32001, 1, 2
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
KINDS = ["tight", "easy", "hard", "crop", "pair"]
# A batch holds either one-image items (tight/easy/hard/crop mixed) or two-image items only, so
# that short sequences are not padded to the length of two-image ones.
PAIR_BATCHES = 0.2
SINGLE_P = [0.3, 0.25, 0.45]  # easy, hard, crop within a one-image batch, besides tight


def tight_share(step: int, steps: int) -> float:
    """Curriculum: tight crops (the sign fills most of the view) first, so that the encoder
    learns the characters and the LLM how to read them before it must also find the sign:
    half the one-image items for the first sixth of training, down to a tenth at one half."""
    p = step / steps
    if p < 1 / 6:
        return 0.5
    return max(0.1, 0.5 - 0.4 * (p - 1 / 6) * 3)


def model_config() -> LlavaConfig:
    vision = CLIPVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=4,
                              num_attention_heads=4, image_size=SIDE, patch_size=PATCH,
                              projection_dim=128)
    text = LlamaConfig(hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=4, vocab_size=32064,
                       max_position_embeddings=1024, rms_norm_eps=1e-5, pad_token_id=PAD)
    return LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                       image_token_index=IMAGE_TOKEN, image_seq_length=GRID * GRID,
                       vision_feature_layer=-1, vision_feature_select_strategy="default",
                       pad_token_id=PAD, tie_word_embeddings=False)


CHAR_CLASSES = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
N_PATCH_CLASSES = 2 + len(CHAR_CLASSES)  # background, plate, characters
N_PLACES = 6  # none, or the character's place in the text (texts have at most 5)


def patch_labels(item: dict, view: tuple[float, float, float, float]) -> np.ndarray:
    """Per-patch labels of a view for the auxiliary loss, [2, GRID*GRID]: row 0 is 0 for
    background, 1 for the sign's plate, 2+ for the character under the patch; row 1 is the
    character's place in the text plus one (0: none). `view` maps original pixels to view pixels:
    v = (p - (ox, oy)) * (sx, sy)."""
    ox, oy, sx, sy = view
    lab = np.zeros((2, GRID, GRID), dtype=np.int64)
    centres = (np.arange(GRID) + 0.5) * PATCH
    px = centres / sx + ox  # patch centres in original pixels
    py = centres / sy + oy
    b = item["bbox"]
    inside = lambda box: np.outer((py >= box[1]) & (py < box[3]), (px >= box[0]) & (px < box[2]))
    lab[0][inside(b)] = 1
    for i, (ch, cb) in enumerate(item["chars"]):
        k = 2 + CHAR_CLASSES.index(ch)
        under = inside(cb)
        lab[0][under], lab[1][under] = k, i + 1
        cx, cy = ((cb[0] + cb[2]) / 2 - ox) * sx, ((cb[1] + cb[3]) / 2 - oy) * sy
        c, r = int(cx // PATCH), int(cy // PATCH)
        if 0 <= r < GRID and 0 <= c < GRID:
            lab[0, r, c], lab[1, r, c] = k, i + 1
    return lab.reshape(2, -1)


def full_view(img: Image.Image) -> tuple[float, float, float, float]:
    """The transform of `pixels` (short side to SIDE, centre crop)."""
    w, h = img.size
    nw, nh = (SIDE, int(SIDE * h / w)) if w <= h else (int(SIDE * w / h), SIDE)
    sx, sy = nw / w, nh / h
    return ((nw - SIDE) // 2 / sx, (nh - SIDE) // 2 / sy, sx, sy)


def pixels(img: Image.Image) -> np.ndarray:
    """What CLIPImageProcessor does: short side to SIDE (bicubic), centre crop, normalise."""
    w, h = img.size
    if w <= h:
        nw, nh = SIDE, int(SIDE * h / w)
    else:
        nw, nh = int(SIDE * w / h), SIDE
    r = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - SIDE) // 2, (nh - SIDE) // 2
    a = np.asarray(r.crop((left, top, left + SIDE, top + SIDE)), dtype=np.float32) / 255.0
    return ((a - MEAN) / STD).transpose(2, 0, 1)


class Prompts:
    """Token ids of prompt + answer, cached (few questions, about a thousand answers)."""

    def __init__(self, tok):
        self.tok, self.cache = tok, {}

    def ids(self, question: str, answer: str, n_images: int) -> tuple[list[int], int]:
        key = (question, answer, n_images)
        if key not in self.cache:
            text = (f"\nUSER: {question} Answer the question using a single word or phrase."
                    f"\nASSISTANT:")
            p = self.tok(text, add_special_tokens=False).input_ids
            full = self.tok(text + " " + answer, add_special_tokens=False).input_ids
            assert full[: len(p)] == p, (text, answer)
            ans = full[len(p):] + [EOS]
            ids = [BOS] + [IMAGE_TOKEN] * (GRID * GRID * n_images) + full + [EOS]
            self.cache[key] = (ids, len(ans))
        return self.cache[key]


def draw_item(rng: random.Random, prompts: Prompts, pair: bool, step: int, steps: int):
    if pair:
        kind = "pair"
    elif rng.random() < tight_share(step, steps):
        kind = "tight"
    else:
        kind = rng.choices(KINDS[1:4], SINGLE_P)[0]
    img, item = scenes.make_scene(rng, "easy" if kind == "easy" else "hard")
    q, a = item["question"], item["answers"][0]

    def crop(lo, hi):
        c, (x0, y0, side) = scenes.crop_around(rng, img, item["bbox"], lo, hi)
        return pixels(c), patch_labels(item, (x0, y0, SIDE / side, SIDE / side))

    def full():
        return pixels(img), patch_labels(item, full_view(img))

    if kind in ("easy", "hard"):
        views = [full()]
    elif kind == "tight":
        b = item["bbox"]
        side = int(rng.uniform(1.15, 2.0) * max(b[2] - b[0], b[3] - b[1]))
        views = [crop(side, side)]
    elif kind == "crop":
        views = [crop(SIDE, 2 * SIDE)]
    else:
        views = [full(), crop(SIDE, 2 * SIDE)]
    ids, n_ans = prompts.ids(q, a, len(views))
    return kind, ids, n_ans, views


def batch(items):
    t = max(len(ids) for _, ids, _, _ in items)
    k = max(n for _, _, n, _ in items) + 1
    input_ids = torch.full((len(items), t), PAD, dtype=torch.long)
    mask = torch.zeros((len(items), t), dtype=torch.long)
    labels = torch.full((len(items), k - 1), -100, dtype=torch.long)
    views = []
    for i, (_, ids, n, v) in enumerate(items):
        input_ids[i, t - len(ids):] = torch.tensor(ids)
        mask[i, t - len(ids):] = 1
        labels[i, k - 1 - n:] = torch.tensor(ids[-n:])
        views.extend(v)
    position_ids = (mask.cumsum(1) - 1).clamp(min=0)
    pix = torch.from_numpy(np.stack([p for p, _ in views]))
    patch = torch.from_numpy(np.stack([lab for _, lab in views]))
    return input_ids, mask, position_ids, pix, patch, labels, k


CLASS_WEIGHT = torch.tensor([0.1] + [1.0] * (N_PATCH_CLASSES - 1))
PLACE_WEIGHT = torch.tensor([0.1] + [1.0] * (N_PLACES - 1))


def patch_loss(patch_logits, patch):
    """Cross-entropy of the character and place heads (background weighted down)."""
    ce = torch.nn.functional.cross_entropy
    return (ce(patch_logits[..., :N_PATCH_CLASSES].reshape(-1, N_PATCH_CLASSES),
               patch[:, 0].reshape(-1), weight=CLASS_WEIGHT)
            + ce(patch_logits[..., N_PATCH_CLASSES:].reshape(-1, N_PLACES),
                 patch[:, 1].reshape(-1), weight=PLACE_WEIGHT))


def pretrain_vision(model, aux_head, seed: int, steps: int, log) -> None:
    """Stage 0: the encoder and the patch heads alone, on views of many scenes (8 views of
    each: tight crops, crops of SIDE..2*SIDE px, the whole scene), 64 views a step. Much
    cheaper per view than the full model, so the LLM starts with an encoder that sees
    characters."""
    rng = random.Random(seed)
    params = list(model.vision_tower.parameters()) + list(aux_head.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3, betas=(0.9, 0.98), weight_decay=0.05)
    t0 = time.time()
    run = 0.0
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = 2e-3 * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * (1 - step / steps))
        views = []
        for _ in range(8):
            img, item = scenes.make_scene(rng, "easy" if rng.random() < 0.2 else "hard")
            b = item["bbox"]
            for j in range(8):
                if j == 0:
                    views.append((pixels(img), patch_labels(item, full_view(img))))
                    continue
                if j < 4:
                    lo = hi = int(rng.uniform(1.15, 2.5) * max(b[2] - b[0], b[3] - b[1]))
                else:
                    lo, hi = SIDE, 2 * SIDE
                c, (x0, y0, side) = scenes.crop_around(rng, img, b, lo, hi)
                views.append((pixels(c), patch_labels(item, (x0, y0, SIDE / side, SIDE / side))))
        pix = torch.from_numpy(np.stack([v for v, _ in views]))
        patch = torch.from_numpy(np.stack([lab for _, lab in views]))
        vis = model.vision_tower(pix, output_hidden_states=True).hidden_states[-1][:, 1:]
        loss = patch_loss(aux_head(vis), patch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        run += loss.item()
        if (step + 1) % 25 == 0:
            print(f"vision step {step + 1}/{steps} {time.time() - t0:.0f}s patch loss {run / 25:.4f}",
                  flush=True)
            log.write(f"vision\t{step + 1}\t{time.time() - t0:.0f}\t{run / 25:.4f}\n")
            run = 0.0


def forward(model, aux_head, input_ids, mask, pos, pix, k):
    """LlavaForConditionalGeneration's forward for vision_feature_layer=-1 and the "default"
    strategy, written out to reuse the encoder's patch features for the auxiliary head:
    returns the last k logits and the per-patch class logits."""
    vis = model.vision_tower(pix, output_hidden_states=True).hidden_states[-1][:, 1:]
    feats = model.multi_modal_projector(vis)
    embeds = model.get_input_embeddings()(input_ids)
    is_image = (input_ids == IMAGE_TOKEN).unsqueeze(-1).expand_as(embeds)
    embeds = embeds.masked_scatter(is_image, feats.to(embeds.dtype))
    out = model.language_model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos,
                               num_logits_to_keep=k)
    return out.logits, aux_head(vis)


class Batches(torch.utils.data.IterableDataset):
    """The training batches, drawn in one worker process from one seed (so deterministic)."""

    def __init__(self, seed: int, steps: int, size: int):
        self.seed, self.steps, self.size = seed, steps, size

    def __iter__(self):
        torch.set_num_threads(1)
        rng = random.Random(self.seed)
        prompts = Prompts(AutoTokenizer.from_pretrained(TOKENIZER_DIR))
        for step in range(self.steps):
            pair = rng.random() < PAIR_BATCHES
            items = [draw_item(rng, prompts, pair, step, self.steps) for _ in range(self.size)]
            yield [it[0] for it in items], batch(items)


def save(model, tok_dir: Path, out: Path, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    model.to(torch.float32)
    ip = CLIPImageProcessor(size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE},
                            resample=3, do_center_crop=True, do_convert_rgb=True)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=PATCH,
                   vision_feature_select_strategy="default",
                   num_additional_image_tokens=1).save_pretrained(out)
    # the lean llava-hf tokenizer files, as the other fixtures carry them
    for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "added_tokens.json"]:
        shutil.copy(tok_dir / name, out / name)
    if (out / "tokenizer.model").exists():
        (out / "tokenizer.model").unlink()
    (out / "training.json").write_text(json.dumps(meta, indent=1) + "\n")
    (out / "NOTICE.md").write_text(NOTICE)


NOTICE = """# llava-demo

A small LLaVA-1.5-architecture model (`LlavaForConditionalGeneration`, 9.9M parameters) trained
from scratch by `tools/train_demo_llava.py` on generated scenes (`tools/demo_scenes.py`): cluttered
images with one small yellow sign carrying a 2- or 3-digit number or a short word. It answers
"What is the number on the sign?" and its variants, and nothing else.

It exists to show ViCrop's mechanism on a model that really reads: its input is 168 px, so a
sign in a 768-1344 px scene is too small to read in the plain answer, while the model still
looks at it; cropping there and asking again with both images reads it. It is a demonstration,
not a general-purpose model: it knows ~1,000 numbers and 24 words on one kind of sign.

- Vision: CLIP ViT, 168 px, patch 14 (a 12x12 map grid), 4 layers, width 128, features from
  the last layer (`vision_feature_layer=-1`), CLS dropped. LLM: LLaMA, 4 layers, width 128,
  4 heads, the real 32,000-piece LLaMA vocabulary plus llava-hf's `<image>` and `<pad>`.
- Training: see `training.json` (seed, steps, batch, learning rate, item mix, versions, time)
  and `train_log.tsv` (loss per 25 steps). Stored in float16.
- The tokenizer files derive from Meta's LLaMA tokenizer and fall under Meta's LLaMA licence
  (see tests/fixtures/README.md); the weights are MIT OR Apache-2.0 like the code.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=2025)
    ap.add_argument("--steps", type=int, default=1600)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vision-steps", type=int, default=400, help="stage 0 steps (64 views each)")
    ap.add_argument("--aux-weight", type=float, default=1.0, help="weight of the per-patch loss")
    ap.add_argument("--save-every", type=int, default=400,
                    help="also save OUT-stepN checkpoints (rounds the weights to f16 in memory)")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = LlavaForConditionalGeneration(model_config())
    model.config._attn_implementation = "sdpa"
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    # Auxiliary head (not saved): which character, if any, lies under each patch, and its place
    # in the text. Dense
    # supervision that teaches the small encoder its characters in a fraction of the samples
    # the answer loss alone needs; the LLM still has to learn where to look and what to read.
    aux_head = torch.nn.Linear(model.config.vision_config.hidden_size, N_PATCH_CLASSES + N_PLACES)
    a.out.mkdir(parents=True, exist_ok=True)
    log = open(a.out / "train_log.tsv", "w")
    if a.vision_steps:
        log.write("stage\tstep\tseconds\tpatch_loss\n")
        pretrain_vision(model, aux_head, a.seed + 1, a.vision_steps, log)
    params = list(model.named_parameters()) + [("aux." + n, p) for n, p in aux_head.named_parameters()]
    decay = [p for n, p in params if p.ndim >= 2]
    no_decay = [p for n, p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.98), eps=1e-8)

    def lr_at(step):
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        p = (step - a.warmup) / max(1, a.steps - a.warmup)
        return a.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))

    log.write("step\tseconds\tsamples\tlr\tloss\tpatch_loss\t" + "\t".join(f"exact_{k}" for k in KINDS) + "\n")
    print(f"{n_params / 1e6:.2f}M parameters; {a.steps} steps of {a.batch}", flush=True)
    t0 = time.time()
    run_loss, run_aux, run_n = 0.0, 0.0, 0
    hits = {k: [0, 0] for k in KINDS}
    loader = torch.utils.data.DataLoader(Batches(a.seed, a.steps, a.batch), batch_size=None,
                                         num_workers=1, prefetch_factor=4)
    for step, (kinds, (input_ids, mask, pos, pix, patch, labels, k)) in enumerate(loader):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits, patch_logits = forward(model, aux_head, input_ids, mask, pos, pix, k)
        logits = logits[:, :-1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 labels.reshape(-1), ignore_index=-100)
        aux = patch_loss(patch_logits, patch)
        total = loss + a.aux_weight * aux
        run_aux += aux.item()
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            ok = ((logits.argmax(-1) == labels) | (labels == -100)).all(-1)
            for kind, o in zip(kinds, ok.tolist()):
                hits[kind][0] += int(o)
                hits[kind][1] += 1
        run_loss += loss.item()
        run_n += 1
        if (step + 1) % 25 == 0 or step + 1 == a.steps:
            el = time.time() - t0
            ex = [hits[k][0] / max(1, hits[k][1]) for k in KINDS]
            log.write(f"{step + 1}\t{el:.0f}\t{(step + 1) * a.batch}\t{lr_at(step):.2e}\t"
                      f"{run_loss / run_n:.4f}\t{run_aux / run_n:.4f}\t"
                      + "\t".join(f"{e:.3f}" for e in ex) + "\n")
            log.flush()
            print(f"step {step + 1}/{a.steps} {el:.0f}s loss {run_loss / run_n:.4f} "
                  f"aux {run_aux / run_n:.4f} "
                  + " ".join(f"{k}={e:.2f}" for k, e in zip(KINDS, ex)), flush=True)
            run_loss, run_aux, run_n = 0.0, 0.0, 0
            hits = {k: [0, 0] for k in KINDS}
        if a.save_every and (step + 1) % a.save_every == 0 and step + 1 < a.steps:
            model.eval()
            save(model, TOKENIZER_DIR, a.out.parent / f"{a.out.name}-step{step + 1}",
                 {"step": step + 1})
            model.train()
    model.eval()
    meta = {"generator": "tools/train_demo_llava.py", "seed": a.seed, "vision_steps": a.vision_steps, "steps": a.steps, "aux_weight": a.aux_weight,
            "batch": a.batch, "lr": a.lr, "warmup": a.warmup, "threads": a.threads,
            "pair_batches": PAIR_BATCHES,
            "single_batch_kinds": dict(zip(KINDS[1:4], SINGLE_P)),
            "tight_share": "0.5 for the first sixth of the steps, then down to 0.1 at one half", "parameters": n_params,
            "seconds": round(time.time() - t0), "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "pillow": Image.__version__}
    save(model, TOKENIZER_DIR, a.out, meta)
    log.close()


if __name__ == "__main__":
    main()
