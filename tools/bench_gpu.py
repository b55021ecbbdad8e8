#!/usr/bin/env python3
"""The GPU side-by-side benchmark's Python half; tools/bench_gpu.sh runs it (read that first).

    make-model DIR [--layers N]
        the random-weight LLaVA-1.5-7B-shaped bf16 checkpoint: tools/gpu_check.py's make_model
        (llava-hf/llava-1.5-7b-hf's config and weight names from the committed
        tools/llava-7b-manifest.json, torch + safetensors only)
    prepare DATA [--questions N]
        the images and questions, as two datasets in the reference's data.json format
        (docs/evaluation.md): DATA/normal/ (one warm-up item + N questions, each on its own
        image) and DATA/high-res/ (one warm-up item + one question on a 2000x1500 image), the
        images in DATA/images/. Deterministic.
    reference --model DIR --data DATA --out FILE [--device cuda|cpu] [--dtype bf16|f16|f32]
              [--methods rel-att,grad-att,pure-grad] [--high-res-methods rel-att]
        the reference ViCrop pipeline (tools/gen_vicrop_goldens.py's `vicrop`, run on the
        device: transformers, eager attention, greedy, 20 new tokens) on every item of DATA, per
        method: wall time per item (torch.cuda.synchronize() around it; the warm-up item is
        timed too and left out of the medians), the time in answers and in maps, the map, box and
        answers, and per method the peak GPU memory (torch.cuda.max_memory_allocated, reset per
        method). FILE is rewritten after every item, so a run cut short keeps what it did.
    report OUT
        reads what bench_gpu.sh wrote under OUT (layout below), prints the markdown for
        summary.md and writes OUT/bench.json.

Layout under OUT:
    data/                                     prepare
    reference.json                            reference
    vicrop-<method>[-high-res]/results.jsonl  `vicrop eval run ... --save-maps` (one folder per run)
    mem/idle.txt, mem/<name>.mem              nvidia-smi memory.used samples (MiB, every 200 ms)
                                              for the idle GPU and for each process <name>
    first-answer-<k>.json/.wall/.cache        `vicrop crop --json`, its process wall time in s,
                                              and "files bytes" of the kernel cache it started with

Tested on the CPU (no GPU here): `reference --device cpu --dtype f32` on tests/fixtures/llava-tiny-a
with tools/.venv (transformers 4.47.1) and with transformers 5.17.0, reproducing the goldens of
gen_vicrop_goldens.py; `report` on hand-made results.jsonl files in the documented shape.
"""

import argparse
import datetime
import importlib
import json
import platform
import shutil
import statistics
import sys
import time
import types
from pathlib import Path

sys.dont_write_bytecode = True  # importing the sibling scripts leaves no __pycache__ behind

import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent
sys.path.insert(0, str(TOOLS))

FIX = ROOT / "tests" / "fixtures"
METHODS = ["rel-att", "grad-att", "pure-grad"]
WARMUP_ID = "warmup"
HIGH_RES_SIZE = (2000, 1500)
# The targets of the issue: reference time / vicrop time at least this, per method (end to end,
# median per question, same run); vicrop's peak GPU memory for rel-att; warm start to first
# answer; map Pearson correlation against the reference.
SPEEDUP_TARGET = {"rel-att": 5.0, "grad-att": 3.0, "pure-grad": 3.0}
MEMORY_TARGET_BYTES = 18e9  # "18 GB", read as 10^9 bytes (17,166 MiB), the stricter reading
FIRST_ANSWER_TARGET_S = 15.0
PEARSON_TARGET = 0.99
# "<image>\nUSER:" with llava-hf/llava-1.5-7b-hf's tokenizer (shared/assets/README.md), before the
# processor expands <image>: checked so that a tokenizer change between transformers versions shows.
KNOWN_IDS = [1, 32000, 29871, 13, 11889, 29901]

# The questions, each on its own image (vicrop reuses the encoded image and general maps of
# consecutive questions on one image; the reference does not, so one image per question keeps the
# comparison per question fair). Only landscape or square images: Pillow 13 resizes portrait
# images (pure-grad's R x R mask) differently from Pillow 11, which vicrop reproduces.
HAND_PICKED = [
    ("images/chelsea.png", "What animal is in the image?", "cat"),
    ("scenes/images/0015.png", "What does the sign say?", "ZOO"),
    ("images/coffee_small.png", "What is in the cup?", "coffee"),
    ("scenes/images/0005.png", "Which number does the yellow sign show?", "594"),
]
WARMUP_SOURCE = ("images/chelsea.png", "What animal is in the image?", "cat")  # mirrored
HIGH_RES_SOURCE = ("scenes/images/0016.png", "Which number does the yellow sign show?", "52")


