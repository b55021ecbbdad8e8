"""Seeded scene generator for the trained demo LLaVA (tests/fixtures/llava-demo).

Each scene is a cluttered image (shapes, stripes, distractor words and numbers) with ONE
yellow sign that carries a 2- or 3-digit number or a short word. In a "hard" scene the sign's
characters are 22-34 px tall in an image whose short side is 768-1344 px: after LLaVA's resize
to 224 px they are 4-10 px tall, too small to read, while a crop of 224-448 px around the sign
shows them at 11-34 px. In an "easy" scene the characters stay 16-36 px tall at 224 px.

The sign always lies inside the centre square of the image, the part LLaVA's centre crop keeps.

    python tools/demo_scenes.py --out DIR --seed 7 --hard 300 --easy 60

writes DIR/images/NNNN.png and DIR/items.jsonl, one item per line:
    {"id", "image", "width", "height", "kind": "hard"|"easy", "content": "number"|"word",
     "question", "answers": [answer], "bbox": [x0, y0, x1, y1]}   (bbox: the sign, pixels)

Deterministic for a given seed and Pillow version (11.0.0: the font is Pillow's bundled
Aileron Regular, `ImageFont.load_default(size)`, rendered by the FreeType in Pillow's wheel).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WORDS = ["OPEN", "EXIT", "STOP", "SALE", "CAFE", "BANK", "TAXI", "HOTEL", "PARK", "BUS",
         "INN", "GAS", "BAR", "SHOP", "ZOO", "PUB", "FIRE", "WEST", "EAST", "NORTH", "SOUTH",
         "KEEP", "SLOW", "MAIN"]
# Distractor words (never a sign's answer, so a model cannot win by reading them).
FILLER = ["BEST", "CITY", "HOME", "FOOD", "TIME", "PLAY", "WORK", "LAND", "ROAD", "BOOK",
          "GOLD", "BLUE", "FISH", "MILK", "DOOR", "TEA", "ART", "SKY", "SUN", "ICE"]
NUMBER_QUESTIONS = ["What is the number on the sign?", "What number is on the sign?",
                    "What number is written on the sign?", "Which number does the yellow sign show?"]
WORD_QUESTIONS = ["What word is on the sign?", "What does the sign say?",
                  "What is written on the yellow sign?"]
ASPECTS = [(1, 1), (4, 3), (3, 4), (3, 2), (2, 3), (16, 9)]
SIGN_YELLOW = (250, 205, 20)

_FONTS: dict[int, ImageFont.FreeTypeFont] = {}


def font(size: int) -> ImageFont.FreeTypeFont:
    if size not in _FONTS:
        _FONTS[size] = ImageFont.load_default(size=size)
    return _FONTS[size]


def char_height_to_font_size(h: float) -> int:
    # Aileron's digits are about 0.67 of the font size tall.
    return max(6, round(h / 0.67))


def colour(rng: random.Random, lo: int = 0, hi: int = 255) -> tuple[int, int, int]:
    while True:
        c = (rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi))
        # keep clutter away from the sign's yellow, so "the yellow sign" is unique
        if not (c[0] > 180 and c[1] > 150 and c[2] < 110):
            return c


def draw_clutter(d: ImageDraw.ImageDraw, rng: random.Random, w: int, h: int, n_shapes: int,
                 n_stripes: int, n_text: int, text_px: tuple[float, float]) -> None:
    s = min(w, h)
    for _ in range(n_stripes):
        x0, y0 = rng.randint(0, w - 1), rng.randint(0, h - 1)
        bw, bh = rng.randint(s // 10, s // 3), rng.randint(s // 10, s // 3)
        step = rng.randint(6, 24)
        c = colour(rng)
        width = rng.randint(1, max(1, step // 2))
        if rng.random() < 0.5:
            for x in range(x0, x0 + bw, step):
                d.line((x, y0, x, y0 + bh), fill=c, width=width)
        else:
            for y in range(y0, y0 + bh, step):
                d.line((x0, y, x0 + bw, y), fill=c, width=width)
    for _ in range(n_shapes):
        kind = rng.choice(["rect", "ellipse", "tri", "line"])
        cx, cy = rng.randint(0, w - 1), rng.randint(0, h - 1)
        rw, rh = rng.randint(s // 40, s // 6), rng.randint(s // 40, s // 6)
        c = colour(rng)
        box = (cx - rw, cy - rh, cx + rw, cy + rh)
        if kind == "rect":
            d.rectangle(box, fill=c)
        elif kind == "ellipse":
            d.ellipse(box, fill=c)
        elif kind == "tri":
            d.polygon([(cx, cy - rh), (cx - rw, cy + rh), (cx + rw, cy + rh)], fill=c)
        else:
            d.line((cx - rw, cy - rh, cx + rw, cy + rh), fill=c, width=rng.randint(2, 8))
    for _ in range(n_text):
        if rng.random() < 0.5:
            t = str(rng.randint(1, 9999))
        else:
            t = rng.choice(FILLER)
        f = font(char_height_to_font_size(rng.uniform(*text_px)))
        x, y = rng.randint(0, max(0, w - 40)), rng.randint(0, max(0, h - 20))
        d.text((x, y), t, font=f, fill=colour(rng, 0, 140))


def draw_sign(d: ImageDraw.ImageDraw, rng: random.Random, text: str, char_h: float,
              region: tuple[int, int, int, int]) -> tuple[list[int], list]:
    """Draw the yellow sign inside `region` (x0, y0, x1, y1); return its box and the box of
    each character ([char, [x0, y0, x1, y1]])."""
    f = font(char_height_to_font_size(char_h))
    l, t, r, b = d.textbbox((0, 0), text, font=f)
    tw, th = r - l, b - t
    pad_x, pad_y = round(0.45 * char_h), round(0.35 * char_h)
    border = max(2, round(0.12 * char_h))
    pw, ph = tw + 2 * pad_x + 2 * border, th + 2 * pad_y + 2 * border
    rx0, ry0, rx1, ry1 = region
    x0 = rng.randint(rx0 + 2, max(rx0 + 2, rx1 - pw - 2))
    y0 = rng.randint(ry0 + 2, max(ry0 + 2, ry1 - ph - 2))
    fill = tuple(max(0, min(255, c + rng.randint(-12, 12))) for c in SIGN_YELLOW)
    if rng.random() < 0.6:  # a post under the sign
        pole_w = max(2, round(0.3 * char_h))
        px = x0 + pw // 2 - pole_w // 2
        d.rectangle((px, y0 + ph, px + pole_w, min(ry1 + 200, y0 + ph + round(rng.uniform(1, 3) * char_h))),
                    fill=(90, 90, 95))
    d.rounded_rectangle((x0, y0, x0 + pw, y0 + ph), radius=round(0.25 * char_h), fill=fill,
                        outline=(20, 20, 20), width=border)
    tx, ty = x0 + border + pad_x - l, y0 + border + pad_y - t
    d.text((tx, ty), text, font=f, fill=(0, 0, 0))
    chars = []
    for i, ch in enumerate(text):
        cx = tx + d.textlength(text[:i], font=f)
        chars.append([ch, [round(v) for v in d.textbbox((cx, ty), ch, font=f)]])
    return [x0, y0, x0 + pw, y0 + ph], chars


def make_scene(rng: random.Random, kind: str) -> tuple[Image.Image, dict]:
    """One scene of `kind` ("hard" or "easy"): the image and its item (without id/image)."""
    ar = rng.choice(ASPECTS)
    short = rng.randint(768, 1344) if kind == "hard" else rng.randint(448, 896)
    if ar[0] >= ar[1]:
        w, h = int(short * ar[0] / ar[1]), short
    else:
        w, h = short, int(short * ar[1] / ar[0])
    bg = colour(rng, 60, 230)
    img = Image.new("RGB", (w, h), bg)
    d = ImageDraw.Draw(img)
    if kind == "hard":
        char_h = rng.uniform(22, 34)
        draw_clutter(d, rng, w, h, rng.randint(20, 45), rng.randint(1, 4), rng.randint(4, 10),
                     (0.6 * char_h, 1.4 * char_h))
    else:
        char_h = rng.uniform(16, 36) * short / 224
        draw_clutter(d, rng, w, h, rng.randint(0, 8), rng.randint(0, 1), 0, (10, 20))
    if rng.random() < 0.75:
        content, text = "number", str(rng.randint(10, 999))
        question = rng.choice(NUMBER_QUESTIONS)
    else:
        content, text = "word", rng.choice(WORDS)
        question = rng.choice(WORD_QUESTIONS)
    # inside the centre square (what LLaVA's centre crop keeps)
    cx0, cy0 = (w - short) // 2, (h - short) // 2
    bbox, chars = draw_sign(d, rng, text, char_h, (cx0, cy0, cx0 + short, cy0 + short))
    item = {"width": w, "height": h, "kind": kind, "content": content, "question": question,
            "answers": [text], "bbox": bbox, "chars": chars}
    return img, item


def crop_around(rng: random.Random, img: Image.Image, bbox: list[int], lo: int = 224,
                hi: int = 448) -> tuple[Image.Image, tuple[int, int, int]]:
    """A square crop of side lo..hi (clamped to the image) that contains `bbox`, and its
    (x0, y0, side)."""
    w, h = img.size
    bw, bh = bbox[2] - bbox[0], bbox[3] - bbox[1]
    side = min(w, h, max(rng.randint(lo, hi), bw + 8, bh + 8))
    x0 = rng.randint(max(0, bbox[2] - side), max(0, min(bbox[0], w - side)))
    y0 = rng.randint(max(0, bbox[3] - side), max(0, min(bbox[1], h - side)))
    return img.crop((x0, y0, x0 + side, y0 + side)), (x0, y0, side)


def write_set(out: Path, seed: int, hard: int, easy: int) -> None:
    rng = random.Random(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    kinds = ["hard"] * hard + ["easy"] * easy
    rng.shuffle(kinds)
    with open(out / "items.jsonl", "w") as f:
        for i, kind in enumerate(kinds):
            img, item = make_scene(rng, kind)
            name = f"{i:04d}.png"
            img.save(out / "images" / name, optimize=True)
            f.write(json.dumps({"id": i, "image": f"images/{name}", **item}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--hard", type=int, default=300)
    ap.add_argument("--easy", type=int, default=60)
    a = ap.parse_args()
    write_set(a.out, a.seed, a.hard, a.easy)


if __name__ == "__main__":
    main()
