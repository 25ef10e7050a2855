"""Notebook-style comparison of the MRF and Gram priors on a few samples, from Python.

    pip install ./python matplotlib      # matplotlib is optional
    python python/examples/compare_priors.py [SAMPLE.png ...] [--size 128] [--iterations 20]

Without arguments it makes three synthetic samples. For each sample both priors run under one
pyramid, seed and iteration budget (``mrfsynth.compare``); the script prints a table of the
metrics and, with matplotlib, shows the textures and a bar chart of SWD and copy score
(saved to compare_priors.png).
"""

import argparse

import numpy as np

import mrfsynth


def synthetic_samples(size=128):
    """Three small samples with different structure: blobs, stripes, speckle."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    blobs = np.stack([0.5 + 0.4 * np.sin(9 * x + c) * np.cos(7 * y - c) for c in range(3)], -1)
    stripes = np.stack([0.5 + 0.45 * np.sin(40 * (x + 0.3 * y) + c) for c in range(3)], -1)
    speckle = np.clip(0.5 + 0.25 * rng.standard_normal((size, size, 3)), 0, 1)
    return {"blobs": blobs, "stripes": stripes, "speckle": speckle.astype(np.float32)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("samples", nargs="*", help="image files (default: synthetic samples)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    samples = {p: p for p in args.samples} or synthetic_samples(args.size)
    results = {}
    for name, sample in samples.items():
        print(f"{name}: MRF and Gram, {args.size} px, {args.levels} levels x {args.iterations}")
        results[name] = mrfsynth.compare(sample, size=(args.size, args.size), levels=args.levels,
                                         iterations=args.iterations, seed=args.seed)

    keys = ["swd", "gram_distance", "copy_score", "color_histogram_distance"]
    print(f"\n{'sample':<12}{'prior':<6}" + "".join(f"{k:>26}" for k in keys))
    for name, r in results.items():
        for prior, m in r["metrics"].items():
            print(f"{name:<12}{prior:<6}" + "".join(f"{m[k]:>26.6g}" for k in keys))

    try:
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(matplotlib is not installed: no plots)")
        return
    fig, axes = plt.subplots(len(results), 4, figsize=(12, 3 * len(results)), squeeze=False)
    for row, (name, r) in zip(axes, results.items()):
        sample = samples[name]
        if isinstance(sample, str):
            row[0].set_axis_off()  # a file: shown by its name only
        else:
            row[0].imshow(sample)
        row[0].set_title(f"{name}: sample")
        for ax, prior in zip(row[1:3], ["mrf", "gram"]):
            ax.imshow(r["images"][prior])
            ax.set_title(prior)
        for ax in row[:3]:
            ax.set_xticks([])
            ax.set_yticks([])
        priors = list(r["metrics"])
        swd = [r["metrics"][p]["swd"] for p in priors]
        copy = [r["metrics"][p]["copy_score"] for p in priors]
        xs = np.arange(len(priors))
        row[3].bar(xs - 0.2, np.array(swd) / max(max(swd), 1e-12), 0.4, label="SWD (rel.)")
        row[3].bar(xs + 0.2, copy, 0.4, label="copy score")
        row[3].set_xticks(xs, priors)
        row[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig("compare_priors.png", dpi=100)
    print("\nwrote compare_priors.png")
    plt.show()


if __name__ == "__main__":
    main()
