#!/usr/bin/env python3
"""Superseded by tools/make_llava_fixtures.py (same checkpoints, images and seeds; the goldens
gained pixel_lut, SHA-256 digests, hidden_first_text and more metadata). Kept so that older
references keep working: it simply runs make_llava_fixtures.py with the same arguments."""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    script = Path(__file__).resolve().with_name("make_llava_fixtures.py")
    sys.argv[0] = str(script)
    runpy.run_path(str(script), run_name="__main__")
