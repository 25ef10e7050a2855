"""Shared fixtures: a small synthetic sample (no downloads besides the VGG19 weights)."""

import os
import shutil
import struct
import tempfile
import zlib

import numpy as np
import pytest


def make_sample(size=96, seed=0):
    """A colourful sample with structure at several scales, uint8 (H, W, 3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    img = np.zeros((size, size, 3), np.float32)
    for c in range(3):
        fx, fy = rng.uniform(0.05, 0.3, 2)
        img[..., c] = 0.5 + 0.3 * np.sin(fx * x + c) * np.cos(fy * y)
    img += rng.normal(0, 0.08, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def write_png(path, img):
    """Writes an (H, W, 3) uint8 array as an 8-bit RGB PNG (no imaging library needed)."""
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


@pytest.fixture(scope="session")
def sample():
    return make_sample()


@pytest.fixture(scope="session")
def cli_binary():
    """A private copy of the command line tool (others may rebuild the shared target dir)."""
    candidates = [os.environ.get("MRFSYNTH_CLI")]
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        candidates.append(os.path.join(target, "release", "mrfsynth"))
    here = os.path.dirname(os.path.abspath(__file__))
    candidates.append(os.path.join(here, "..", "..", "target", "release", "mrfsynth"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            d = tempfile.mkdtemp(prefix="mrfsynth-cli-")
            dst = os.path.join(d, "mrfsynth")
            shutil.copy2(c, dst)
            return dst
    if os.environ.get("MRFSYNTH_REQUIRE_CLI") == "1":
        pytest.fail("the mrfsynth binary was not found (set MRFSYNTH_CLI)")
    pytest.skip("the mrfsynth binary was not found (set MRFSYNTH_CLI)")
