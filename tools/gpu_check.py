#!/usr/bin/env python3
"""Helpers for tools/gpu_check.sh.

    manifest OUT.json      (here, in tools/.venv: transformers 4.47.1) writes llava-hf/llava-1.5-7b-hf's
                           config.json and the name, shape and dtype of every weight of
                           LlavaForConditionalGeneration built from it (on the meta device, no memory).
    make-model MANIFEST DIR [--layers N]
                           (on the GPU machine: torch and safetensors only, any transformers version)
                           writes a random-weight checkpoint of that shape in bf16 to DIR, the
                           non-weight files copied from tests/fixtures/llava-tiny-a (the full LLaMA
                           tokenizer and CLIP-336 preprocessing, as llava-hf ships them).
    compare DIR            reads the `vicrop crop --json` outputs DIR/<model>-<dtype>-<method>.json and
                           prints, against the f32 run of the same model and method: the largest map
                           difference over the map's maximum, and whether the box and both answers'
                           token ids agree.

The manifest is committed (tools/llava-7b-manifest.json), so the GPU machine needs no particular
transformers version: it only makes tensors of the listed shapes.
"""
import argparse
import json
import math
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER_SOURCE = ROOT / "tests" / "fixtures" / "llava-tiny-a"
COPIED = ["added_tokens.json", "generation_config.json", "preprocessor_config.json", "processor_config.json",
          "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
SHARD_BYTES = 5 * 1024 ** 3


def manifest(out):
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_cpu  # the 7B config lives there, with the fixtures' token ids

    config = bench_cpu.llava_7b_config(32)
    assert isinstance(config.vision_config, CLIPVisionConfig) and isinstance(config.text_config, LlamaConfig)
    assert isinstance(config, LlavaConfig)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    weights = [{"name": k, "shape": list(v.shape)} for k, v in model.state_dict().items()]
    payload = {"transformers": __import__("transformers").__version__, "config": config.to_dict(),
               "weights": weights}
    Path(out).write_text(json.dumps(payload, indent=1) + "\n")
    n = sum(math.prod(w["shape"]) for w in weights)
    print(f"{out}: {len(weights)} tensors, {n / 1e9:.2f}B parameters")


def make_model(manifest_path, out_dir, layers):
    import torch
    from safetensors.torch import save_file

    spec = json.loads(Path(manifest_path).read_text())
    config = spec["config"]
    config["text_config"]["num_hidden_layers"] = layers
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in COPIED:
        shutil.copy(TOKENIZER_SOURCE / name, out / name)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=device).manual_seed(0)
    shards, current, size, index = [], {}, 0, {}

    def flush():
        nonlocal current, size
        if current:
            shards.append(current)
            current, size = {}, 0

    for w in spec["weights"]:
        name, shape = w["name"], w["shape"]
        layer = name.split("layers.")[1].split(".")[0] if "language_model" in name and "layers." in name else None
        if layer is not None and int(layer) >= layers:
            continue
        if name.endswith("bias"):
            t = torch.zeros(shape, device=device, dtype=torch.bfloat16)
        elif len(shape) == 1 and "norm" in name:  # layer and RMS norm weights
            t = torch.ones(shape, device=device, dtype=torch.bfloat16)
        else:
            t = (torch.randn(shape, device=device, generator=gen, dtype=torch.float32) * 0.02).to(torch.bfloat16)
        nbytes = t.numel() * 2
        if size + nbytes > SHARD_BYTES:
            flush()
        current[name] = t.cpu().contiguous()
        size += nbytes
    flush()
    total = 0
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / file), metadata={"format": "pt"})
        for k, v in shard.items():
            index[k] = file
            total += v.numel() * 2
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": index}, indent=2) + "\n")
    print(f"{out}: {layers} LLM layers, {total / 1e9:.2f} GB in bf16, {len(shards)} shards")


def compare(folder):
    runs = {}
    for f in sorted(Path(folder).glob("*.json")):
        match = re.fullmatch(r"(.+)-(f32|f16|bf16)-(.+)", f.stem)
        if not match:
            continue
        parts = match.groups()
        try:
            runs[tuple(parts)] = json.loads(f.read_text())
        except json.JSONDecodeError:
            runs[tuple(parts)] = None
    print("| model | method | dtype | map max diff / max | box | answer tokens | crop-answer tokens | load s | run s |")
    print("|---|---|---|---:|---|---|---|---:|---:|")
    for (model, dtype, method), run in sorted(runs.items()):
        base = runs.get((model, "f32", method))
        if run is None:
            print(f"| {model} | {method} | {dtype} | failed | | | | | |")
            continue
        timing = run.get("timing", {})
        times = f"{timing.get('load_s', float('nan')):.2f} | {timing.get('run_s', float('nan')):.2f}"
        if base is None or dtype == "f32":
            print(f"| {model} | {method} | {dtype} | (baseline) | {run['bbox']} | | | {times} |")
            continue
        def flat(values):
            return [x for row in values for x in (row if isinstance(row, list) else [row])]

        a, b = flat(run["map"]["values"]), flat(base["map"]["values"])
        finite = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
        peak = max(abs(y) for _, y in finite) or 1.0
        diff = max(abs(x - y) for x, y in finite) / peak
        same = lambda k: "same" if run[k] == base[k] else "differs"  # noqa: E731
        print(f"| {model} | {method} | {dtype} | {diff:.2e} | {same('bbox')} | {same('answer_token_ids')} "
              f"| {same('crop_answer_token_ids')} | {times} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("manifest")
    p.add_argument("out")
    p = sub.add_parser("make-model")
    p.add_argument("manifest")
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=32)
    p = sub.add_parser("compare")
    p.add_argument("folder")
    args = parser.parse_args()
    if args.cmd == "manifest":
        manifest(args.out)
    elif args.cmd == "make-model":
        make_model(args.manifest, args.out, args.layers)
    else:
        compare(args.folder)


if __name__ == "__main__":
    main()
