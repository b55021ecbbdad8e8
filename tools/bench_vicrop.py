#!/usr/bin/env python3
"""Side-by-side CPU timings of one ViCrop question: the Python reference pipeline
(transformers, as tools/gen_vicrop_goldens.py runs it) and `vicrop crop`, on the same tiny
checkpoint, image and question, per method.

    cargo build --release -p vicrop-eval
    tools/.venv/bin/python tools/bench_vicrop.py [--repeats 5] [--checkpoint llava-tiny-a]

Both sides exclude model loading and run on the same 2 CPU threads budget: the Python side is
timed around its pipeline function, the Rust side reports `timing.run_s` (image preparation and
the run) in its JSON. The median of the repeats is printed.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_vicrop_goldens as ref  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--checkpoint", default="llava-tiny-a")
    ap.add_argument("--image", default="chelsea")
    ap.add_argument("--question", default="What is the number on the bus?")
    ap.add_argument("--vicrop", default=str(ROOT / "target" / "release" / "vicrop"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    m = ref.Llava(args.checkpoint)
    img = ref.load(args.image)
    image_path = ROOT / "tests" / "fixtures" / "images" / f"{args.image}.png"
    rows = []
    for method in ["rel-att", "grad-att", "pure-grad"]:
        py = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ref.vicrop(m, img, args.question, method, False)
            py.append(time.perf_counter() - t0)
        rs = []
        for _ in range(args.repeats):
            out = subprocess.run(
                [args.vicrop, "crop", "--model", str(ROOT / "tests" / "fixtures" / args.checkpoint),
                 "--image", str(image_path), "--question", args.question, "--method", method, "--json"],
                check=True, capture_output=True, text=True,
                env={"RAYON_NUM_THREADS": str(args.threads), "PATH": "/usr/bin:/bin"})
            rs.append(json.loads(out.stdout)["timing"]["run_s"])
        rows.append((method, statistics.median(py), statistics.median(rs)))

    print(f"checkpoint {args.checkpoint}, image {args.image}, {args.repeats} repeats, {args.threads} threads, "
          f"torch {torch.__version__}")
    print(f"{'method':<10} {'python reference (s)':>21} {'vicrop (s)':>11} {'speed-up':>9}")
    for method, p, r in rows:
        print(f"{method:<10} {p:>21.3f} {r:>11.3f} {p / r:>8.1f}x")


if __name__ == "__main__":
    main()
