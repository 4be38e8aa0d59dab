#!/usr/bin/env python3
"""Build the small committed test fixtures under Tests/Fixtures from packaged photos.

  images/    golden input photos (derived from scikit-image's bundled photos, BSD-licensed)
  decode/    small PNG/JPEG variants with Pillow's decoded RGB beside them (.rgb, raw bytes)
  bad/       inputs that must fail with a typed error
  golden/    reference embeddings and logits from tools/kith_reference.py (numpy), and Pillow
             resizes for the resampler test

Run after the set-up (it needs the converted weights in models/):  make_fixtures.py [--models models] [--only decode]
A few encodings Pillow cannot write come from Debian's libturbojpeg (YCCK) and cjpeg (libjpeg-turbo-progs).
"""

from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import skimage.data
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kith_reference as ref  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures")
PHOTOS = os.path.dirname(skimage.data.__file__)
GOLDEN_MODELS = [
    "efficientnet-lite0",
    "efficientnet-lite2",
    "mobilenetv2",
    "resnet18-random",
    "resnet34-random",
    "resnet50-random",
]


IMAGES = ["chelsea.jpg", "coffee-256.png", "camera-grey.png", "horse-alpha.png", "rocket-exif6.jpg"]


def photo(name: str) -> Image.Image:
    return Image.open(os.path.join(PHOTOS, name))


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


# Pillow's transpose that undoes each EXIF orientation (what ImageOps.exif_transpose applies).
UNDO = {
    2: [Image.FLIP_LEFT_RIGHT],
    3: [Image.ROTATE_180],
    4: [Image.FLIP_TOP_BOTTOM],
    5: [Image.TRANSPOSE],
    6: [Image.ROTATE_270],
    7: [Image.TRANSVERSE],
    8: [Image.ROTATE_90],
}
# The inverse: how to store an upright picture so that a viewer shows it upright.
STORE = {
    2: Image.FLIP_LEFT_RIGHT,
    3: Image.ROTATE_180,
    4: Image.FLIP_TOP_BOTTOM,
    5: Image.TRANSPOSE,
    6: Image.ROTATE_90,
    7: Image.TRANSVERSE,
    8: Image.ROTATE_270,
}


def images(out: str) -> list[str]:
    os.makedirs(out, exist_ok=True)
    photo("chelsea.png").convert("RGB").save(os.path.join(out, "chelsea.jpg"), quality=90)
    photo("coffee.png").convert("RGB").resize((256, 256), Image.LANCZOS).save(os.path.join(out, "coffee-256.png"))
    photo("camera.png").resize((300, 300), Image.LANCZOS).save(os.path.join(out, "camera-grey.png"))
    photo("horse.png").save(os.path.join(out, "horse-alpha.png"))
    rocket = photo("rocket.jpg").convert("RGB").resize((360, 240), Image.LANCZOS)
    rocket.transpose(STORE[6]).save(os.path.join(out, "rocket-exif6.jpg"), quality=90, exif=exif_bytes(6))
    # The chelsea.jpg picture as a print workflow stores it (Pillow: Adobe marker, inverted CMYK), for
    # the test that it embeds like the RGB JPEG; not among the golden images.
    photo("chelsea.png").convert("RGB").convert("CMYK").save(os.path.join(out, "chelsea-cmyk.jpg"), quality=90)
    return IMAGES


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
    print_and_library_variants(out)
    for name in sorted(os.listdir(out)):
        if name.endswith((".png", ".jpg")):
            rgb = ref.load_rgb(os.path.join(out, name))
            with open(os.path.join(out, name.rsplit(".", 1)[0] + "." + name.rsplit(".", 1)[1] + ".rgb"), "wb") as f:
                f.write(struct.pack("<II", *rgb.size) + rgb.tobytes())


