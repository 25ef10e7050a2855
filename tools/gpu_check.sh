#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, with target/gpu-bundle carried there
# (made by tools/gpu_bundle.sh). Writes every result under $OUT:
#   tests.log      tests/cuda.rs: kernel vs CPU matcher (random and real VGG features, f32/f16),
#                  patch kernels vs CPU, a short texture on both devices
#   bench_gpu.md   our kernel vs candle's matmul+argmax at 256/512/1024 px
#   e2e.log        the CNNMRF-default 384 px texture job: cold, warm, warm with an f16 bank, and
#                  that with 10 L-BFGS pairs instead of 100
#   large.log      bigger textures (3 iterations a level) and the GPU memory they peak at
set -uo pipefail
# On the GPU machine a missing GPU is a failure, not a skip; the script exits non-zero when any
# part failed (FAILED lists them).
export MRFSYNTH_REQUIRE_GPU=1
FAILED=""
B=$PWD/target/gpu-bundle
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$B/bins.tar.xz" "$B"
NV=$(python3 -c 'import nvidia, os; print(nvidia.__path__[0])' 2>/dev/null || true)
LIBS=$( (find "$NV" -name 'lib*.so*' -printf '%h\n' 2>/dev/null; ls -d /usr/local/cuda/lib64 2>/dev/null) | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=$LIBS${LD_LIBRARY_PATH:-}
export HOME=${HOME:-/root} XDG_CACHE_HOME=$PWD/target/gpu-cache
export RUST_BACKTRACE=1
# Which parts to run (all by default): env tests bench e2e large.
PARTS=" ${GPU_CHECK_PARTS:-tests bench e2e large} "
part() { [[ "$PARTS" == *" $1 "* ]]; }
# One line per level from a sidecar: size, evaluations, seconds, forward/priors/backward.
levels() {
  python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
for l in d["levels"]:
    t = l["timing"]
    print("   %5d px: %3d evals %6.2f s (forward %.2f, priors %.2f, backward %.2f)" % (l["width"], l["evaluations"], l["seconds"], t["forward_s"], t["priors_s"], t["backward_s"]))
print("   total %.2f s on %s" % (d["seconds"], d["device"]))' "$1"
}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  echo "missing libraries:"; ldd "$B/mrfsynth" | grep -i 'not found' || echo none
} > "$OUT/env.log" 2>&1
cat "$OUT/env.log"

"$B/mrfsynth" weights fetch --from "$B/vgg19_q.bin" > "$OUT/weights.log" 2>&1
mkdir -p "$XDG_CACHE_HOME/mrfsynth/samples" && cp "$B/ihc.png" "$XDG_CACHE_HOME/mrfsynth/samples/"
tail -1 "$OUT/weights.log"

peak_mem() { # runs "$@" while sampling GPU memory; prints the peak in MiB
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$OUT/.mem" 2>/dev/null &
  local smi=$!
  "$@"; local rc=$?
  kill $smi 2>/dev/null; wait $smi 2>/dev/null
  echo "rc=$rc peak_gpu_MiB=$(sort -n "$OUT/.mem" | tail -1)"
}

if part tests; then
timeout 100 "$B/cuda_tests" --test-threads=1 --nocapture > "$OUT/tests.log" 2>&1
rc=$?; [ $rc -eq 0 ] || FAILED="$FAILED tests"
echo "tests rc=$rc"; grep -E "^test |test result|equal" "$OUT/tests.log"
fi

if part bench; then
timeout 90 "$B/bench_gpu" "$B/ihc.png" > "$OUT/bench_gpu.md" 2>&1
rc=$?; [ $rc -eq 0 ] || FAILED="$FAILED bench"
echo "bench rc=$rc"; cat "$OUT/bench_gpu.md"
fi

TIMEFORMAT='wall %R s'
# The last run keeps 10 L-BFGS pairs instead of 100: the optimiser's own cost on the host.
if part e2e; then
for run in cold:f32:100 warm:f32:100 warm:f16:100 warm:f16:10; do
  IFS=: read -r name bank hist <<< "$run"
  { time timeout 75 "$B/mrfsynth" --quiet texture --device cuda --bank-precision $bank --history $hist \
    -o "$OUT/t.png"; } >> "$OUT/e2e.log" 2>&1
  rc=$?; [ $rc -eq 0 ] || FAILED="$FAILED e2e:$run"
  echo "e2e $run rc=$rc" >> "$OUT/e2e.log"
  levels "$OUT/t.json" >> "$OUT/e2e.log" 2>&1
  mv "$OUT/t.png" "$OUT/texture384_$bank.png" 2>/dev/null
done
cat "$OUT/e2e.log"
fi

if part large; then
for size in 2048 4096 8192; do
  echo "== $size px" >> "$OUT/large.log"
  peak_mem timeout $((size / 32 + 10)) "$B/mrfsynth" --quiet texture --device cuda --size $size --iterations 3 --bank-precision f16 \
    -o "$OUT/large_$size.png" >> "$OUT/large.log" 2>&1
  [ -f "$OUT/large_$size.json" ] && levels "$OUT/large_$size.json" >> "$OUT/large.log" 2>&1
  rm -f "$OUT/large_$size.png" "$OUT/large_$size.json"
done
cat "$OUT/large.log"
fi
rm -f "$OUT/.mem" "$OUT/t.json" "$OUT"/*.json
if [ -n "$FAILED" ]; then
  echo "FAILED:$FAILED"
  exit 1
fi
