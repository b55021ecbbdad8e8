#!/usr/bin/env python3
"""Tiny random LLaVA-1.5 checkpoints, test images and transformers goldens for the Rust tests.

Run from anywhere (paths are relative to this file):

    tools/.venv/bin/python tools/make_llava_fixtures.py            # rewrites tests/fixtures/
    tools/.venv/bin/python tools/make_llava_fixtures.py --full-out target/fixtures-full
                                                                   # + every tensor, uncapped

Writes
    tests/fixtures/images/*.png                         8 test images
    tests/fixtures/llava-tiny-{a,b}/                    save_pretrained model + processor folders
    tests/fixtures/goldens/llava-tiny-{a,b}.safetensors goldens (f32 / i64 / u8 tensors only)
    tests/fixtures/goldens/llava-tiny-{a,b}.json        metadata, prompts, answers, margins, digests
    tests/fixtures/goldens/tokenizer.json               tokenizer encode/decode goldens

Deterministic: fixed seeds, single-threaded torch, no timestamps. The golden model is the
checkpoint reloaded from disk in float32 with eager attention, so it holds exactly the stored
bf16 / f16 values. See tools/README.md and tests/fixtures/README.md.
"""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps
from safetensors import safe_open
from safetensors.torch import save_file
import transformers
from transformers import (
    AddedToken,
    AutoProcessor,
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaTokenizerFast,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
IMAGES = FIX / "images"
GOLDENS = FIX / "goldens"
SP_MODEL = Path(os.environ.get("LLAMA_TOKENIZER", "/work/shared/assets/llama-tokenizer.model"))
SP_MODEL_MD5 = "eeec4125e9c7560836b4873b6f8e3025"

IMAGE_TOKEN, PAD_TOKEN, BOS, EOS = 32000, 32001, 1, 2
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PROMPT = "{tags}\nUSER: {q} Answer the question using a single word or phrase.\nASSISTANT:"
MAX_NEW_TOKENS = 12
MIN_MARGIN = 1e-2
CROP_BOX = (50, 80, 250, 280)  # chelsea_crop = chelsea.crop(CROP_BOX)

# Seeds: the first seed whose greedy margins are all >= MIN_MARGIN is used (and recorded).
CONFIGS = {
    "llava-tiny-a": dict(
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                    image_size=336, patch_size=14, projection_dim=32, hidden_act="quick_gelu",
                    layer_norm_eps=1e-5),
        text=dict(vocab_size=32064, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-5,
                  max_position_embeddings=4096, tie_word_embeddings=False),
        vision_feature_layer=-2, select="default", dtype=torch.bfloat16, max_shard_size="300KB",
        seed=7,
        # Size budget (tests/fixtures < ~13 MB): full resized_u8 tensors only for these images
        # (every image has SHA-256s of its uint8 and f32 preprocessing in the JSON, and
        # pixel_values == pixel_lut[c, resized_u8] exactly); full logits_first_text only for
        # these cases (every case has hidden_first_text, whose lm_head product it is).
        u8_stored=["chelsea"],
        first_text_logits=["q_chelsea"],
    ),
    "llava-tiny-b": dict(
        vision=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=3,
                    image_size=224, patch_size=16, projection_dim=48, hidden_act="quick_gelu",
                    layer_norm_eps=1e-5),
        text=dict(vocab_size=32064, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                  num_attention_heads=8, num_key_value_heads=8, rope_theta=500000.0, rms_norm_eps=1e-6,
                  max_position_embeddings=4096, tie_word_embeddings=True),
        vision_feature_layer=-1, select="full", dtype=torch.float16, max_shard_size=None,
        seed=4321,
        u8_stored=["exif_rotated", "gray", "palette", "rgba"],
        first_text_logits=[],
    ),
}

CASES = {
    "q_chelsea": (["chelsea"], "What is the number on the bus?"),
    "q_wide": (["wide"], "What color is the car on the left?"),
    "general_small": (["small"], "Write a general description of the image."),
    "two_images": (["chelsea", "chelsea_crop"], "What is the number on the bus?"),
}


def sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


