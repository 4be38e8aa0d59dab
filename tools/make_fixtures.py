#!/usr/bin/env python3
"""Build the small committed test fixtures under Tests/Fixtures from packaged photos.

  images/    golden input photos (derived from scikit-image's bundled photos, BSD-licensed)
  decode/    small PNG/JPEG variants with Pillow's decoded RGB beside them (.rgb, raw bytes)
  bad/       inputs that must fail with a typed error
  golden/    reference embeddings and logits from tools/kith_reference.py (numpy), and Pillow
             resizes for the resampler test

Run after the set-up (it needs the converted weights in models/):  make_fixtures.py [--models models]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import struct
import sys
import zlib

import numpy as np
import skimage.data
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kith_reference as ref  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")
PHOTOS = os.path.dirname(skimage.data.__file__)
GOLDEN_MODELS = ["efficientnet-lite0", "efficientnet-lite2", "mobilenetv2",
                 "resnet18-random", "resnet34-random", "resnet50-random"]


def photo(name: str) -> Image.Image:
    return Image.open(os.path.join(PHOTOS, name))


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


# Pillow's transpose that undoes each EXIF orientation (what ImageOps.exif_transpose applies).
UNDO = {2: [Image.FLIP_LEFT_RIGHT], 3: [Image.ROTATE_180], 4: [Image.FLIP_TOP_BOTTOM], 5: [Image.TRANSPOSE],
        6: [Image.ROTATE_270], 7: [Image.TRANSVERSE], 8: [Image.ROTATE_90]}
# The inverse: how to store an upright picture so that a viewer shows it upright.
STORE = {2: Image.FLIP_LEFT_RIGHT, 3: Image.ROTATE_180, 4: Image.FLIP_TOP_BOTTOM, 5: Image.TRANSPOSE,
         6: Image.ROTATE_90, 7: Image.TRANSVERSE, 8: Image.ROTATE_270}


def images(out: str) -> list[str]:
    os.makedirs(out, exist_ok=True)
    photo("chelsea.png").convert("RGB").save(os.path.join(out, "chelsea.jpg"), quality=90)
    photo("coffee.png").convert("RGB").resize((256, 256), Image.LANCZOS).save(os.path.join(out, "coffee-256.png"))
    photo("camera.png").resize((300, 300), Image.LANCZOS).save(os.path.join(out, "camera-grey.png"))
    photo("horse.png").save(os.path.join(out, "horse-alpha.png"))
    rocket = photo("rocket.jpg").convert("RGB").resize((360, 240), Image.LANCZOS)
    rocket.transpose(STORE[6]).save(os.path.join(out, "rocket-exif6.jpg"), quality=90, exif=exif_bytes(6))
    return ["chelsea.jpg", "coffee-256.png", "camera-grey.png", "horse-alpha.png", "rocket-exif6.jpg"]


def decode_variants(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    base = photo("astronaut.png").convert("RGB").resize((40, 30), Image.LANCZOS)
    arr = np.asarray(base)
    variants = {
        "rgb.png": base,
        "grey.png": base.convert("L"),
        "grey-alpha.png": Image.merge("LA", [base.convert("L"), Image.linear_gradient("L").resize((40, 30))]),
        "rgba.png": Image.merge("RGBA", [*base.split(), Image.linear_gradient("L").resize((40, 30)).rotate(90)]),
        "palette.png": base.convert("P", palette=Image.ADAPTIVE, colors=16),
    }
    for name, img in variants.items():
        img.save(os.path.join(out, name))
    # 16-bit RGB: Pillow cannot write it, so build the PNG by hand.
    wide = (arr.astype(np.uint16) * 257 + np.arange(40, dtype=np.uint16)[None, :, None]).astype(">u2")
    write_png16(os.path.join(out, "rgb16.png"), wide)
    base.save(os.path.join(out, "rgb.jpg"), quality=92)
    base.convert("L").save(os.path.join(out, "grey.jpg"), quality=92)
    for o in range(1, 9):
        stored = base if o == 1 else base.transpose(STORE[o])
        stored.save(os.path.join(out, f"exif{o}.jpg"), quality=95, exif=exif_bytes(o))
    for name in sorted(os.listdir(out)):
        if name.endswith((".png", ".jpg")):
            rgb = ref.load_rgb(os.path.join(out, name))
            with open(os.path.join(out, name.rsplit(".", 1)[0] + "." + name.rsplit(".", 1)[1] + ".rgb"), "wb") as f:
                f.write(struct.pack("<II", *rgb.size) + rgb.tobytes())


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png16(path: str, arr: np.ndarray) -> None:
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(h))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


def bad_inputs(out: str, images_dir: str) -> None:
    os.makedirs(out, exist_ok=True)
    jpeg = open(os.path.join(images_dir, "chelsea.jpg"), "rb").read()
    png = open(os.path.join(images_dir, "coffee-256.png"), "rb").read()
    files = {
        "empty.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "corrupt.jpg": jpeg[:600] + bytes((b * 7 + 13) % 256 for b in jpeg[600:4000]) + jpeg[4000:],
        "corrupt.png": png[:60] + bytes(200) + png[260:],
        "text.jpg": b"This is a text file, not a photo.\n",
        "image.gif": b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,"
                     b"\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;",
    }
    # Headers that declare 20000 × 20000 = 400 megapixels over a few bytes of data.
    files["huge.png"] = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                         + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + png_chunk(b"IEND", b""))
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "JPEG")
    small = bytearray(buf.getvalue())
    sof = small.find(b"\xff\xc0")
    struct.pack_into(">HH", small, sof + 5, 20000, 20000)
    files["huge.jpg"] = bytes(small)
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


def golden(out: str, images_dir: str, names: list[str], models: str) -> None:
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(images_dir, n) for n in names]
    index = {"images": names, "models": {}}
    for model in GOLDEN_MODELS:
        feats, logits = ref.embed(models, model, paths)
        feats.astype("<f4").tofile(os.path.join(out, f"{model}.embeddings.f32"))
        entry = {"dimension": int(feats.shape[1])}
        if logits is not None:
            logits.astype("<f4").tofile(os.path.join(out, f"{model}.logits.f32"))
            entry["classes"] = int(logits.shape[1])
        index["models"][model] = entry
        print(f"golden {model}: {feats.shape}")
    # Pillow resizes of a PNG region (x, y, w, h) to (W, H), for the resampler test.
    src = Image.open(os.path.join(images_dir, "coffee-256.png")).convert("RGB")
    index["resizes"] = []
    for filt, box, size in [("bicubic", (16, 16, 224, 224), (224, 224)), ("bicubic", (10, 30, 200, 150), (61, 97)),
                            ("bilinear", (0, 0, 256, 256), (100, 100)), ("bicubic", (5, 7, 40, 30), (120, 90))]:
        resample = Image.BICUBIC if filt == "bicubic" else Image.BILINEAR
        x, y, w, h = box
        img = src.resize(size, resample, box=(x, y, x + w, y + h))
        name = f"resize-{filt}-{x}-{y}-{w}-{h}-{size[0]}x{size[1]}.rgb"
        with open(os.path.join(out, name), "wb") as f:
            f.write(img.tobytes())
        index["resizes"].append({"file": name, "filter": filt, "box": list(box), "size": list(size)})
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="models")
    args = parser.parse_args()
    images_dir = os.path.join(ROOT, "images")
    names = images(images_dir)
    decode_variants(os.path.join(ROOT, "decode"))
    bad_inputs(os.path.join(ROOT, "bad"), images_dir)
    golden(os.path.join(ROOT, "golden"), images_dir, names, args.models)


if __name__ == "__main__":
    main()
