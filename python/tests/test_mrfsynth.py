"""The Python binding: shapes, dtypes, determinism, equality with the CLI, errors, callbacks
and the GIL. Jobs are tiny (64 px, one level, a few iterations) to run on two cores."""

import os
import subprocess
import threading
import time
import zlib

import numpy as np
import pytest

import mrfsynth
from conftest import make_sample, write_png

SMALL = dict(size=(64, 64), levels=1, iterations=5, seed=3, progress=False)


def read_png(path):
    """Reads an 8-bit RGB PNG written by the engine (filter types 0-4), (H, W, 3) uint8."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    w = h = None
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        tag = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        if tag == b"IHDR":
            w, h = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
            assert body[8] == 8 and body[9] == 2, "8-bit RGB expected"
        elif tag == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = 3 * w
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for r in range(h):
        f = raw[r * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, r * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, np.int32)
        for i in range(stride):
            a = cur[i - 3] if i >= 3 else 0
            b = prev[i]
            c = prev[i - 3] if i >= 3 else 0
            if f == 0:
                p = 0
            elif f == 1:
                p = a
            elif f == 2:
                p = b
            elif f == 3:
                p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[i] = (line[i] + p) & 0xFF
        out[r] = cur
        prev = cur
    return out.reshape(h, w, 3)


def test_texture_shape_and_dtype_uint8(sample):
    out = mrfsynth.texture(sample, **{**SMALL, "size": (48, 64)})
    assert out.shape == (48, 64, 3)
    assert out.dtype == np.uint8


def test_texture_float_in_float_out(sample):
    out = mrfsynth.texture(sample.astype(np.float32) / 255, **SMALL)
    assert out.shape == (64, 64, 3)
    assert out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_same_seed_same_image_other_seed_other_image(sample):
    a = mrfsynth.texture(sample, **SMALL)
    b = mrfsynth.texture(sample, **SMALL)
    c = mrfsynth.texture(sample, **{**SMALL, "seed": 4, "init": "noise"})
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_same_bytes_as_the_cli(sample, cli_binary, tmp_path):
    style = tmp_path / "style.png"
    write_png(style, sample)
    out = tmp_path / "cli.png"
    subprocess.run(
        [cli_binary, "--quiet", "texture", "--style", str(style), "-o", str(out),
         "--size", "64x64", "--levels", "1", "--iterations", "5", "--seed", "3",
         "--tv-weight", "0.002"],
        check=True,
    )
    cli = read_png(out)
    # The same job from an array and from the same file.
    from_array = mrfsynth.texture(sample, **SMALL, tv_weight=0.002)
    from_file = mrfsynth.texture(str(style), **SMALL, tv_weight=0.002)
    assert np.array_equal(read_png(style), sample)
    assert np.array_equal(from_array, cli)
    assert np.array_equal(from_file, cli)


def test_transfer_keeps_content_aspect(sample):
    content = sample[:64, :96] if sample.shape[1] >= 96 else sample
    out = mrfsynth.transfer(content, sample, long_side=64, levels=1, iterations=2,
                            progress=False, content_weight=5.0)
    h, w = content.shape[:2]
    assert max(out.shape[:2]) == 64
    assert out.dtype == np.uint8


def test_metrics_keys(sample):
    m = mrfsynth.metrics(sample, sample)
    for k in ["swd", "gram_distance", "copy_score", "mrf_mean_cosine", "patch_coverage",
              "color_histogram_distance", "periodicity", "sample_periodicity"]:
        assert k in m
    assert m["swd"] == pytest.approx(0.0, abs=1e-3)


def test_features_shapes(sample):
    f = mrfsynth.features(sample, ["relu1_1", "relu3_1"])
    assert set(f) == {"relu1_1", "relu3_1"}
    assert f["relu1_1"].shape == (64, 96, 96)
    assert f["relu3_1"].shape == (256, 24, 24)
    assert f["relu3_1"].dtype == np.float32


def test_compare_returns_images_and_metrics(sample):
    r = mrfsynth.compare(sample, size=(64, 64), levels=1, iterations=2, progress=False)
    assert set(r["images"]) == {"mrf", "gram"}
    assert r["images"]["gram"].shape == (64, 64, 3)
    assert "swd" in r["metrics"]["mrf"]


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((64, 64), np.uint8), "shape"),
        (np.zeros((64, 64, 4), np.uint8), "shape"),
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.full((64, 64, 3), np.nan, np.float32), "NaN"),
        (np.full((64, 64, 3), 2.0, np.float32), "0..1"),
        (np.zeros((64, 64, 3), np.int64), "dtype"),
    ],
)
def test_bad_arrays_raise_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        mrfsynth.texture(bad, **SMALL)


def test_missing_file_and_bad_options(sample):
    with pytest.raises(FileNotFoundError, match="not found"):
        mrfsynth.texture("/nonexistent/style.png", **SMALL)
    with pytest.raises(TypeError, match="no_such_flag"):
        mrfsynth.texture(sample, **SMALL, no_such_flag=1)
    with pytest.raises(ValueError, match="line-search"):
        mrfsynth.texture(sample, **SMALL, line_search="sometimes")
    with pytest.raises(ValueError):
        mrfsynth.texture(sample, **SMALL, prior="nonsense")
    with pytest.raises(ValueError, match="too small|small"):
        mrfsynth.texture(sample, **{**SMALL, "size": (4, 4)})


def test_callback_stops_the_run(sample):
    calls = []

    def cb(level, iteration, loss, image):
        calls.append((level, iteration, loss, image.shape, image.dtype))
        return iteration < 2

    out = mrfsynth.texture(sample, **{**SMALL, "iterations": 10}, callback=cb)
    assert [c[1] for c in calls] == [1, 2]
    assert calls[0][3] == (64, 64, 3) and calls[0][4] == np.uint8
    assert np.isfinite(calls[0][2])
    assert out.shape == (64, 64, 3)


def test_callback_exception_propagates(sample):
    def cb(*_):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        mrfsynth.texture(sample, **SMALL, callback=cb)


def test_two_threads_run_concurrently(sample):
    """With the GIL released, two jobs started together overlap: each makes progress before
    the other has finished (with the GIL held, the second would start after the first)."""
    mrfsynth.texture(sample, **{**SMALL, "iterations": 1})  # loads the network once
    steps = {0: [], 1: []}
    errors = []

    def job(k):
        try:
            mrfsynth.texture(
                sample, **{**SMALL, "iterations": 6, "seed": k},
                callback=lambda *_: steps[k].append(time.perf_counter()),
            )
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=job, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(steps[0]) == 6 and len(steps[1]) == 6
    # Each thread's first step happened before the other's last one.
    assert steps[0][0] < steps[1][-1] and steps[1][0] < steps[0][-1]


def test_ctrl_c_stops_the_run_with_keyboard_interrupt(sample):
    """SIGINT while the engine runs (GIL released) stops it after the current iteration and
    raises KeyboardInterrupt, instead of waiting for the whole run."""
    import os
    import signal

    mrfsynth.texture(sample, **{**SMALL, "iterations": 1})  # network loaded
    # Python's own Ctrl-C handler: a shell that starts the tests in the background hands them
    # SIGINT ignored, and Python then keeps it ignored.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    started = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            mrfsynth.texture(sample, **{**SMALL, "iterations": 2000})
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert time.perf_counter() - started < 30


def test_compare_with_content_runs_two_transfers(sample):
    content = sample[:64, :80].copy()
    r = mrfsynth.compare(sample, content=content, size=64, levels=1, iterations=1,
                         progress=False)
    assert r["images"]["mrf"].shape == (51, 64, 3)
    assert r["metrics"]["gram"]["content_distance"] is not None


def test_blend_and_guide_maps_give_the_cli_bytes(sample, cli_binary, tmp_path):
    other = make_sample(seed=5)
    # Two-region maps: left half red, right half blue, for each sample and for the output.
    def halves(h, w):
        m = np.zeros((h, w, 3), np.uint8)
        m[:, : w // 2, 0] = 255
        m[:, w // 2 :, 2] = 255
        return m

    maps = [halves(*sample.shape[:2]), halves(*other.shape[:2])]
    target = halves(64, 64)
    paths = {}
    for name, img in [("a", sample), ("b", other), ("ma", maps[0]), ("mb", maps[1]), ("t", target)]:
        paths[name] = tmp_path / f"{name}.png"
        write_png(paths[name], img)
    out = tmp_path / "cli.png"
    subprocess.run(
        [cli_binary, "--quiet", "texture", "--style", f"{paths['a']},{paths['b']}",
         "--style-blend", "1,3", "--style-map", f"{paths['ma']},{paths['mb']}",
         "--target-map", str(paths["t"]), "-o", str(out),
         "--size", "64x64", "--levels", "1", "--iterations", "5", "--seed", "3"],
        check=True,
    )
    ours = mrfsynth.texture([sample, other], **SMALL, style_blend=[1, 3],
                            style_map=maps, target_map=target)
    assert np.array_equal(ours, read_png(out))
    with pytest.raises(ValueError, match="style-blend"):
        mrfsynth.texture([sample, other], **SMALL, style_blend=[1])
    with pytest.raises(ValueError, match="go together"):
        mrfsynth.texture(sample, **SMALL, style_map=[maps[0]])
    with pytest.raises(ValueError, match="maps for 2 style images"):
        mrfsynth.texture([sample, other], **SMALL, style_map=[maps[0]], target_map=target)