# ------------------------------------------------------------------------------------ images
def make_images():
    """The test images. Real photos: scikit-image's CC0 samples; the rest synthetic."""
    from skimage import data

    IMAGES.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    Image.fromarray(data.chelsea()).save(IMAGES / "chelsea.png", optimize=True)
    Image.fromarray(data.coffee()).resize((300, 200), Image.LANCZOS).save(IMAGES / "coffee_small.png",
                                                                          optimize=True)

    # wide: 1200x500, smooth gradients, two solid shapes, a block of 6 px stripes ("text").
    w, h = 1200, 500
    xx, yy = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    arr = np.stack([xx * 200 + 30, yy * 180 + 40, (1 - xx) * 150 + 60], -1).astype(np.uint8)
    img = Image.fromarray(arr)
    d = ImageDraw.Draw(img)
    d.rectangle([80, 300, 260, 420], fill=(200, 30, 30))
    d.ellipse([600, 80, 760, 240], fill=(20, 160, 60))
    for x in range(900, 1100, 6):
        d.line([x, 100, x, 180], fill=(0, 0, 0), width=2)
    img.save(IMAGES / "wide.png", optimize=True)

    # small: 200x150
    arr = np.zeros((150, 200, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, 200)[None, :]
    arr[..., 1] = np.linspace(255, 0, 150)[:, None]
    arr[40:90, 60:140, 2] = 220
    Image.fromarray(arr).save(IMAGES / "small.png", optimize=True)

    # rgba: 300x260, alpha ramps 0..255 left to right, a noise patch, and a 20 px strip with
    # alpha 0 over non-zero colour (convert("RGB") must keep that colour).
    yy, xx = np.mgrid[0:260, 0:300]
    arr = np.stack([(xx * 255 // 299), (yy * 255 // 259), ((xx + yy) * 7) % 256,
                    np.linspace(0, 255, 300).astype(np.int64)[None, :].repeat(260, 0)],
                   -1).astype(np.uint8)
    arr[100:140, 100:200, :3] = rng.integers(0, 256, (40, 100, 3), dtype=np.uint8)
    arr[:, :20, 3] = 0
    Image.fromarray(arr, "RGBA").save(IMAGES / "rgba.png", optimize=True)

    # gray: mode L, 256 wide x 320 high
    g = (np.add.outer(np.arange(320), np.arange(256)) % 256).astype(np.uint8)
    Image.fromarray(g, "L").save(IMAGES / "gray.png", optimize=True)

    # palette: mode P, 32 colours (median cut of the astronaut photo), index 0 transparent
    p = Image.fromarray(data.astronaut()[::2, ::2][:240, :240]).quantize(colors=32)
    p.info["transparency"] = 0
    p.save(IMAGES / "palette.png", transparency=0, optimize=True)

    # exif_rotated: stored 320x200 RGB with EXIF orientation 6, displayed 200x320
    arr = np.zeros((200, 320, 3), np.uint8)
    arr[:, :160] = (250, 200, 10)
    arr[:100, :, 2] = 90
    arr[150:, 250:] = (10, 10, 240)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(IMAGES / "exif_rotated.png", exif=exif)

    # sanity: modes and sizes as specified
    expect = {"chelsea": ("RGB", (451, 300)), "coffee_small": ("RGB", (300, 200)),
              "wide": ("RGB", (1200, 500)), "small": ("RGB", (200, 150)), "rgba": ("RGBA", (300, 260)),
              "gray": ("L", (256, 320)), "palette": ("P", (240, 240)),
              "exif_rotated": ("RGB", (320, 200))}
    for stem, (mode, size) in expect.items():
        with Image.open(IMAGES / f"{stem}.png") as im:
            assert (im.mode, im.size) == (mode, size), (stem, im.mode, im.size)
    with Image.open(IMAGES / "palette.png") as im:
        assert "transparency" in im.info
    with Image.open(IMAGES / "exif_rotated.png") as im:
        assert im.getexif()[0x0112] == 6
    assert load_image("exif_rotated").size == (200, 320)
    with Image.open(IMAGES / "rgba.png") as im:
        rgba = np.asarray(im)
    assert (rgba[..., 3] == 0).any() and (rgba[rgba[..., 3] == 0][:, :3] != 0).any()
    total = sum(f.stat().st_size for f in IMAGES.glob("*.png"))
    assert total < 1_500_000, total


def load_image(stem):
    """How every golden loads an image (our Rust loader applies EXIF orientation too)."""
    if stem == "chelsea_crop":
        return load_image("chelsea").crop(CROP_BOX)
    with Image.open(IMAGES / f"{stem}.png") as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def image_stems():
    return sorted(p.stem for p in IMAGES.glob("*.png")) + ["chelsea_crop"]


# ------------------------------------------------------------------------------------ tokenizer
def make_tokenizer():
    """The full 32,000-piece LLaMA tokenizer, converted by transformers, plus llava-hf's
    `<image>` (32000) and `<pad>` (32001).

    `legacy=True, add_prefix_space=True` gives the `Prepend("▁")` + `Replace(" ", "▁")`
    normalizer that llava-hf/llava-1.5-7b-hf's tokenizer.json has: "<image>\\nUSER:" ->
    [32000, 29871, 13, 11889, 29901] as with the real checkpoint. (`legacy=False` alone gives a
    Metaspace pre-tokenizer with prepend_scheme "never": "What" -> 5618 instead of 1724, failing
    the known ids; `legacy=False, add_prefix_space=True` gives prepend_scheme "first", which
    drops the 29871 after `<image>`.)
    """
    md5 = hashlib.md5(SP_MODEL.read_bytes()).hexdigest()
    assert md5 == SP_MODEL_MD5, f"{SP_MODEL}: md5 {md5}"
    tok = LlamaTokenizerFast(vocab_file=str(SP_MODEL), legacy=True, add_prefix_space=True,
                             add_bos_token=True, add_eos_token=False, from_slow=True)
    tok.add_tokens([AddedToken("<image>", special=True, normalized=False)], special_tokens=True)
    tok.add_special_tokens({"pad_token": AddedToken("<pad>", special=True, normalized=False)})
    check_tokenizer(tok)
    return tok


def check_tokenizer(tok):
    assert len(tok) == 32002, len(tok)
    assert tok.convert_tokens_to_ids("<image>") == IMAGE_TOKEN
    assert tok.convert_tokens_to_ids("<pad>") == PAD_TOKEN and tok.pad_token_id == PAD_TOKEN
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (BOS, EOS, 0)
    # Known ids from shared/assets/README.md
    ids = tok("What is the number on the bus?", add_special_tokens=False).input_ids
    assert ids == [1724, 338, 278, 1353, 373, 278, 3593, 29973], ids
    ids = tok("02/20/2012", add_special_tokens=False).input_ids
    assert ids == [29871, 29900, 29906, 29914, 29906, 29900, 29914, 29906, 29900, 29896, 29906], ids
    assert tok("<image>\nUSER:").input_ids == [BOS, IMAGE_TOKEN, 29871, 13, 11889, 29901]


def tokenizer_goldens(tok):
    texts = [
        "What is the number on the bus?",
        "02/20/2012",
        "Hello world",
        "The year 1984 had 366 days? No: 365.",
        " leading space",
        "trailing space ",
        "   ",
        "two\nlines\n\nand a blank",
        "naïve café, 東京, 😀 emoji",
        "<image>\nUSER: What is this? Answer the question using a single word or phrase.\nASSISTANT:",
        "<image><image>\nUSER: What is the number on the bus? Answer the question using a single word or phrase.\nASSISTANT:",
        "Write a general description of the image.",
        "",
    ]
    enc = []
    for t in texts:
        ids = tok(t).input_ids
        ids_ns = tok(t, add_special_tokens=False).input_ids
        enc.append({"text": t, "ids": ids, "ids_no_special": ids_ns,
                    "tokens_no_special": tok.convert_ids_to_tokens(ids_ns)})
    dec = []
    for ids in ([1724, 338, 278, 1353], [1, 29871, 13, 3148, 1001, 29901], [32000, 450, 2],
                [29871, 243, 162, 155, 131], [319, 29871, 29906, 29900, 32001, 32001], [13, 13, 29896]):
        dec.append({"ids": ids, "text": tok.decode(ids, skip_special_tokens=True)})
    out = {"generator": "tools/make_llava_fixtures.py", "tokenizer": "llava-tiny-a/tokenizer.json",
           "encode": enc, "decode": dec}
    (GOLDENS / "tokenizer.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------------ weights
@torch.no_grad()
def redraw(model, seed, dtype):
    """Redraw every parameter at a larger scale than transformers' init, then round it to the
    storage dtype (and back to f32) so the saved checkpoint holds exactly these values.

    nn.Linear / lm_head weights N(0, 1.5^2/fan_in), biases N(0, 0.1^2); token, CLIP class and
    position embeddings N(0, 1); patch conv N(0, 1.5^2/fan_in); LayerNorm / RMSNorm weights
    1 + N(0, 0.1^2), LayerNorm biases N(0, 0.1^2)."""
    g = torch.Generator().manual_seed(seed)

    def normal(t, std, mean=0.0):
        t.copy_(torch.randn(t.shape, generator=g) * std + mean)

    for name, p in model.named_parameters():  # shared (tied) tensors are listed once
        if name.endswith("patch_embedding.weight"):
            normal(p, 1.5 / (p.shape[1] * p.shape[2] * p.shape[3]) ** 0.5)
        elif "norm" in name or "layrnorm" in name:
            normal(p, 0.1, 1.0 if name.endswith("weight") else 0.0)
        elif name.endswith("embed_tokens.weight") or "position_embedding" in name \
                or name.endswith("class_embedding"):
            normal(p, 1.0)
        elif p.dim() == 2:
            normal(p, 1.5 / p.shape[1] ** 0.5)
        elif name.endswith("bias"):
            normal(p, 0.1)
        else:
            raise RuntimeError(f"no init rule for {name} {tuple(p.shape)}")
        p.copy_(p.to(dtype).to(torch.float32))


def image_tokens_per_image(spec):
    v = spec["vision"]
    n = (v["image_size"] // v["patch_size"]) ** 2
    return n + (1 if spec["select"] == "full" else 0)


def build_checkpoint(name, spec, tok, seed):
    torch.manual_seed(seed)
    vcfg = CLIPVisionConfig(**spec["vision"])
    tcfg = LlamaConfig(**spec["text"], pad_token_id=PAD_TOKEN, bos_token_id=BOS, eos_token_id=EOS)
    cfg = LlavaConfig(vision_config=vcfg, text_config=tcfg, image_token_index=IMAGE_TOKEN,
                      projector_hidden_act="gelu", vision_feature_layer=spec["vision_feature_layer"],
                      vision_feature_select_strategy=spec["select"], pad_token_id=PAD_TOKEN,
                      tie_word_embeddings=spec["text"]["tie_word_embeddings"],
                      image_seq_length=image_tokens_per_image(spec))
    model = LlavaForConditionalGeneration(cfg).eval()
    redraw(model, seed, spec["dtype"])
    model.tie_weights()
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    out = FIX / name
    out.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():
        f.unlink()
    kwargs = dict(safe_serialization=True)
    if spec["max_shard_size"]:
        kwargs["max_shard_size"] = spec["max_shard_size"]
    model.to(spec["dtype"]).save_pretrained(out, **kwargs)

    r = spec["vision"]["image_size"]
    ip = CLIPImageProcessor(size={"shortest_edge": r}, crop_size={"height": r, "width": r},
                            do_resize=True, do_center_crop=True, do_rescale=True, do_normalize=True,
                            resample=Image.BICUBIC, image_mean=CLIP_MEAN, image_std=CLIP_STD,
                            do_convert_rgb=True)
    # num_additional_image_tokens=1 (the CLS token), as llava-hf's processor_config.json has:
    # "default" drops it again (576), "full" keeps it (197).
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=spec["vision"]["patch_size"],
                          vision_feature_select_strategy=spec["select"], chat_template=None,
                          num_additional_image_tokens=1)
    proc.save_pretrained(out)
    # Lean folder, loadable from tokenizer.json alone (as llava-hf's is): no SentencePiece
    # model, no conversion-only keys, tokenizer.json without indentation.
    if (out / "tokenizer.model").exists():
        (out / "tokenizer.model").unlink()
    tc = json.loads((out / "tokenizer_config.json").read_text())
    for k in ("add_prefix_space", "from_slow", "vocab_file"):
        tc.pop(k, None)
    (out / "tokenizer_config.json").write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")
    tj = json.loads((out / "tokenizer.json").read_text())
    (out / "tokenizer.json").write_text(json.dumps(tj, ensure_ascii=False, separators=(",", ":")))
    (out / "NOTICE.md").write_text(
        f"Random-weight LLaVA-1.5 test checkpoint written by tools/make_llava_fixtures.py "
        f"(transformers {transformers.__version__}). Not a trained model.\n\n"
        "tokenizer.json, tokenizer_config.json, special_tokens_map.json and added_tokens.json derive "
        "from Meta's LLaMA SentencePiece tokenizer (shared/assets/llama-tokenizer.model, taken from "
        "GitHub karpathy/llama2.c, md5 eeec4125e9c7560836b4873b6f8e3025) and fall under Meta's LLaMA "
        "licence. `<image>` (32000) and `<pad>` (32001) are added as llava-hf/llava-1.5-7b-hf has "
        "them. The random weights and the other files are part of this project.\n")

    # The golden model: the checkpoint as saved, in f32, eager attention.
    model = LlavaForConditionalGeneration.from_pretrained(out, torch_dtype=torch.float32,
                                                          attn_implementation="eager").eval()
    for k, v in model.state_dict().items():
        assert torch.equal(v, reference[k]), f"{name}: reloaded {k} differs"
    proc = AutoProcessor.from_pretrained(out)
    assert isinstance(proc, LlavaProcessor), type(proc)
    check_tokenizer(proc.tokenizer)
    return model, proc


def saved_tensors(name):
    """(tensor name, shape, dtype, file) of every saved weight, in file order."""
    rows = []
    for f in sorted((FIX / name).glob("*.safetensors")):
        with safe_open(f, "pt") as sf:
            for k in sf.keys():
                t = sf.get_slice(k)
                rows.append((k, list(t.get_shape()), t.get_dtype(), f.name))
    return sorted(rows)


# ------------------------------------------------------------------------------------ goldens
def pixel_lut(proc):
    """f32 [3, 256]: the processor's value for channel c and uint8 value v. The normalisation is
    elementwise, so pixel_values == lut[c, resized_u8[..., c]] exactly (asserted per image)."""
    ramp = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None], (256, 256, 3)).copy()
    r = proc.image_processor.crop_size["height"]
    pv = proc.image_processor(Image.fromarray(ramp), do_resize=False, do_center_crop=False,
                              return_tensors="np")["pixel_values"][0]  # [3, 256, 256]
    lut = pv[:, 0, :].astype(np.float32)
    assert np.array_equal(pv, np.broadcast_to(lut[:, None, :], pv.shape)), "non-elementwise"
    assert r > 0
    return lut


def preprocess(proc, img, lut):
    ip = proc.image_processor
    raw = ip(img, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]
    assert np.array_equal(raw, np.round(raw)) and raw.min() >= 0 and raw.max() <= 255
    u8 = raw.transpose(1, 2, 0).astype(np.uint8)  # HWC
    pv = ip(img, return_tensors="np")["pixel_values"][0].astype(np.float32)  # CHW
    rebuilt = np.stack([lut[c][u8[..., c]] for c in range(3)])
    assert np.array_equal(pv.view(np.uint32), rebuilt.view(np.uint32)), "pixel_values != lut[u8]"
    return u8, pv


def margins_of(scores):
    out = []
    for s in scores:
        top = torch.topk(s[0].float(), 2).values
        out.append(float(top[0] - top[1]))
    return out


@torch.no_grad()
def run_case(model, proc, stems, q):
    imgs = [load_image(s) for s in stems]
    prompt = PROMPT.format(tags="<image>" * len(imgs), q=q)
    inputs = proc(images=imgs, text=prompt, return_tensors="pt")
    ids = inputs["input_ids"][0]
    pv = inputs["pixel_values"]
    cfg = model.config
    vt = model.vision_tower(pv, output_hidden_states=True)
    assert len(vt.hidden_states) == cfg.vision_config.num_hidden_layers + 1
    feats = vt.hidden_states[cfg.vision_feature_layer]
    if cfg.vision_feature_select_strategy == "default":
        feats = feats[:, 1:]
    proj = model.multi_modal_projector(feats)
    ref = model.get_image_features(pv, cfg.vision_feature_layer, cfg.vision_feature_select_strategy)
    assert torch.equal(ref, proj), "get_image_features differs from hidden_states[layer] + projector"
    out = model(**inputs, output_attentions=True, output_hidden_states=True)
    image_pos = (ids == IMAGE_TOKEN).nonzero().flatten()
    assert len(image_pos) == len(imgs) * proj.shape[1]
    gen = model.generate(**inputs, do_sample=False, max_new_tokens=MAX_NEW_TOKENS, output_scores=True,
                         return_dict_in_generate=True, pad_token_id=PAD_TOKEN)
    new = gen.sequences[0, ids.shape[0]:].tolist()
    margins = margins_of(gen.scores)
    stopped = EOS in new
    if stopped:
        new = new[: new.index(EOS)]
        margins = margins[: len(new) + 1]  # the step that chose EOS counts too
    # first-step logits of generate == those of the plain forward at the last position
    assert torch.allclose(gen.scores[0][0], out.logits[0, -1], atol=1e-5, rtol=0)
    # transformers 4.47.1 runs every cached decoding step through LLaVA's *legacy* branch (the
    # step has no image tokens, fewer than image_seq_length), which masks cached positions whose
    # layer-0 keys sum to exactly 0. Cross-check generate() against a cache-free greedy loop.
    seq = ids[None]
    for step, tok_id in enumerate(gen.sequences[0, ids.shape[0]:].tolist()):
        logits = model(input_ids=seq, pixel_values=pv, use_cache=False).logits[0, -1]
        assert int(logits.argmax()) == tok_id, f"step {step}: cache-free greedy differs"
        assert abs(float(torch.topk(logits, 2).values.diff().abs()) - margins_of(gen.scores)[step]) < 1e-3
        seq = torch.cat([seq, torch.tensor([[tok_id]])], 1)
    return dict(imgs=imgs, prompt=prompt, inputs=inputs, ids=ids, pv=pv, feats=feats, proj=proj,
                out=out, image_pos=image_pos, new=new, margins=margins, stopped=stopped)


def goldens(name, spec, model, proc, seed, seeds_rejected, full_out=None):
    cfg = model.config
    r = cfg.vision_config.image_size
    layer = cfg.text_config.num_hidden_layers // 2
    lut = pixel_lut(proc)
    tensors = {"pixel_lut": torch.from_numpy(lut.copy())}
    full = {"pixel_lut": tensors["pixel_lut"]}
    meta = {
        "generator": "tools/make_llava_fixtures.py",
        "versions": {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
                     "numpy": np.__version__, "pillow": Image.__version__},
        "config": name,
        "seed": seed,
        "seeds_rejected": seeds_rejected,
        "storage_dtype": str(spec["dtype"]).replace("torch.", ""),
        "image_size": r,
        "patch_size": cfg.vision_config.patch_size,
        "image_tokens_per_image": image_tokens_per_image(spec),
        "vision_feature_layer": cfg.vision_feature_layer,
        "vision_hidden_state_index": cfg.vision_feature_layer % (cfg.vision_config.num_hidden_layers + 1),
        "vision_feature_select_strategy": cfg.vision_feature_select_strategy,
        "attn_layer": layer,
        "max_new_tokens": MAX_NEW_TOKENS,
        "ids": {"bos": BOS, "eos": EOS, "image": IMAGE_TOKEN, "pad": PAD_TOKEN},
        "prompt_template": PROMPT,
        "images": {},
        "cases": {},
    }
    for stem in image_stems():
        img = load_image(stem)
        u8, pv = preprocess(proc, img, lut)
        info = {"file": None if stem == "chelsea_crop" else f"images/{stem}.png",
                "size": list(img.size), "processed": [r, r],
                "resized_u8": None, "pixel_values": None,
                "resized_u8_sha256": sha256(u8), "pixel_values_sha256": sha256(pv)}
        if stem == "chelsea_crop":
            info["crop_of"], info["crop_box"] = "chelsea", list(CROP_BOX)
        else:
            with Image.open(IMAGES / f"{stem}.png") as src:
                info["mode"], info["stored_size"] = src.mode, list(src.size)
        if stem in spec["u8_stored"]:
            tensors[f"resized_u8/{stem}"] = torch.from_numpy(u8.copy())
            info["resized_u8"] = f"resized_u8/{stem}"
        full[f"resized_u8/{stem}"] = torch.from_numpy(u8.copy())
        full[f"pixel_values/{stem}"] = torch.from_numpy(pv.copy())
        meta["images"][stem] = info

    min_margin = float("inf")
    for case, (stems, q) in CASES.items():
        c = run_case(model, proc, stems, q)
        ids, out = c["ids"], c["out"]
        first_text = int(c["image_pos"][-1]) + 1
        pv = c["pv"]
        for i, s in enumerate(stems):  # the case's pixel values are the per-image ones
            assert sha256(pv[i].numpy()) == meta["images"][s]["pixel_values_sha256"], (case, s)
        hs = out.hidden_states[-1][0]  # after the final RMSNorm
        t = {
            "input_ids": ids.to(torch.int64),
            "image_features": c["feats"].float(),
            "projected": c["proj"].float(),
            "logits_last": out.logits[0, -1].float(),
            "attn_row": out.attentions[layer][0, :, -1, :].float(),
            "hidden_last": hs[-1].float(),
            "hidden_first_text": hs[first_text].float(),
            "generated_ids": torch.tensor(c["new"], dtype=torch.int64),
        }
        row_sum = t["attn_row"].sum(-1)
        assert torch.allclose(row_sum, torch.ones_like(row_sum), atol=1e-5)
        for k, v in t.items():
            tensors[f"{case}/{k}"] = v.contiguous()
            full[f"{case}/{k}"] = v.contiguous()
        lft = out.logits[0, first_text].float().contiguous()
        full[f"{case}/logits_first_text"] = lft
        full[f"{case}/pixel_values"] = pv.float().contiguous()
        if case in spec["first_text_logits"]:
            tensors[f"{case}/logits_first_text"] = lft
        runs = [[int(c["image_pos"][i * c["proj"].shape[1]]), int(c["image_pos"][(i + 1) * c["proj"].shape[1] - 1]) + 1]
                for i in range(len(stems))]
        after = ids[first_text:first_text + 4].tolist()
        min_margin = min(min_margin, min(c["margins"]))
        meta["cases"][case] = {
            "images": stems,
            "question": q,
            "prompt": c["prompt"],
            "seq_len": int(ids.shape[0]),
            "image_token_runs": runs,
            "first_text_position": first_text,
            "ids_after_last_image": after,
            "tokens_after_last_image": proc.tokenizer.convert_ids_to_tokens(after),
            "attn_layer": layer,
            "pixel_values": [f"pixel_values/{s}" for s in stems],
            "generated_ids": c["new"],
            "stopped_at_eos": c["stopped"],
            "answer": proc.tokenizer.decode(c["new"], skip_special_tokens=True).strip(),
            "greedy_margins": c["margins"],
            "min_greedy_margin": min(c["margins"]),
            "top1_last": int(out.logits[0, -1].argmax()),
        }
        print(f"  {name} {case}: L={ids.shape[0]} after image {after} gen={c['new']} "
              f"eos={c['stopped']} min margin {min(c['margins']):.4f}")
    meta["min_greedy_margin"] = min_margin
    meta["tensors"] = {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
                       for k, v in sorted(tensors.items())}
    meta["weights"] = [{"name": n, "shape": s, "dtype": d, "file": f} for n, s, d, f in saved_tensors(name)]
    return tensors, meta, full, min_margin


def write_goldens(name, tensors, meta, full, full_out):
    GOLDENS.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, GOLDENS / f"{name}.safetensors")
    (GOLDENS / f"{name}.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    if full_out:
        full_out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in sorted(full.items())}, full_out / f"{name}.safetensors")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full-out", type=Path, default=None,
                    help="also write every golden tensor (all resized_u8 and pixel_values, per-case "
                         "pixel_values, logits_first_text for every case) to DIR/<config>.safetensors; "
                         "large (~40 MB), not for the repository")
    ap.add_argument("--only", choices=sorted(CONFIGS), action="append", help="only this checkpoint")
    args = ap.parse_args()

    # The Rust port reproduces Pillow 11's resize; Pillow 13 orders the passes differently for
    # images whose height shrinks much more than the width (see vicrop-core/src/pil.rs).
    if Image.__version__ != "11.0.0":
        sys.exit(f"Pillow {Image.__version__} is installed; the fixtures need 11.0.0 (tools/requirements.txt)")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    make_images()
    tok = make_tokenizer()
    GOLDENS.mkdir(parents=True, exist_ok=True)
    tokenizer_goldens(tok)
    worst = {}
    for name, spec in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        seed, rejected = spec["seed"], []
        for _ in range(20):
            print(f"{name}: seed {seed}")
            model, proc = build_checkpoint(name, spec, tok, seed)
            tensors, meta, full, m = goldens(name, spec, model, proc, seed, rejected)
            if m >= MIN_MARGIN:
                break
            rejected.append({"seed": seed, "min_greedy_margin": m})
            seed += 1
        else:
            sys.exit(f"{name}: no seed with all greedy margins >= {MIN_MARGIN}")
        write_goldens(name, tensors, meta, full, args.full_out)
        worst[name] = m
        print(f"{name}: seed {seed}, smallest greedy margin {m:.4f}")
    print("smallest greedy margins:", worst)


if __name__ == "__main__":
    main()
