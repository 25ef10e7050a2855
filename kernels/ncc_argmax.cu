// Fused nearest-patch search by normalised cross-correlation (cosine).
//
// For every query row q of Q [N, D] we want argmax_m <q, b_m> over the normalised bank
// B [M, D]. This is a matrix product whose N x M result is never stored: each block computes a
// 128 x 128 tile of scores in registers (8 x 8 per thread, operands staged through shared
// memory), reduces it to the best bank row per query, and keeps a running best while it walks
// its share of the bank. Blocks that share queries (the bank is split across grid.y) merge
// their results with one 64-bit atomicMax per query: score (order-preserving bits) in the high
// word, inverted index in the low word, so equal scores resolve to the lowest index, as the
// CPU matcher's argmax does.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#define TILE_Q 128
#define TILE_M 128
#define TILE_K 8
#define THREADS 256

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

__device__ __forceinline__ void store(float *p, float v) { *p = v; }
__device__ __forceinline__ void store(__half *p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

// Float bits mapped so that unsigned order equals float order.
__device__ __forceinline__ uint32_t order_bits(float f) {
  uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float from_order_bits(uint32_t u) {
  return __uint_as_float((u & 0x80000000u) ? (u & 0x7fffffffu) : ~u);
}

// Better (score, index): higher score, then lower index.
__device__ __forceinline__ bool better(float s, uint32_t i, float bs, uint32_t bi) {
  return s > bs || (s == bs && i < bi);
}

// Bank rows scaled to unit L2 norm (norm clamped at 1e-8, as on the CPU), written as T.
// One block per row.
template <typename T>
__device__ void normalize_rows(const float *__restrict__ x, T *__restrict__ out, int rows, int d) {
  __shared__ float partial[THREADS / 32];
  int row = blockIdx.x;
  if (row >= rows) return;
  const float *src = x + (size_t)row * d;
  float acc = 0.f;
  for (int i = threadIdx.x; i < d; i += blockDim.x) acc += src[i] * src[i];
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x < 32) {
    float v = threadIdx.x < (blockDim.x >> 5) ? partial[threadIdx.x] : 0.f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0) partial[0] = v;
  }
  __syncthreads();
  float inv = 1.f / fmaxf(sqrtf(partial[0]), 1e-8f);
  T *dst = out + (size_t)row * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) store(dst + i, src[i] * inv);
}