def cmyk_with_black(img: Image.Image) -> Image.Image:
    """CMYK with full black generation (K = 255 − max(R, G, B)), so that the K channel is exercised;
    Pillow's own RGB → CMYK conversion leaves K at 0."""
    rgb = np.asarray(img, dtype=np.float64)
    top = rgb.max(axis=2, keepdims=True)
    ink = np.where(top > 0, 255 * (top - rgb) / np.maximum(top, 1), 0)
    cmyk = np.concatenate([ink, 255 - top], axis=2)
    return Image.fromarray(np.round(cmyk).astype(np.uint8), "CMYK")


def turbojpeg_ycck(img: Image.Image, quality: int) -> bytes:
    """A YCCK JPEG as Photoshop writes one: Adobe marker (transform 2) over inverted CMYK values.
    Pillow cannot write YCCK; Debian's libturbojpeg (the library Kith decodes with) compresses
    CMYK pixels as YCCK, here in 4:2:0."""
    tj = ctypes.CDLL("libturbojpeg.so.0")
    tj.tjInitCompress.restype = ctypes.c_void_p
    tj.tjCompress2.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)),
        ctypes.POINTER(ctypes.c_ulong),
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
    ]
    tj.tjFree.argtypes = [ctypes.c_void_p]
    tj.tjDestroy.argtypes = [ctypes.c_void_p]
    inverted = np.ascontiguousarray(255 - np.asarray(img))
    tjpf_cmyk, tjsamp_420 = 11, 2
    handle = tj.tjInitCompress()
    out, size = ctypes.POINTER(ctypes.c_ubyte)(), ctypes.c_ulong(0)
    status = tj.tjCompress2(
        handle,
        inverted.tobytes(),
        img.width,
        0,
        img.height,
        tjpf_cmyk,
        ctypes.byref(out),
        ctypes.byref(size),
        tjsamp_420,
        quality,
        0,
    )
    assert status == 0, "tjCompress2 failed"
    data = ctypes.string_at(out, size.value)
    tj.tjFree(out)
    tj.tjDestroy(handle)
    assert data[data.find(b"\xff\xee") + 15] == 2, "not YCCK"  # Adobe APP14 transform
    return data


def cjpeg(img: Image.Image, path: str, *options: str) -> None:
    """Debian's cjpeg (libjpeg-turbo-progs), for encodings Pillow cannot write."""
    if shutil.which("cjpeg") is None:
        sys.exit("make_fixtures: cjpeg is missing: apt-get install libjpeg-turbo-progs")
    with tempfile.TemporaryDirectory() as tmp:
        ppm = os.path.join(tmp, "in.ppm")
        img.save(ppm)
        subprocess.run(["cjpeg", *options, "-outfile", path, ppm], check=True)


def write_png(path: str, samples: np.ndarray, depth: int, colour_type: int, before_idat: bytes = b"") -> None:
    """A PNG of `samples` (H × W × channels, or H × W), 8 or 16 bits, filter 0, with extra chunks."""
    h, w = samples.shape[:2]
    rows = samples.reshape(h, -1).astype(">u2" if depth == 16 else np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    with open(path, "wb") as f:
        f.write(
            b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0))
            + before_idat
            + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b"")
        )


def xmp_packet(orientation: int, element: bool) -> bytes:
    value = (
        f"><tiff:Orientation>{orientation}</tiff:Orientation></rdf:Description>"
        if element
        else f'tiff:Orientation="{orientation}"/>'
    )
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" {value}</rdf:RDF></x:xmpmeta>'
    ).encode()


