#!/usr/bin/env python3
"""Reference outputs for the views' colour jitter and blur (Tests/Fixtures/views/reference.json).

Colour jitter: Pillow's ImageEnhance.Brightness, .Contrast and .Color, one after the other (what
torchvision's ColorJitter does to a PIL image, without hue). Blur: scipy.ndimage.gaussian_filter
per channel, edges extended ("nearest"), truncated at 3σ, rounded to 8 bits. The input is a small
seeded image; both are independent of Kith's code.

    .venv/bin/python tools/make_view_fixtures.py
"""

import json
import os

import numpy as np
from PIL import Image, ImageEnhance
from scipy.ndimage import gaussian_filter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "views", "reference.json")


def main() -> None:
    rng = np.random.default_rng(7)
    width, height = 13, 9
    # Smooth colour ramps plus noise: contrast and saturation then have something to act on.
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 18, y * 25, (x + y) * 9], axis=-1) + rng.integers(0, 40, (height, width, 3))
    pixels = np.clip(base, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")

    jitters = []
    for brightness, contrast, saturation in [(1.3, 0.7, 1.25), (0.65, 1.35, 0.6), (1.0, 1.0, 0.0)]:
        out = ImageEnhance.Brightness(image).enhance(brightness)
        out = ImageEnhance.Contrast(out).enhance(contrast)
        out = ImageEnhance.Color(out).enhance(saturation)
        jitters.append(
            {
                "brightness": brightness,
                "contrast": contrast,
                "saturation": saturation,
                "pixels": np.asarray(out).reshape(-1).tolist(),
            }
        )

    blurs = []
    for sigma in [0.6, 1.1, 2.3]:
        channels = [
            gaussian_filter(pixels[:, :, c].astype(np.float64), sigma, mode="nearest", truncate=3.0) for c in range(3)
        ]
        out = np.clip(np.rint(np.stack(channels, axis=-1)), 0, 255).astype(np.uint8)
        blurs.append({"sigma": sigma, "pixels": out.reshape(-1).tolist()})

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(
            {"width": width, "height": height, "pixels": pixels.reshape(-1).tolist(), "jitter": jitters, "blur": blurs},
            f,
        )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