# ------------------------------------------------------------------------------ make-model
def make_model(args):
    import gpu_check  # stdlib at import time; make_model needs torch and safetensors

    out = Path(args.dir)
    if (out / "model.safetensors.index.json").exists() and not args.force:
        print(f"{out}: already built (the index is written last), kept")
        return
    t0 = time.perf_counter()
    gpu_check.make_model(args.manifest, out, args.layers)
    print(f"built in {time.perf_counter() - t0:.1f} s")


# ------------------------------------------------------------------------------ prepare
def question_pool():
    """(fixture-relative image path, question, answer) for every usable question, in order: the
    hand-picked ones, then the landscape or square scenes of tests/fixtures/scenes/ with their own
    questions (the high-res source left out)."""
    pool = list(HAND_PICKED)
    used = {p for p, _, _ in pool} | {HIGH_RES_SOURCE[0]}
    for line in (FIX / "scenes" / "items.jsonl").read_text().splitlines():
        item = json.loads(line)
        path = "scenes/" + item["image"]
        if path in used or item["width"] < item["height"]:
            continue
        pool.append((path, item["question"], item["answers"][0]))
        used.add(path)
    return pool


def load_image(path):
    """What the reference (gen_vicrop_goldens.load) and vicrop do to a stored image."""
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def record(item_id, image_name, question, answer):
    return {"id": item_id, "question": question, "labels": [answer], "image_path": image_name}


