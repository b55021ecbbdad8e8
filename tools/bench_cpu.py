#!/usr/bin/env python3
"""CPU benchmark: the Python reference ViCrop pipeline (PyTorch + transformers, as
tools/gen_vicrop_goldens.py runs it) against `vicrop crop`, on a LLaVA-1.5-7B-wide checkpoint
with few LLM layers (random weights), plus the two building blocks of every answer: one
prefill and one decode step of the language model.

    cargo build --release -p vicrop-eval --bin vicrop && cargo build --release -p vicrop --example llm_step
    tools/.venv/bin/python tools/bench_cpu.py                 # builds the checkpoint on first use
    tools/.venv/bin/python tools/bench_cpu.py --make          # only (re)build the checkpoint, then exit

The checkpoint (default `target/bench/llava-7b-width`, ~2 GB, git-ignored) is
llava-hf/llava-1.5-7b-hf's configuration (CLIP ViT-L/14-336, 1024 -> 4096 projector, LLaMA
4096 wide, 32 heads, vocabulary 32064) with `--llm-layers` decoder layers (default 2), random
weights from the model's own initialisation (seed 0, checked finite and giving untied logits),
saved in bfloat16 in 1 GB shards (index + 3 files for 2 layers; 2 GB shards would leave that in
one file), with the full LLaMA tokenizer and llava-hf's processor files (built as
tools/make_llava_fixtures.py builds them). The reference loads it in float32 with eager
attention. Building takes ~1-2 minutes and ~4 GB of memory.

Per method (rel-att, grad-att, pure-grad), one image and one question, high-res off, the same
`--layer` on both sides (default: the last LLM layer):
  - reference: the median wall time of `gen_vicrop_goldens.vicrop(...)` (baseline answer, map,
    box, final answer) over `--repeats`;
  - vicrop: the median of `timing.run_s` of `vicrop crop --json` (image preparation and the
    run) over as many runs, each a fresh process;
  - the map difference max |vicrop - reference| / max |reference| (both are the raw map the box
    is chosen from, before any normalisation or colouring), whether the boxes are identical and
    whether the final (crop) answers are identical. With `--vicrop-dtype f16|bf16` these still
    compare against the float32 reference.
Prefill / decode: `target/release/examples/llm_step MODEL POSITIONS REPEATS DTYPE` against the
same steps on the reference's `model.language_model` (random N(0, 0.02) embeddings of
`--positions` positions into an empty cache, last position's logits included; then one more
position with the cache), best of `--step-repeats` after one warm-up, in milliseconds. The same
rounds time one vision pass: N(0, 1) pixels through the vision tower and the projector, as one
answer's image (the reference's tower runs all its layers; vicrop stops at the feature layer).

Model loading is excluded on both sides (printed separately). Both sides get the same number
of threads: `torch.set_num_threads(--threads)` here, `RAYON_NUM_THREADS` for the Rust
processes. Do not run it while something else keeps the CPUs busy (e.g. a cargo build).
"""

import argparse
import datetime
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True  # importing the sibling scripts leaves no __pycache__ behind

import numpy as np  # noqa: E402
import PIL  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402
from transformers import (  # noqa: E402
    CLIPImageProcessor,
    CLIPVisionConfig,
    DynamicCache,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_vicrop_goldens as ref  # noqa: E402
import make_llava_fixtures as fixtures  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = ROOT / "target" / "bench" / "llava-7b-width"
DEFAULT_IMAGE = ROOT / "tests" / "fixtures" / "images" / "chelsea.png"
METHODS = ["rel-att", "grad-att", "pure-grad"]

# llava-hf/llava-1.5-7b-hf's config.json (the LLM depth comes from --llm-layers).
VISION_7B = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                 patch_size=14, image_size=336, projection_dim=768, hidden_act="quick_gelu",
                 layer_norm_eps=1e-5)
TEXT_7B = dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_attention_heads=32,
               num_key_value_heads=32, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=4096,
               initializer_range=0.02, tie_word_embeddings=False)


# ------------------------------------------------------------------------------ the checkpoint
def llava_7b_config(llm_layers):
    vision = CLIPVisionConfig(**VISION_7B)
    text = LlamaConfig(**TEXT_7B, num_hidden_layers=llm_layers, pad_token_id=fixtures.PAD_TOKEN,
                       bos_token_id=fixtures.BOS, eos_token_id=fixtures.EOS)
    return LlavaConfig(vision_config=vision, text_config=text, image_token_index=fixtures.IMAGE_TOKEN,
                       projector_hidden_act="gelu", vision_feature_layer=-2,
                       vision_feature_select_strategy="default", pad_token_id=fixtures.PAD_TOKEN,
                       tie_word_embeddings=False, image_seq_length=576)


