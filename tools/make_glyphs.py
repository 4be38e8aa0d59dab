#!/usr/bin/env python3
"""Render an Omniglot-like few-shot set from Debian's fonts: class = character, image = one font.

Letters of the Latin, Greek, Cyrillic, Armenian and Georgian alphabets and the digits, drawn black on
white at one size (so 'c' and 'C' stay different) by every TrueType/OpenType font under
/usr/share/fonts that has the character. Blank renders and duplicates (the same bitmap from two
fonts) are dropped, and so are Greek and Cyrillic letters that look like Latin ones (Α = A = А) and
the ambiguous l / I / 1 and 0 / O / o. Classes with fewer than --min-fonts images are dropped.

  make_glyphs.py OUT [--size 64] [--min-fonts 20] [--max-fonts 60]

Fonts come from the Debian packages tools/setup installs (fonts-noto-core, fonts-dejavu-core,
fonts-urw-base35, fonts-cmu, fonts-texgyre, fonts-freefont-ttf, fonts-liberation2).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import re
import unicodedata

import numpy as np
from fontTools.ttLib import TTCollection, TTFont
from PIL import Image, ImageDraw, ImageFont

SCRIPTS = {
    "latin": [chr(c) for c in list(range(0x41, 0x5B)) + list(range(0x61, 0x7B))],
    "digit": [chr(c) for c in range(0x30, 0x3A)],
    "greek": [chr(c) for c in list(range(0x391, 0x3AA)) + list(range(0x3B1, 0x3CA)) if c not in (0x3A2,)],
    "cyrillic": [chr(c) for c in range(0x410, 0x450)],
    "armenian": [chr(c) for c in list(range(0x531, 0x557)) + list(range(0x561, 0x587))],
    "georgian": [chr(c) for c in range(0x10D0, 0x10F1)],
}
# Letters that look like a Latin letter (or each other) in most fonts.
LOOK_ALIKES = set("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧαοικνυχρАВЕКМНОРСТХаеорсухіѕјԁlI10OoՕօՍսհոց")


# Fonts that map letters to symbols (URW's Dingbats and Symbol) or hold only mathematics.
SYMBOL_FONTS = re.compile(r"(?i)(d050000l|symbol|dingbat|math|emoji)")


def has_glyph(path: str, index: int, ch: str, cache: dict) -> bool:
    key = (path, index)
    if key not in cache:
        try:
            font = TTCollection(path).fonts[index] if path.lower().endswith(".ttc") else TTFont(path, lazy=True)
            cache[key] = set(font.getBestCmap() or {})
        except Exception:
            cache[key] = set()
    return ord(ch) in cache[key]


def render(font: ImageFont.FreeTypeFont, ch: str, size: int) -> np.ndarray | None:
    img = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((0, 0), ch, font=font, anchor="ls")
    if right - left <= 0 or bottom - top <= 0 or right - left > size or bottom - top > size:
        return None
    # Centred horizontally on the ink; the baseline at 3/4 of the height, so sizes are comparable.
    x = (size - (right - left)) / 2 - left
    draw.text((x, size * 0.75), ch, font=font, fill=0, anchor="ls")
    pixels = np.asarray(img)
    return pixels if (pixels < 128).sum() >= 8 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--min-fonts", type=int, default=20)
    parser.add_argument("--max-fonts", type=int, default=60)
    args = parser.parse_args()
    paths = sorted(
        p
        for ext in ("ttf", "otf", "TTF", "OTF")
        for p in glob.glob(f"/usr/share/fonts/**/*.{ext}", recursive=True)
        if not SYMBOL_FONTS.search(os.path.basename(p))
    )
    if not paths:
        raise SystemExit("no fonts under /usr/share/fonts; run tools/setup")
    cmaps: dict = {}
    fonts = []
    for path in paths:
        try:
            fonts.append((path, ImageFont.truetype(path, int(args.size * 0.6))))
        except OSError:
            continue
    classes = 0
    images = 0
    for script, chars in SCRIPTS.items():
        for ch in chars:
            if ch in LOOK_ALIKES:
                continue
            seen: set = set()
            kept = []
            for path, font in fonts:
                if len(kept) >= args.max_fonts:
                    break
                if not has_glyph(path, 0, ch, cmaps):
                    continue
                pixels = render(font, ch, args.size)
                if pixels is None:
                    continue
                digest = hashlib.sha1(pixels.tobytes()).digest()
                if digest in seen:
                    continue
                seen.add(digest)
                kept.append((os.path.splitext(os.path.basename(path))[0], pixels))
            if len(kept) < args.min_fonts:
                continue
            name = unicodedata.name(ch, f"U+{ord(ch):04X}").lower().replace(" ", "-")
            folder = os.path.join(args.out, f"{script}-{ord(ch):04x}-{name}")
            os.makedirs(folder, exist_ok=True)
            for font_name, pixels in kept:
                Image.fromarray(pixels, "L").save(os.path.join(folder, f"{font_name}.png"))
            classes += 1
            images += len(kept)
    print(f"wrote {images} images of {classes} classes to {args.out}")


if __name__ == "__main__":
    main()