def prepare(args):
    data = Path(args.data)
    pool = question_pool()
    if not 1 <= args.questions <= len(pool):
        sys.exit(f"--questions: 1 to {len(pool)} (the committed images give {len(pool)})")
    images = data / "images"
    for sub in ("normal", "high-res"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    images.mkdir(parents=True, exist_ok=True)

    # The warm-up items: mirrored copies, so vicrop caches nothing across them and the items timed.
    src, question, answer = WARMUP_SOURCE
    ImageOps.mirror(load_image(FIX / src)).save(images / "warmup.png")
    normal = [record(WARMUP_ID, "warmup.png", question, answer)]
    for i, (src, question, answer) in enumerate(pool[: args.questions]):
        name = f"q{i + 1:02d}-{Path(src).name}"
        shutil.copyfile(FIX / src, images / name)
        normal.append(record(f"q{i + 1:02d}", name, question, answer))

    src, question, answer = HIGH_RES_SOURCE
    big = load_image(FIX / src).resize(HIGH_RES_SIZE, Image.BICUBIC)
    big.save(images / "high-res.png")
    ImageOps.mirror(big).save(images / "high-res-warmup.png")
    high = [record(WARMUP_ID, "high-res-warmup.png", question, answer),
            record("high-res", "high-res.png", question, answer)]

    for sub, items in (("normal", normal), ("high-res", high)):
        (data / sub / "data.json").write_text(json.dumps(items, indent=1) + "\n")
    print(f"{data}: {len(normal) - 1} questions + 1 warm-up, high-res {HIGH_RES_SIZE[0]}x{HIGH_RES_SIZE[1]} "
          f"(from {HIGH_RES_SOURCE[0]}) + 1 warm-up")


def read_dataset(folder):
    """The items of a prepare'd data.json, image paths resolved against DATA/images."""
    items = json.loads((Path(folder) / "data.json").read_text())
    for it in items:
        it["image"] = str(Path(folder).parent / "images" / it["image_path"])
    return items


# ------------------------------------------------------------------------------ reference
def import_reference():
    """Imports tools/gen_vicrop_goldens.py. It imports torchvision, scipy and scikit-image at the
    top for pure-grad's high-pass mask and block means; a GPU machine's Python may lack them
    (or have a torchvision built for another torch). Those missing are replaced, only while it
    is imported, by the stand-ins below, which compute the same values (checked bit for bit
    against the real ones on the CPU); the names substituted are returned for the report."""
    import transformers  # noqa: F401  before any stand-in exists, so it sees the real packages
    from transformers import LlavaForConditionalGeneration, LlavaProcessor  # noqa: F401

    wanted = {"torchvision.transforms.functional": _torchvision_stand_in,
              "scipy.ndimage": _scipy_stand_in, "skimage.measure": _skimage_stand_in}
    substituted = []
    for name, make in wanted.items():
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001  missing, or broken against this torch
            top = name.split(".")[0]
            for k in [k for k in sys.modules if k == top or k.startswith(top + ".")]:
                del sys.modules[k]
            make()
            substituted.append(f"{top} ({type(e).__name__}: {str(e)[:80]})")
    try:
        import gen_vicrop_goldens as ref
    finally:
        for name in ("torchvision", "scipy", "skimage"):  # the stand-ins only serve that import
            if getattr(sys.modules.get(name), "_bench_stand_in", False):
                for k in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
                    del sys.modules[k]
    return ref, substituted


def _modules(*names):
    mods = []
    for name in names:
        m = types.ModuleType(name)
        m._bench_stand_in = True
        sys.modules[name] = m
        mods.append(m)
    for parent, child in zip(mods, mods[1:]):
        setattr(parent, child.__name__.rsplit(".", 1)[1], child)
    return mods[-1]


def _torchvision_stand_in():
    import torch
    import torch.nn.functional as F

    tf = _modules("torchvision", "torchvision.transforms", "torchvision.transforms.functional")

    def resize(image, size):  # torchvision on a PIL image: PIL bilinear to (h, w)
        return image.resize((size[1], size[0]), Image.BILINEAR)

    def to_tensor(image):  # an RGB PIL image -> float [3, H, W] / 255
        a = np.array(image, np.uint8, copy=True)
        return torch.from_numpy(a.transpose((2, 0, 1))).contiguous().to(torch.float32).div(255)

    def kernel1d(k, sigma):
        half = (k - 1) * 0.5
        x = torch.linspace(-half, half, steps=k, dtype=torch.float32)
        pdf = torch.exp(-0.5 * (x / sigma).pow(2))
        return pdf / pdf.sum()

    def gaussian_blur(t, kernel_size, sigma=None):  # torchvision's: reflect padding, depthwise conv
        kx, ky = kernel_size
        sx, sy = (kx * 0.15 + 0.35, ky * 0.15 + 0.35) if sigma is None else (sigma, sigma)
        k2 = torch.mm(kernel1d(ky, sy)[:, None], kernel1d(kx, sx)[None, :])
        k2 = k2.expand(t.shape[-3], 1, ky, kx)
        padded = F.pad(t, [kx // 2, kx // 2, ky // 2, ky // 2], mode="reflect")
        return F.conv2d(padded, k2, groups=t.shape[-3])

    tf.resize, tf.to_tensor, tf.gaussian_blur = resize, to_tensor, gaussian_blur


def _scipy_stand_in():
    nd = _modules("scipy", "scipy.ndimage")

    def median_filter(a, size):  # scipy's default mode "reflect" repeats the edge: numpy "symmetric"
        pad = size // 2
        padded = np.pad(a, pad, mode="symmetric")
        windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size))
        return np.median(windows, axis=(-2, -1)).astype(a.dtype)

    nd.median_filter = median_filter


def _skimage_stand_in():
    measure = _modules("skimage", "skimage.measure")

    def block_reduce(a, block_size, func=np.mean):  # zero padding at the end, as skimage
        by, bx = block_size
        h, w = a.shape
        a = np.pad(a, ((0, -h % by), (0, -w % bx)), constant_values=0)
        blocks = np.lib.stride_tricks.as_strided(
            a, shape=(a.shape[0] // by, a.shape[1] // bx, by, bx),
            strides=(a.strides[0] * by, a.strides[1] * bx, a.strides[0], a.strides[1]))
        return func(blocks, axis=(2, 3))

    measure.block_reduce = block_reduce


def transformers_major():
    import transformers

    return int(transformers.__version__.split(".")[0])


def make_bench_llava(ref):
    """gen_vicrop_goldens.Llava on a device and in a dtype, for transformers 4.x and 5.x.

    The reference class loads float32 on the CPU and reads results with `.numpy()`. This
    subclass loads in the given dtype with eager attention, puts the inputs on the device (pixel
    values in the model's dtype, as the reference runs "everything in bf16, pixel values too",
    shared/docs/method.md section 1), and moves maps to the CPU before `.numpy()`; otherwise the
    three map methods are the reference's lines. `generate`, `map`, `high_pass`, `pure_grad`,
    `rel_att`, `tiles`, `select_box` and `vicrop` are the reference's own. It also adds up the
    time spent in answers and in maps (synchronised), for the report.
    """
    import torch
    import torch.nn.functional as F
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    class BenchLlava(ref.Llava):
        def __init__(self, checkpoint, device, dtype):
            # Not super().__init__, which loads float32 on the CPU; the same fields, set here.
            self.dir = Path(checkpoint)
            self.device, self.dtype = torch.device(device), dtype
            tf5 = transformers_major() >= 5
            # transformers 5 renamed `torch_dtype` to `dtype` (the old name still works, with a
            # deprecation warning); 4.47 knows only `torch_dtype`.
            kwargs = {"dtype" if tf5 else "torch_dtype": dtype, "attn_implementation": "eager",
                      "output_loading_info": True}
            self.model, info = LlavaForConditionalGeneration.from_pretrained(self.dir, **kwargs)
            # transformers 5 renames the checkpoint's 4.x weight names on load (language_model.model.*
            # -> model.language_model.*, language_model.lm_head -> lm_head); a rename that misses
            # would leave weights randomly initialised, silently. Refuse that.
            bad = {k: sorted(map(str, info.get(k) or []))[:5]
                   for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
            if any(bad.values()):
                sys.exit(f"{self.dir}: the checkpoint does not load cleanly into "
                         f"LlavaForConditionalGeneration: {bad}")
            self.model.to(self.device).eval()
            assert self.model.get_output_embeddings().weight.data_ptr() != \
                self.model.get_input_embeddings().weight.data_ptr(), "the LM head is tied to the embeddings"
            # transformers 5 defaults to the torchvision image processor (resizes differ from
            # PIL's by up to 0.03 in pixel values); backend="pil" is the slow PIL one that
            # 4.47 loads by default, which the reference used and vicrop reproduces.
            self.proc = LlavaProcessor.from_pretrained(self.dir, **({"backend": "pil"} if tf5 else {}))
            self.image_processor = type(self.proc.image_processor).__name__
            vc = self.model.config.vision_config
            self.side = vc.image_size
            self.patch = vc.patch_size
            self.grid = vc.image_size // vc.patch_size
            self.layers = self.model.config.text_config.num_hidden_layers
            self.clock = {"generate": [], "map": 0.0}

        def sync(self):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)

        def inputs(self, images, question):
            inp = super().inputs(images, question).to(self.device)
            inp["pixel_values"] = inp["pixel_values"].to(self.dtype)
            return inp

        # Timers around the reference's own generate and map.
        def generate(self, images, question):
            self.sync()
            t0 = time.perf_counter()
            out = super().generate(images, question)
            self.sync()
            self.clock["generate"].append(time.perf_counter() - t0)
            return out

        def map(self, image, question, method, layer):
            self.sync()
            t0 = time.perf_counter()
            out = super().map(image, question, method, layer)
            self.sync()
            self.clock["map"] += time.perf_counter() - t0
            return out

    return BenchLlava


def check_prompt(m, ref, image):
    """The tokenizer and the image-token expansion, as vicrop does them: "<image>\\nUSER:" gives
    KNOWN_IDS, and the prompt holds grid^2 image tokens (576 for LLaVA-1.5)."""
    ids = m.proc.tokenizer("<image>\nUSER:").input_ids
    n = int((m.inputs([image], "What is this?")["input_ids"] == ref.IMAGE_TOKEN).sum())
    return {"ids": list(ids), "ids_ok": list(ids) == KNOWN_IDS, "image_tokens": n,
            "image_tokens_ok": n == m.grid * m.grid}


def sanity(m, image, question):
    """One forward on the warm-up item: the logits of the last position are finite and have a
    strict top-1 (a random checkpoint can overflow in half precision)."""
    import torch

    with torch.no_grad():
        logits = m.model(**m.inputs([image], question)).logits[0, -1].float()
    top = torch.topk(logits, 2).values
    return {"finite": bool(torch.isfinite(logits).all()), "std": float(logits.std()),
            "top2_gap": float(top[0] - top[1])}


def reference(args):
    import torch
    import transformers

    ref, substituted = import_reference()
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}[args.dtype]
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device")
    cuda = args.device == "cuda"
    data = Path(args.data)
    sets = {"normal": read_dataset(data / "normal"), "high-res": read_dataset(data / "high-res")}

    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": args.device, "dtype": args.dtype, "model": str(args.model),
              "gpu": torch.cuda.get_device_name(0) if cuda else platform.processor() or "cpu",
              "python": platform.python_version(), "torch": torch.__version__,
              "transformers": transformers.__version__, "pillow": Image.__version__,
              "stand_ins": substituted, "max_new_tokens": ref.MAX_NEW_TOKENS, "runs": {}}
    out = Path(args.out)

    def save():
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        tmp.replace(out)

    t0 = time.perf_counter()
    BenchLlava = make_bench_llava(ref)
    m = BenchLlava(args.model, args.device, dtype)
    report["load_s"] = time.perf_counter() - t0
    report["image_processor"] = m.image_processor
    report["layer"] = ref.default_layer(m.layers)  # what vicrop uses without --layer
    warm = sets["normal"][0]
    warm_image = load_image(warm["image"])
    report["prompt_check"] = check_prompt(m, ref, warm_image)
    report["sanity"] = sanity(m, warm_image, warm["question"])
    if cuda:
        report["weights_mib"] = torch.cuda.memory_allocated() / 2**20
    print(f"reference loaded in {report['load_s']:.1f} s ({args.dtype}, eager attention, {args.device}, "
          f"transformers {transformers.__version__}, {m.image_processor}); prompt {report['prompt_check']}; "
          f"sanity {report['sanity']}", flush=True)
    save()

    plan = [(meth, False) for meth in args.methods] + [(meth, True) for meth in args.high_res_methods]
    for method, high_res in plan:
        key = method + ("-high-res" if high_res else "")
        items = sets["high-res" if high_res else "normal"]
        run = report["runs"][key] = {"method": method, "high_res": high_res, "items": []}
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        for it in items:
            image = load_image(it["image"])
            m.clock = {"generate": [], "map": 0.0}
            m.sync()
            t = time.perf_counter()
            r = ref.vicrop(m, image, it["question"], method, high_res)
            m.sync()
            total = time.perf_counter() - t
            gen = m.clock["generate"]
            run["items"].append({
                "id": it["id"], "warmup": it["id"] == WARMUP_ID, "image_size": list(image.size),
                "question": it["question"], "total_s": total,
                "baseline_s": gen[0] if gen else None, "final_s": gen[1] if len(gen) > 1 else None,
                "map_s": m.clock["map"], "bbox": r["bbox"], "map": r["map"],
                "baseline_ids": r["baseline"]["ids"], "baseline_text": r["baseline"]["text"],
                "crop_ids": r["crop"]["ids"], "crop_text": r["crop"]["text"],
                "min_margin": min((a["min_margin"] for a in (r["baseline"], r["crop"])
                                   if a["min_margin"] is not None), default=None)})
            if cuda:
                run["max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
                run["max_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
            save()
            print(f"{key} {it['id']}: {total:.2f} s, box {r['bbox']}, answer {r['crop']['text']!r}", flush=True)


# ------------------------------------------------------------------------------ report
def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_results(path):
    """The rows of a results.jsonl; a torn last line (a run killed mid-write) is skipped."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass
    return rows


def mem_peak(path):
    """The largest nvidia-smi sample (MiB) of a .mem file, or None."""
    try:
        values = [float(v) for v in Path(path).read_text().split() if v.replace(".", "", 1).isdigit()]
    except OSError:
        return None
    return max(values) if values else None


def pearson(a, b):
    """Pearson correlation of two maps (lists of rows; None for non-finite), over the cells
    finite in both; None when the shapes differ or a map is constant."""
    x = np.array([[np.nan if v is None else v for v in row] for row in a], dtype=np.float64)
    y = np.array([[np.nan if v is None else v for v in row] for row in b], dtype=np.float64)
    if x.shape != y.shape:
        return None
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def first_difference(a, b):
    """The first position where two token id lists differ (the shorter one's length if one is a
    prefix of the other), or None when equal."""
    if a == b:
        return None
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def short(text, n=40):
    text = "" if text is None else str(text)
    return repr(text if len(text) <= n else text[:n] + "...")


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def vicrop_seconds(row):
    """A results row's ViCrop time in seconds: timings_ms.total (the whole ViCrop::run), else (a
    binary without timings_ms) the row's `seconds` (the whole item, image loading included)."""
    t = row.get("timings_ms") or {}
    if t.get("total") is not None:
        return t["total"] / 1e3
    return row.get("seconds")


def timed_rows(rows):
    """The rows counted in the medians: without the warm-up item (id "warmup"), or, in a run
    without one, without its first row; rows with an error are left out (counted apart)."""
    if not rows:
        return []
    if any(str(r.get("id")) == WARMUP_ID for r in rows):
        rows = [r for r in rows if str(r.get("id")) != WARMUP_ID]
    else:
        rows = rows[1:]
    return [r for r in rows if not r.get("error")]


def compare_run(key, ref_run, rows):
    """Per question of one run (method, high-res or not): reference and vicrop times, map
    Pearson, boxes, answers."""
    ref_items = {i["id"]: i for i in (ref_run or {}).get("items", [])}
    out = {"key": key, "questions": []}
    vic = timed_rows(rows) if rows is not None else []
    out["vicrop_failed"] = [str(r.get("id")) for r in rows or [] if r.get("error")]
    out["vicrop_errors"] = [r.get("error") for r in rows or [] if r.get("error")][:3]
    for r in vic:
        rid = str(r.get("id"))
        q = {"id": rid, "vicrop_s": vicrop_seconds(r), "vicrop_timings_ms": r.get("timings_ms")}
        ri = ref_items.get(rid)
        crop = r.get("crop") or {}
        q["vicrop_box"] = crop.get("bbox")
        if ri is not None:
            q["reference_s"] = ri["total_s"]
            q["reference_box"] = ri["bbox"]
            q["box_same"] = q["vicrop_box"] is not None and list(q["vicrop_box"]) == list(ri["bbox"])
            vmap = r.get("map")
            q["pearson"] = pearson(vmap["values"], ri["map"]) if vmap and vmap.get("values") else None
            q["map_shape"] = [vmap.get("rows"), vmap.get("cols")] if vmap else None
            q["reference_map_shape"] = [len(ri["map"]), len(ri["map"][0]) if ri["map"] else 0]
            q["map_shape_same"] = None if vmap is None else q["map_shape"] == q["reference_map_shape"]
            base = r.get("baseline") or {}
            for name, ours, theirs in (("baseline", base.get("token_ids"), ri["baseline_ids"]),
                                       ("crop", crop.get("token_ids"), ri["crop_ids"])):
                q[f"{name}_same"] = ours == theirs
                q[f"{name}_first_diff"] = first_difference(ours or [], theirs)
            q["reference_answers"] = [ri["baseline_text"], ri["crop_text"]]
            q["vicrop_answers"] = [base.get("text"), crop.get("text")]
            q["reference_min_margin"] = ri.get("min_margin")
            q["reference_new_tokens"] = [len(ri["baseline_ids"]), len(ri["crop_ids"])]
            q["vicrop_new_tokens"] = [len(base.get("token_ids") or []), len(crop.get("token_ids") or [])]
        out["questions"].append(q)
    # Reference-only questions (vicrop did not run them, or failed): their times still count
    # for the reference's median.
    ref_times = [i["total_s"] for i in ref_items.values() if not i["warmup"]]
    out["reference_median_s"] = median(ref_times)
    out["reference_n"] = len(ref_times)
    out["vicrop_median_s"] = median(q["vicrop_s"] for q in out["questions"])
    out["vicrop_n"] = len(out["questions"])
    out["speedup"] = (out["reference_median_s"] / out["vicrop_median_s"]
                      if out["reference_median_s"] and out["vicrop_median_s"] else None)
    pcs = [q.get("pearson") for q in out["questions"] if q.get("pearson") is not None]
    out["pearson_min"] = min(pcs) if pcs else None
    out["pearson_median"] = median(pcs)
    compared = [q for q in out["questions"] if "box_same" in q]
    out["boxes_same"] = sum(q["box_same"] for q in compared)
    out["answers_same"] = sum(q["baseline_same"] and q["crop_same"] for q in compared)
    out["compared"] = len(compared)
    phases = {}
    for q in out["questions"]:
        for k, v in (q.get("vicrop_timings_ms") or {}).items():
            phases.setdefault(k, []).append(v)
    out["vicrop_phases_median_ms"] = {k: median(v) for k, v in phases.items()}
    ref_timed = [i for i in ref_items.values() if not i["warmup"]]
    out["reference_phases_median_s"] = {
        "baseline answer": median(i["baseline_s"] for i in ref_timed),
        "maps": median(i["map_s"] for i in ref_timed),
        "final answer": median(i["final_s"] for i in ref_timed)}
    if ref_run:
        out["reference_max_allocated_mib"] = ref_run.get("max_allocated_mib")
        out["reference_max_reserved_mib"] = ref_run.get("max_reserved_mib")
    return out


def fmt(x, spec, none="–"):
    return none if x is None else format(x, spec)


def mib_gb(mib):
    return "–" if mib is None else f"{mib:,.0f} MiB ({mib * 2**20 / 1e9:.1f} GB)"


def verdict(ok):
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def report(args):
    out = Path(args.out)
    ref = read_json(out / "reference.json") or {}
    idle = mem_peak(out / "mem" / "idle.txt")
    keys = [m for m in METHODS] + [m + "-high-res" for m in METHODS]
    runs = []
    for key in keys:
        ref_run = (ref.get("runs") or {}).get(key)
        rows = read_results(out / f"vicrop-{key}" / "results.jsonl")
        if ref_run is None and rows is None:
            continue
        c = compare_run(key, ref_run, rows)
        peak = mem_peak(out / "mem" / f"vicrop-{key}.mem")
        c["vicrop_peak_mib"] = None if peak is None else peak - (idle or 0)
        c["vicrop_ran"] = rows is not None
        runs.append(c)
    ref_peak = mem_peak(out / "mem" / "reference.mem")

    first = []
    for k in (1, 2):
        j = read_json(out / f"first-answer-{k}.json")
        wall = read_json(out / f"first-answer-{k}.wall")
        cache = (out / f"first-answer-{k}.cache")
        if wall is None and j is None:
            continue
        files, size = (cache.read_text().split() + ["0", "0"])[:2] if cache.exists() else ("?", "?")
        peak = mem_peak(out / "mem" / f"first-answer-{k}.mem")
        first.append({"run": k, "wall_s": wall, "cache_files": files, "cache_bytes": size,
                      "warm": files not in ("?", "0"), "timing": (j or {}).get("timing"),
                      "timings_ms": (j or {}).get("timings_ms"), "bbox": (j or {}).get("bbox"),
                      "peak_mib": None if peak is None else peak - (idle or 0), "ok": j is not None})

    lines = []
    say = lines.append
    say("## Results")
    say("")
    env = ", ".join(f"{k} {ref[k]}" for k in ("gpu", "torch", "transformers", "pillow") if ref.get(k))
    if ref:
        say(f"Reference: {env}; {ref.get('dtype')} on {ref.get('device')}, eager attention, greedy, "
            f"{ref.get('max_new_tokens')} new tokens, LLM layer {ref.get('layer')}; image processor "
            f"{ref.get('image_processor')}; loaded in {fmt(ref.get('load_s'), '.1f')} s"
            + (f", weights {ref['weights_mib']:,.0f} MiB on the GPU (in its max allocated below)."
               if ref.get("weights_mib") else "."))
        pc, sn = ref.get("prompt_check") or {}, ref.get("sanity") or {}
        if pc and not (pc.get("ids_ok") and pc.get("image_tokens_ok")):
            say(f"**Reference prompt differs from vicrop's**: `<image>\\nUSER:` -> {pc.get('ids')} "
                f"(expected {KNOWN_IDS}), {pc.get('image_tokens')} image tokens.")
        if sn.get("finite"):
            say(f"Reference's first-token logits on the warm-up item: std {sn['std']:.3f}, top-1/top-2 gap "
                f"{sn['top2_gap']:.4f}" + (" (a tie: which token wins is up to rounding)." if sn["top2_gap"] == 0
                                          else "."))
        if sn and not sn.get("finite"):
            say("**The reference's logits are not finite on the warm-up item** (the random checkpoint "
                "overflows): maps and answers mean nothing.")
        if ref.get("stand_ins"):
            say(f"Stand-ins used for missing packages: {', '.join(ref['stand_ins'])}.")
    else:
        say("No reference results (reference.json missing).")
    say(f"Idle GPU memory before the runs: {fmt(idle, ',.0f')} MiB (subtracted from vicrop's peaks). "
        "Medians leave out each process's warm-up item (an extra item, a mirrored image, run "
        "first on both sides).")
    say("")
    say("| run | questions (ref / vicrop) | reference median s | vicrop median s | reference / vicrop | target "
        "| vicrop peak GPU memory | reference max allocated | map Pearson min (median) | boxes same "
        "| answers same |")
    say("|---|---|---:|---:|---:|---|---:|---:|---:|---|---|")
    for c in runs:
        method = c["key"].replace("-high-res", "")
        target = SPEEDUP_TARGET.get(method) if c["key"] == method else None
        met = None if target is None or c["speedup"] is None else c["speedup"] >= target
        tgt = "–" if target is None else f">= {target:g} {verdict(met)}"
        vic = fmt(c["vicrop_median_s"], ".3f") if c["vicrop_ran"] else "not run"
        if c["vicrop_failed"]:
            vic += f" ({len(c['vicrop_failed'])} failed)"
        say(f"| {c['key']} | {c['reference_n']} / {c['vicrop_n']} | {fmt(c['reference_median_s'], '.3f')} | {vic} "
            f"| {fmt(c['speedup'], '.2f')} | {tgt} | {mib_gb(c['vicrop_peak_mib'])} "
            f"| {mib_gb(c.get('reference_max_allocated_mib'))} "
            f"| {fmt(c['pearson_min'], '.4f')} ({fmt(c['pearson_median'], '.4f')}) "
            f"| {c['boxes_same']} of {c['compared']} | {c['answers_same']} of {c['compared']} |")
    if ref_peak is not None:
        say("")
        say(f"Reference process peak (nvidia-smi, all its runs): {mib_gb(ref_peak - (idle or 0))}.")

    phase_keys = ["vision", "prefill", "decode", "map", "box", "final_answer", "total"]
    if any(c["vicrop_phases_median_ms"] for c in runs):
        say("")
        say("vicrop per phase (`timings_ms`, median ms per question) and the reference's answers and maps "
            "(median s):")
        say("")
        say("| run | " + " | ".join(phase_keys) + " | ref. baseline answer s | ref. maps s | ref. final answer s |")
        say("|---|" + "---:|" * (len(phase_keys) + 3))
        for c in runs:
            p, rp = c["vicrop_phases_median_ms"], c["reference_phases_median_s"]
            say(f"| {c['key']} | " + " | ".join(fmt(p.get(k), ".1f") for k in phase_keys) + " | "
                + " | ".join(fmt(rp[k], ".3f") for k in ("baseline answer", "maps", "final answer")) + " |")

    differing = [(c["key"], q) for c in runs for q in c["questions"]
                 if q.get("box_same") is False or q.get("baseline_same") is False or q.get("crop_same") is False
                 or q.get("map_shape_same") is False]
    say("")
    if differing:
        say(f"Differences from the reference (reference in {ref.get('dtype', '?')}; in half precision, "
            "different kernels round differently, so near-ties in the map or in greedy decoding can "
            "flip; the smallest top-1/top-2 logit gap of the reference's answers is given):")
        say("")
        for key, q in differing:
            what = []
            if q.get("map_shape_same") is False:
                what.append(f"map shape {q['reference_map_shape']} (reference) vs {q['map_shape']} (vicrop)")
            if q.get("box_same") is False:
                what.append(f"box {q['reference_box']} (reference) vs {q['vicrop_box']} (vicrop), "
                            f"map Pearson {fmt(q.get('pearson'), '.4f')}")
            for i, name in enumerate(("baseline", "crop")):
                if q.get(f"{name}_same") is False:
                    what.append(f"{name} answer {short(q['reference_answers'][i])} (reference) vs "
                                f"{short(q['vicrop_answers'][i])} (vicrop), token ids differ from position "
                                f"{q[f'{name}_first_diff']}")
            if q.get("baseline_same") is False or q.get("crop_same") is False:
                what.append(f"smallest reference greedy margin {fmt(q.get('reference_min_margin'), '.4f')}")
            say(f"- {key} {q['id']}: " + "; ".join(what))
    elif any(c["compared"] for c in runs):
        say("Boxes and answers: identical to the reference for every question compared.")
    if any(c["vicrop_failed"] for c in runs):
        for c in runs:
            if c["vicrop_failed"]:
                say(f"- {c['key']}: vicrop failed on {', '.join(c['vicrop_failed'])}: {c['vicrop_errors']}")

    say("")
    say("Start to first answer (`vicrop crop --json`, rel-att, the whole process: load, baseline answer, "
        "map, box and final answer):")
    say("")
    for f in first:
        t = f["timing"] or {}
        say(f"- run {f['run']} ({'warm' if f['warm'] else 'cold'} kernel cache: {f['cache_files']} files, "
            f"{f['cache_bytes']} bytes): {fmt(f['wall_s'], '.1f')} s wall (load {fmt(t.get('load_s'), '.1f')} s, "
            f"run {fmt(t.get('run_s'), '.1f')} s), peak GPU memory {mib_gb(f['peak_mib'])}"
            + ("" if f["ok"] else " — **failed**, see its .err"))
    if not first:
        say("- not run")

    # The targets.
    def run_of(key):
        return next((c for c in runs if c["key"] == key), None)

    checks = []
    for method, target in SPEEDUP_TARGET.items():
        c = run_of(method)
        s = c and c["speedup"]
        checks.append((f"{method}: reference / vicrop >= {target:g}", fmt(s, ".2f"),
                       None if s is None else s >= target))
    c = run_of("rel-att")
    peak = c and c["vicrop_peak_mib"]
    checks.append(("rel-att peak GPU memory <= 18 GB (17,166 MiB)", mib_gb(peak),
                   None if peak is None else peak * 2**20 <= MEMORY_TARGET_BYTES))
    warm = [f for f in first if f["warm"] and f["ok"] and f["wall_s"] is not None]
    w = warm[-1]["wall_s"] if warm else None
    checks.append(("warm start to first answer <= 15 s", fmt(w, ".1f") + (" s" if w is not None else ""),
                   None if w is None else w <= FIRST_ANSWER_TARGET_S))
    pcs = [c["pearson_min"] for c in runs if c["pearson_min"] is not None]
    pmin = min(pcs) if pcs else None
    n_maps = sum(q.get("pearson") is not None for c in runs for q in c["questions"])
    n_compared = sum(c["compared"] for c in runs)
    checks.append(("map Pearson >= 0.99 (every question, every run)",
                   f"{fmt(pmin, '.4f')} ({n_maps} of {n_compared} maps compared)",
                   None if pmin is None else pmin >= PEARSON_TARGET))
    say("")
    say("| target | measured | |")
    say("|---|---:|---|")
    for name, value, ok in checks:
        say(f"| {name} | {value} | {verdict(ok)} |")
    print("\n".join(lines))

    bench = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "reference_env": {k: ref.get(k) for k in ("gpu", "python", "torch", "transformers", "pillow",
                                                      "device", "dtype", "layer", "load_s", "image_processor",
                                                      "prompt_check", "sanity", "stand_ins", "weights_mib")},
             "idle_mib": idle, "reference_process_peak_mib": None if ref_peak is None else ref_peak - (idle or 0),
             "runs": runs, "first_answer": first,
             "targets": [{"target": n, "measured": v, "met": ok} for n, v, ok in checks]}
    (out / "bench.json").write_text(json.dumps(bench, indent=1) + "\n")


# ------------------------------------------------------------------------------ main
def method_list(text):
    methods = [s.strip() for s in text.replace(" ", ",").split(",") if s.strip()]
    bad = [s for s in methods if s not in METHODS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown methods {bad}; give some of {METHODS}")
    return methods


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-model")
    p.add_argument("dir")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--manifest", default=str(TOOLS / "llava-7b-manifest.json"))
    p.add_argument("--force", action="store_true", help="rebuild even if the folder holds a checkpoint")
    p = sub.add_parser("prepare")
    p.add_argument("data")
    p.add_argument("--questions", type=int, default=4)
    p = sub.add_parser("reference")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--dtype", choices=["bf16", "f16", "f32"], default="bf16")
    p.add_argument("--methods", type=method_list, default=list(METHODS))
    p.add_argument("--high-res-methods", type=method_list, default=["rel-att"])
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p = sub.add_parser("report")
    p.add_argument("out")
    args = ap.parse_args()
    if args.cmd == "make-model":
        make_model(args)
    elif args.cmd == "prepare":
        prepare(args)
    elif args.cmd == "reference":
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        reference(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