def check_parameters(model):
    """Every parameter finite, every matrix random (biases start at 0 and norms at 1 in the
    model's own initialisation)."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            sys.exit(f"random checkpoint: {name} has non-finite values")
        if p.dim() >= 2 and float(p.std()) == 0.0:
            sys.exit(f"random checkpoint: {name} is constant")


def write_processor(out):
    """Tokenizer + image processor as tools/make_llava_fixtures.py writes them for its
    checkpoints (the full LLaMA tokenizer with `<image>` = 32000 and `<pad>` = 32001; CLIP 336
    preprocessing as llava-hf's preprocessor_config.json), leaned the same way."""
    tok = fixtures.make_tokenizer()
    side = VISION_7B["image_size"]
    images = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                do_resize=True, do_center_crop=True, do_rescale=True, do_normalize=True,
                                resample=Image.BICUBIC, image_mean=fixtures.CLIP_MEAN,
                                image_std=fixtures.CLIP_STD, do_convert_rgb=True)
    proc = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=VISION_7B["patch_size"],
                          vision_feature_select_strategy="default", chat_template=None,
                          num_additional_image_tokens=1)
    proc.save_pretrained(out)
    # Loadable from tokenizer.json alone, as llava-hf's folder is.
    (out / "tokenizer.model").unlink(missing_ok=True)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    for key in ("add_prefix_space", "from_slow", "vocab_file"):
        config.pop(key, None)
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def write_notice(out, llm_layers):
    (out / "NOTICE.md").write_text(
        f"Random-weight LLaVA-1.5-7B-shaped benchmark checkpoint ({llm_layers} LLM layers) written by "
        f"tools/bench_cpu.py (transformers {transformers.__version__}, seed 0). Not a trained model.\n\n"
        "The tokenizer files derive from Meta's LLaMA SentencePiece tokenizer "
        "(shared/assets/llama-tokenizer.model) and fall under Meta's LLaMA licence.\n")


def clear_folder(out):
    """Removes the files of an earlier build (only plain files directly in the folder)."""
    fixtures_dir = (ROOT / "tests" / "fixtures").resolve()
    if out.resolve().is_relative_to(fixtures_dir):
        sys.exit(f"refusing to build a benchmark checkpoint inside {fixtures_dir}")
    out.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():
        if f.is_file():
            f.unlink()


def make_checkpoint(out, llm_layers):
    t0 = time.perf_counter()
    clear_folder(out)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(llava_7b_config(llm_layers)).eval()
    check_parameters(model)
    model.to(torch.bfloat16).save_pretrained(out, max_shard_size="1GB", safe_serialization=True)
    del model
    gc.collect()
    write_processor(out)
    write_notice(out, llm_layers)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"built {out} ({llm_layers} LLM layers, {size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.1f} s",
          flush=True)


@torch.no_grad()
def sanity_check(m, image, question):
    """One forward of the reloaded checkpoint on the benchmark's prompt: finite logits, not all
    tied, a strict top-1."""
    inputs = m.inputs([image], question)
    logits = m.model(**inputs, num_logits_to_keep=1).logits[0, -1]
    if not torch.isfinite(logits).all():
        sys.exit("random checkpoint: non-finite logits")
    top = torch.topk(logits, 2).values
    spread = float(logits.max() - logits.min())
    if spread < 1e-3 or float(top[0] - top[1]) <= 0.0:
        sys.exit(f"random checkpoint: logits (nearly) tied (spread {spread}, top-2 {top.tolist()})")
    print(f"sanity check: {inputs['input_ids'].shape[1]} positions, logits std {float(logits.std()):.3f}, "
          f"spread {spread:.3f}, top-1/top-2 gap {float(top[0] - top[1]):.4f}", flush=True)