// best[n] (zero-initialised) receives the packed best match of query n over bank rows
// [tile * TILE_M, ...) for tiles blockIdx.y, blockIdx.y + gridDim.y, ...
template <typename T>
__device__ void ncc_best(const float *__restrict__ q, const T *__restrict__ bank,
                         unsigned long long *__restrict__ best, int n, int m, int d) {
  __shared__ __align__(16) float qs[TILE_K][TILE_Q];
  __shared__ __align__(16) float bs[TILE_K][TILE_M];
  const int tid = threadIdx.x;
  const int tx = tid & 15;  // bank columns tx*4 + {0..3} and 64 + tx*4 + {0..3}
  const int ty = tid >> 4;  // query rows  ty*4 + {0..3} and 64 + ty*4 + {0..3}
  const int q0 = blockIdx.x * TILE_Q;
  // Staging: each thread copies 4 elements of each operand per k step.
  const int load_row = tid >> 1;       // 0..127
  const int load_k = (tid & 1) * 4;    // 0 or 4

  float run_s[8];
  uint32_t run_i[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    run_s[i] = -INFINITY;
    run_i[i] = 0xffffffffu;
  }

  const int tiles = (m + TILE_M - 1) / TILE_M;
  for (int t = blockIdx.y; t < tiles; t += gridDim.y) {
    const int m0 = t * TILE_M;
    float acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[i][j] = 0.f;

    for (int k0 = 0; k0 < d; k0 += TILE_K) {
      const int qr = q0 + load_row, br = m0 + load_row;
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int k = k0 + load_k + e;
        qs[load_k + e][load_row] = (qr < n && k < d) ? q[(size_t)qr * d + k] : 0.f;
        bs[load_k + e][load_row] = (br < m && k < d) ? to_float(bank[(size_t)br * d + k]) : 0.f;
      }
      __syncthreads();
#pragma unroll
      for (int k = 0; k < TILE_K; ++k) {
        const float4 a0 = *reinterpret_cast<const float4 *>(&qs[k][ty * 4]);
        const float4 a1 = *reinterpret_cast<const float4 *>(&qs[k][64 + ty * 4]);
        const float4 b0 = *reinterpret_cast<const float4 *>(&bs[k][tx * 4]);
        const float4 b1 = *reinterpret_cast<const float4 *>(&bs[k][64 + tx * 4]);
        const float a[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        const float b[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
      __syncthreads();
    }

    // Best column of this tile for each of the thread's 8 queries, then across the 16 lanes
    // that hold the same queries (consecutive lanes of one warp).
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      float s = -INFINITY;
      uint32_t idx = 0xffffffffu;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int col = m0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + (j - 4));
        if (col < m && better(acc[i][j], (uint32_t)col, s, idx)) {
          s = acc[i][j];
          idx = (uint32_t)col;
        }
      }
#pragma unroll
      for (int o = 8; o > 0; o >>= 1) {
        const float os = __shfl_xor_sync(0xffffffffu, s, o, 16);
        const uint32_t oi = __shfl_xor_sync(0xffffffffu, idx, o, 16);
        if (better(os, oi, s, idx)) {
          s = os;
          idx = oi;
        }
      }
      if (better(s, idx, run_s[i], run_i[i])) {
        run_s[i] = s;
        run_i[i] = idx;
      }
    }
  }

  if (tx == 0) {
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const int row = q0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + (i - 4));
      if (row < n && run_i[i] != 0xffffffffu) {
        const unsigned long long packed =
            ((unsigned long long)order_bits(run_s[i]) << 32) | (unsigned long long)(~run_i[i]);
        atomicMax(best + row, packed);
      }
    }
  }
}

// Unpacks the merged results into out[0..n) (indices) and out[n..2n) (cosine scores as float
// bits: the packed score divided by the query's norm). One warp per query.
__device__ void ncc_finish(const float *__restrict__ q, const unsigned long long *__restrict__ best,
                           uint32_t *__restrict__ out, int n, int d) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (warp >= n) return;
  const float *row = q + (size_t)warp * d;
  float acc = 0.f;
  for (int i = lane; i < d; i += 32) acc += row[i] * row[i];
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) {
    const unsigned long long p = best[warp];
    out[warp] = ~(uint32_t)(p & 0xffffffffu);
    const float s = from_order_bits((uint32_t)(p >> 32)) / fmaxf(sqrtf(acc), 1e-8f);
    out[n + warp] = __float_as_uint(s);
  }
}

extern "C" __global__ void normalize_rows_f32(const float *x, float *out, int rows, int d) {
  normalize_rows<float>(x, out, rows, d);
}
extern "C" __global__ void normalize_rows_f16(const float *x, __half *out, int rows, int d) {
  normalize_rows<__half>(x, out, rows, d);
}
extern "C" __global__ void normalize_rows_bf16(const float *x, __nv_bfloat16 *out, int rows, int d) {
  normalize_rows<__nv_bfloat16>(x, out, rows, d);
}

extern "C" __global__ void __launch_bounds__(THREADS)
    ncc_best_f32(const float *q, const float *bank, unsigned long long *best, int n, int m, int d) {
  ncc_best<float>(q, bank, best, n, m, d);
}
extern "C" __global__ void __launch_bounds__(THREADS)
    ncc_best_f16(const float *q, const __half *bank, unsigned long long *best, int n, int m, int d) {
  ncc_best<__half>(q, bank, best, n, m, d);
}
extern "C" __global__ void __launch_bounds__(THREADS)
    ncc_best_bf16(const float *q, const __nv_bfloat16 *bank, unsigned long long *best, int n, int m,
                  int d) {
  ncc_best<__nv_bfloat16>(q, bank, best, n, m, d);
}

extern "C" __global__ void ncc_finish_all(const float *q, const unsigned long long *best,
                                          uint32_t *out, int n, int d) {
  ncc_finish(q, best, out, n, d);
}