def print_and_library_variants(out: str) -> None:
    """What photo libraries hold beyond the plain variants: CMYK and YCCK JPEGs (print workflows,
    Adobe exports), unusual chroma sampling, gamma and colour-profile chunks (which Pillow ignores),
    orientation recorded in a PNG's eXIf or in XMP, and tRNS colour keys. 64 × 48."""
    base = photo("astronaut.png").convert("RGB").resize((64, 48), Image.LANCZOS)
    arr = np.asarray(base)
    cmyk = cmyk_with_black(base)
    cmyk.save(os.path.join(out, "cmyk.jpg"), quality=92)
    cmyk.transpose(STORE[6]).save(os.path.join(out, "cmyk-exif6.jpg"), quality=92, exif=exif_bytes(6))
    with open(os.path.join(out, "ycck.jpg"), "wb") as f:
        f.write(turbojpeg_ycck(cmyk, 92))
    cjpeg(base, os.path.join(out, "sub-410.jpg"), "-quality", "92", "-sample", "4x2")  # 4:1:0
    base.transpose(STORE[6]).save(os.path.join(out, "xmp6.jpg"), quality=92, xmp=xmp_packet(6, element=False))

    def gama(value: float) -> bytes:
        return png_chunk(b"gAMA", struct.pack(">I", round(100000 * value)))

    chrm = png_chunk(b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000, 15000, 6000))
    write_png(os.path.join(out, "gamma1.png"), arr, 8, 2, gama(1.0) + chrm)  # linear light
    palette = base.convert("P", palette=Image.ADAPTIVE, colors=64)
    write_png(
        os.path.join(out, "palette-gamma18.png"),
        np.asarray(palette),
        8,
        3,  # classic Mac gamma 1.8
        gama(1 / 1.8) + png_chunk(b"PLTE", bytes(palette.getpalette()[:192])),
    )
    wide = arr.astype(np.uint16) * 257 + np.arange(64, dtype=np.uint16)[None, :, None]
    write_png(os.path.join(out, "rgb16-srgb.png"), wide, 16, 2, png_chunk(b"sRGB", b"\x00") + gama(1 / 2.2))
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    write_png(
        os.path.join(out, "rgb16-iccp.png"), wide, 16, 2, png_chunk(b"iCCP", b"sRGB\x00\x00" + zlib.compress(srgb))
    )
    base.transpose(STORE[6]).save(os.path.join(out, "exif6.png"), exif=exif_bytes(6))
    itxt = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp_packet(8, element=True)
    write_png(os.path.join(out, "xmp8.png"), np.asarray(base.transpose(STORE[8])), 8, 2, png_chunk(b"iTXt", itxt))
    grey = np.asarray(base.convert("L"))
    write_png(os.path.join(out, "grey-trns.png"), grey, 8, 0, png_chunk(b"tRNS", struct.pack(">H", int(grey[10, 10]))))
    write_png(
        os.path.join(out, "rgb-trns.png"), arr, 8, 2, png_chunk(b"tRNS", struct.pack(">HHH", *map(int, arr[10, 10])))
    )


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png16(path: str, arr: np.ndarray) -> None:
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(h))
    with open(path, "wb") as f:
        f.write(
            b"\x89PNG\r\n\x1a\n"
            + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b"")
        )


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
    files["huge.png"] = (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )
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
    for filt, box, size in [
        ("bicubic", (16, 16, 224, 224), (224, 224)),
        ("bicubic", (10, 30, 200, 150), (61, 97)),
        ("bilinear", (0, 0, 256, 256), (100, 100)),
        ("bicubic", (5, 7, 40, 30), (120, 90)),
    ]:
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
    parser.add_argument(
        "--only",
        choices=["images", "decode", "bad", "golden"],
        action="append",
        help="build only these folders (repeatable; default: all)",
    )
    args = parser.parse_args()
    only = set(args.only or ["images", "decode", "bad", "golden"])
    images_dir = os.path.join(ROOT, "images")
    names = images(images_dir) if "images" in only else IMAGES
    if "decode" in only:
        decode_variants(os.path.join(ROOT, "decode"))
    if "bad" in only:
        bad_inputs(os.path.join(ROOT, "bad"), images_dir)
    if "golden" in only:
        golden(os.path.join(ROOT, "golden"), images_dir, names, args.models)


if __name__ == "__main__":
    main()