# ------------------------------------------------------------------------------ both sides
def resolve(path):
    """A path as given, else relative to the repository root."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p.resolve()
    return (ROOT / p).resolve()


def load_image(path):
    """What gen_vicrop_goldens.load does for a stored image: EXIF orientation, RGB."""
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def load_reference(checkpoint):
    """The reference model in float32 with eager attention. ref.Llava joins its argument to the
    fixtures folder; an absolute path replaces that folder (pathlib), so any folder loads."""
    t0 = time.perf_counter()
    m = ref.Llava(str(checkpoint))
    assert m.dir == checkpoint, (m.dir, checkpoint)
    assert next(m.model.parameters()).dtype == torch.float32
    return m, time.perf_counter() - t0


def time_reference(m, image, question, method, layer, repeats):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = ref.vicrop(m, image, question, method, False, layer=layer)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def rust_env(threads):
    return {"RAYON_NUM_THREADS": str(threads), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def run_vicrop(args, checkpoint, method, layer):
    cmd = [str(args.vicrop), "crop", "--model", str(checkpoint), "--image", str(args.image),
           "--question", args.question, "--method", method, "--layer", str(layer),
           "--max-new-tokens", str(ref.MAX_NEW_TOKENS), "--dtype", args.vicrop_dtype, "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=rust_env(args.threads))
    if out.returncode != 0:
        sys.exit(f"vicrop crop failed ({out.returncode}):\n{' '.join(cmd)}\n{out.stderr}")
    return json.loads(out.stdout)


def time_vicrop(args, checkpoint, method, layer):
    runs = [run_vicrop(args, checkpoint, method, layer) for _ in range(args.repeats)]
    run_s = statistics.median(r["timing"]["run_s"] for r in runs)
    return run_s, runs[-1]


def map_difference(rust_map, ref_map):
    """max |vicrop - reference| / max |reference| over the raw maps (vicrop writes non-finite
    values as null, read back as NaN); None when the shapes differ."""
    ours = np.array(rust_map["values"], dtype=np.float64)
    theirs = np.array(ref_map, dtype=np.float64)
    if ours.shape != theirs.shape or ours.shape != (rust_map["rows"], rust_map["cols"]):
        return None
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def compare(rust, result):
    return {
        "map_rel_diff": map_difference(rust["map"], result["map"]),
        "box_same": list(rust["bbox"]) == list(result["bbox"]),
        "answer_same": rust["crop_answer"] == result["crop"]["text"],
        "answer_ids_same": list(rust["crop_answer_token_ids"]) == list(result["crop"]["ids"]),
        "baseline_same": list(rust["answer_token_ids"]) == list(result["baseline"]["ids"]),
        "reference_box": result["bbox"],
        "vicrop_box": rust["bbox"],
        "reference_answer": result["crop"]["text"],
        "vicrop_answer": rust["crop_answer"],
        "reference_min_greedy_margin": min((a["min_margin"] for a in (result["baseline"], result["crop"])
                                            if a["min_margin"] is not None), default=None),
    }


# ------------------------------------------------------------------------------ prefill / decode
@torch.no_grad()
def reference_llm_step(m, positions, repeats):
    """Best-of-repeats prefill and decode of the reference's language model and one vision pass
    (ms), one warm-up."""
    lm = m.model.language_model
    hidden = lm.config.hidden_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, positions, hidden, generator=g) * 0.02
    step = torch.randn(1, 1, hidden, generator=g) * 0.02
    side = m.model.config.vision_config.image_size
    pixels = torch.randn(1, 3, side, side, generator=g)
    prefill, decode, vision = float("inf"), float("inf"), float("inf")
    for round_ in range(repeats + 1):
        t0 = time.perf_counter()
        out = lm(inputs_embeds=x, past_key_values=DynamicCache(), use_cache=True, num_logits_to_keep=1)
        out.logits[0, -1].log_softmax(-1).max()
        p = time.perf_counter() - t0
        t0 = time.perf_counter()
        nxt = lm(inputs_embeds=step, past_key_values=out.past_key_values, use_cache=True)
        nxt.logits[0, -1].log_softmax(-1).max()
        d = time.perf_counter() - t0
        t0 = time.perf_counter()
        states = m.model.vision_tower(pixels, output_hidden_states=True).hidden_states
        m.model.multi_modal_projector(states[m.model.config.vision_feature_layer][:, 1:])
        v = time.perf_counter() - t0
        if round_ > 0:
            prefill, decode, vision = min(prefill, p), min(decode, d), min(vision, v)
    return {"prefill_ms": prefill * 1e3, "decode_ms": decode * 1e3, "vision_ms": vision * 1e3}


def rust_llm_step(args, checkpoint):
    """llm_step's JSON line, or None (with a message) when the example is not built or fails."""
    if not Path(args.llm_step).exists():
        print(f"skipping the Rust prefill/decode rows: {args.llm_step} is not built "
              "(cargo build --release -p vicrop --example llm_step)", file=sys.stderr)
        return None
    cmd = [str(args.llm_step), str(checkpoint), str(args.positions), str(args.step_repeats), args.vicrop_dtype]
    out = subprocess.run(cmd, capture_output=True, text=True, env=rust_env(args.threads))
    if out.returncode != 0:
        print(f"skipping the Rust prefill/decode rows: llm_step failed:\n{out.stderr}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ report
def yes_no(flag):
    return "yes" if flag else "no"


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def print_table(header, rows, steps):
    print(header)
    print()
    print("| step | reference (PyTorch) s | vicrop s | ratio (reference / vicrop) "
          "| map max diff / max | box same | answer same |")
    print("|---|---:|---:|---:|---:|---|---|")
    for r in rows:
        diff = "shape differs" if r["map_rel_diff"] is None else f"{r['map_rel_diff']:.2e}"
        print(f"| {r['method']} | {r['reference_s']:.3f} | {r['vicrop_s']:.3f} | "
              f"{r['ratio']:.2f} | {diff} | {yes_no(r['box_same'])} | {yes_no(r['answer_same'])} |")
    for s in steps:
        print(f"| {s['step']} (ms) | {fmt(s['reference_ms'], '.1f')} | {fmt(s['vicrop_ms'], '.1f')} | "
              f"{fmt(s['ratio'], '.2f')} | | | |")


STAGES = ("vision", "prefill", "decode", "map", "box", "final_answer", "total")


def print_stages(rows):
    """Where vicrop's time went (`timings_ms` of its last run per method), in seconds."""
    rows = [r for r in rows if r.get("vicrop_timings_ms")]
    if not rows:
        return
    print()
    print("vicrop by stage, seconds (`timings_ms` of `vicrop crop --json`):")
    print()
    print("| method | " + " | ".join(STAGES) + " |")
    print("|---|" + "---:|" * len(STAGES))
    for r in rows:
        t = r["vicrop_timings_ms"]
        print(f"| {r['method']} | " + " | ".join(f"{t.get(k, 0) / 1e3:.2f}" for k in STAGES) + " |")


def checkpoint_shape(m):
    t, v = m.model.config.text_config, m.model.config.vision_config
    return {"llm_layers": t.num_hidden_layers, "llm_hidden": t.hidden_size, "llm_heads": t.num_attention_heads,
            "vocab": t.vocab_size, "vision_layers": v.num_hidden_layers, "vision_hidden": v.hidden_size,
            "image_size": v.image_size}


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                    help="model folder (built there when it has no config.json)")
    ap.add_argument("--make", action="store_true",
                    help="(re)build the checkpoint, check that it loads and is sane, and exit")
    ap.add_argument("--llm-layers", type=int, default=2, help="decoder layers of a built checkpoint")
    ap.add_argument("--image", default=str(DEFAULT_IMAGE))
    ap.add_argument("--question", default="What is the number on the bus?")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated, of " + ", ".join(METHODS))
    ap.add_argument("--layer", type=int, default=None, help="LLM layer of the maps (default: the last)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per method (the median is reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vicrop-dtype", choices=["f32", "f16", "bf16"], default="f32")
    ap.add_argument("--vicrop", default=str(ROOT / "target" / "release" / "vicrop"))
    ap.add_argument("--llm-step", default=str(ROOT / "target" / "release" / "examples" / "llm_step"))
    ap.add_argument("--positions", type=int, default=600, help="prefill length")
    ap.add_argument("--step-repeats", type=int, default=3, help="best of this many prefill/decode rounds")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = ap.parse_args()
    args.methods = [s.strip() for s in args.methods.split(",") if s.strip()]
    bad = [s for s in args.methods if s not in METHODS]
    if bad or not args.methods:
        ap.error(f"--methods: give one or more of {METHODS} (unknown: {bad})")
    if args.repeats < 1 or args.step_repeats < 1 or args.positions < 1 or args.threads < 1:
        ap.error("--repeats, --step-repeats, --positions and --threads must be at least 1")
    args.checkpoint = resolve(args.checkpoint)
    args.image = resolve(args.image)
    return args


def main():
    args = parse_args()
    if PIL.__version__ != ref.PILLOW:
        print(f"warning: Pillow {PIL.__version__}, the reference needs {ref.PILLOW} for pure-grad parity",
              file=sys.stderr)
    torch.set_num_threads(args.threads)
    image = load_image(args.image)

    built = False
    if args.make or not (args.checkpoint / "config.json").exists():
        make_checkpoint(args.checkpoint, args.llm_layers)
        built = True
    m, load_s = load_reference(args.checkpoint)
    print(f"reference loaded in {load_s:.1f} s (float32, eager attention)", flush=True)
    if built:
        sanity_check(m, image, args.question)
    if args.make:
        return
    if not Path(args.vicrop).exists():
        sys.exit(f"{args.vicrop} is missing: cargo build --release -p vicrop-eval --bin vicrop")

    layer = m.layers - 1 if args.layer is None else args.layer
    if not 0 <= layer < m.layers:
        sys.exit(f"--layer {layer}: the checkpoint has {m.layers} LLM layers")
    rows = []
    for method in args.methods:
        print(f"{method}: reference ...", file=sys.stderr, flush=True)
        ref_s, result = time_reference(m, image, args.question, method, layer, args.repeats)
        print(f"{method}: vicrop ...", file=sys.stderr, flush=True)
        rust_s, rust = time_vicrop(args, args.checkpoint, method, layer)
        row = {"method": method, "reference_s": ref_s, "vicrop_s": rust_s, "ratio": ratio(ref_s, rust_s),
               "vicrop_load_s": rust["timing"]["load_s"], "vicrop_timing": rust["timing"],
               "vicrop_timings_ms": rust.get("timings_ms")}
        row.update(compare(rust, result))
        rows.append(row)

    print("prefill/decode: reference ...", file=sys.stderr, flush=True)
    py_step = reference_llm_step(m, args.positions, args.step_repeats)
    print("prefill/decode: vicrop ...", file=sys.stderr, flush=True)
    rs_step = rust_llm_step(args, args.checkpoint)
    steps = []
    for key, name in (("vision_ms", "vision pass, 1 image"), ("prefill_ms", f"prefill {args.positions} positions"),
                      ("decode_ms", "decode 1 position")):
        ours = None if rs_step is None else rs_step.get(key)
        steps.append({"step": name, "reference_ms": py_step[key], "vicrop_ms": ours,
                      "ratio": ratio(py_step[key], ours)})

    shape = checkpoint_shape(m)
    date = datetime.datetime.now().isoformat(timespec="seconds")
    header = (f"{args.threads} threads, torch {torch.__version__}, transformers {transformers.__version__}, "
              f"vicrop dtype {args.vicrop_dtype} (reference float32), checkpoint {args.checkpoint.name}: "
              f"{shape['llm_layers']} LLM layers x {shape['llm_hidden']}, vision {shape['vision_layers']} x "
              f"{shape['vision_hidden']} at {shape['image_size']} px; layer {layer}, {args.repeats} repeat(s); "
              f"{date}")
    print()
    print_table(header, rows, steps)
    print()
    print_stages(rows)
    print()
    print(f"load (excluded above): reference {load_s:.1f} s, vicrop {rows[0]['vicrop_load_s']:.1f} s"
          + ("" if rs_step is None else f", llm_step {rs_step.get('load_s', float('nan')):.1f} s"))
    for r in rows:
        if not (r["box_same"] and r["answer_same"] and r["baseline_same"]):
            print(f"{r['method']}: box {r['reference_box']} vs {r['vicrop_box']}, answer "
                  f"{r['reference_answer']!r} vs {r['vicrop_answer']!r}, baseline ids same "
                  f"{yes_no(r['baseline_same'])}; smallest reference greedy margin "
                  f"{fmt(r['reference_min_greedy_margin'], '.4f')}")
    if args.json:
        report = {"date": date, "threads": args.threads, "torch": torch.__version__,
                  "transformers": transformers.__version__, "vicrop_dtype": args.vicrop_dtype,
                  "checkpoint": str(args.checkpoint), "shape": shape, "image": str(args.image),
                  "question": args.question, "layer": layer, "repeats": args.repeats,
                  "reference_load_s": load_s, "methods": rows, "positions": args.positions,
                  "step_repeats": args.step_repeats, "steps": steps, "llm_step": rs_step}
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
