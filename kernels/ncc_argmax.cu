// Fused nearest-patch search by normalised cross-correlation (cosine).
//
// For every query row q of Q [N, D] we want argmax_m <q, b_m> over the normalised bank
// B [M, D]. This is a matrix product whose N x M result is never stored: each block computes a
// 128 x 128 tile of scores in registers (8 x 8 per thread, operands staged through shared
// memory), reduces it to the best bank row per query, and keeps a running best while it walks
// its share of the bank. Blocks that share queries (the bank is split across grid.y) merge
// their results with one 64-bit atomicMax per query: score (order-preserving bits) in the high
// word, inverted index in the low word, so equal scores resolve to the lowest index, as the
// CPU matcher's argmax does. An f32 bank runs on the CUDA cores (ncc_best); f16 and bf16 banks
// run on the tensor cores (ncc_best_tc, further down).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>
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

__device__ __forceinline__ __half from_float_h(float v) { return __float2half_rn(v); }
__device__ __forceinline__ __nv_bfloat16 from_float_b(float v) { return __float2bfloat16_rn(v); }
template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ __half from_float<__half>(float v) { return from_float_h(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return from_float_b(v);
}

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

// Keeps the better of (s, idx) and (os, oi) in (s, idx).
__device__ __forceinline__ void keep_better(float &s, uint32_t &idx, float os, uint32_t oi) {
  if (better(os, oi, s, idx)) {
    s = os;
    idx = oi;
  }
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
        keep_better(s, idx, __shfl_xor_sync(0xffffffffu, s, o, 16),
                    __shfl_xor_sync(0xffffffffu, idx, o, 16));
      }
      keep_better(run_s[i], run_i[i], s, idx);
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

// Sum of squares of row r of q [., d], reduced across the calling warp (every lane gets it).
__device__ __forceinline__ float warp_row_sumsq(const float *__restrict__ q, int r, int d,
                                                int lane) {
  const float *row = q + (size_t)r * d;
  float acc = 0.f;
  for (int i = lane; i < d; i += 32) acc += row[i] * row[i];
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  return acc;
}

// Unpacks the merged results into out[0..n) (indices) and out[n..2n) (cosine scores as float
// bits: the packed score divided by the query's norm). One warp per query.
__device__ void ncc_finish(const float *__restrict__ q, const unsigned long long *__restrict__ best,
                           uint32_t *__restrict__ out, int n, int d) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (warp >= n) return;
  const float acc = warp_row_sumsq(q, warp, d, lane);
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

extern "C" __global__ void ncc_finish_all(const float *q, const unsigned long long *best,
                                          uint32_t *out, int n, int d) {
  ncc_finish(q, best, out, n, d);
}

// ---------------------------------------------------------------------------------------------
// Half-precision banks (f16 / bf16) on the tensor cores.
//
// Same contract as ncc_best, but the products run as 16x16x16 WMMA tiles with f32
// accumulation. Queries are scaled to unit norm while they are staged (inv_norm, from
// query_inv_norms), which keeps large VGG activations inside f16's range and makes the tile
// scores cosines directly. Each of the 8 warps owns 32 queries x 64 bank rows of the block's
// 128 x 128 tile; it reduces its accumulators through a 16x16 scratch tile in shared memory.
#define TC_K 64
#define TC_LD (TC_K + 8)  // row pitch in halves: 16-byte rows, off the shared-memory bank period

__device__ void query_inv_norms_kernel(const float *__restrict__ q, float *__restrict__ inv, int n,
                                       int d) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (warp >= n) return;
  const float acc = warp_row_sumsq(q, warp, d, lane);
  if (lane == 0) inv[warp] = 1.f / fmaxf(sqrtf(acc), 1e-8f);
}

template <typename T>
__device__ void ncc_best_tc(const float *__restrict__ q, const float *__restrict__ inv_norm,
                            const T *__restrict__ bank, unsigned long long *__restrict__ best, int n,
                            int m, int d) {
  using namespace nvcuda;
  __shared__ __align__(32) T qs[TILE_Q][TC_LD];
  __shared__ __align__(32) T bs[TILE_M][TC_LD];
  __shared__ __align__(32) float scratch[THREADS / 32][16 * 16];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int warp_row = warp >> 1;  // 0..3: queries warp_row*32 .. +32
  const int warp_col = warp & 1;   // 0..1: bank rows warp_col*64 .. +64
  const int q0 = blockIdx.x * TILE_Q;
  // Staging: thread copies 32 consecutive k of one row of each operand; 16-byte loads when the
  // rows are aligned for them (patch length a multiple of 8, as VGG's channel counts give).
  const int load_row = tid >> 1, load_k = (tid & 1) * 32;
  const int qr = q0 + load_row;
  const float q_scale = qr < n ? inv_norm[qr] : 0.f;
  const bool vec = (d % 8 == 0) && ((uintptr_t)q % 16 == 0) && ((uintptr_t)bank % 16 == 0);
  float *tile = scratch[warp];

  float run_s[2] = {-INFINITY, -INFINITY};
  uint32_t run_i[2] = {0xffffffffu, 0xffffffffu};

  const int tiles = (m + TILE_M - 1) / TILE_M;
  for (int t = blockIdx.y; t < tiles; t += gridDim.y) {
    const int m0 = t * TILE_M;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) wmma::fill_fragment(acc[i][j], 0.f);

    for (int k0 = 0; k0 < d; k0 += TC_K) {
      const int br = m0 + load_row;
      const int kb = k0 + load_k;
      if (vec && kb + 32 <= d) {
        if (qr < n) {
          const float4 *src = reinterpret_cast<const float4 *>(q + (size_t)qr * d + kb);
#pragma unroll
          for (int v = 0; v < 8; ++v) {
            const float4 x = src[v];
            qs[load_row][load_k + 4 * v + 0] = from_float<T>(x.x * q_scale);
            qs[load_row][load_k + 4 * v + 1] = from_float<T>(x.y * q_scale);
            qs[load_row][load_k + 4 * v + 2] = from_float<T>(x.z * q_scale);
            qs[load_row][load_k + 4 * v + 3] = from_float<T>(x.w * q_scale);
          }
        } else {
#pragma unroll
          for (int e = 0; e < 32; ++e) qs[load_row][load_k + e] = from_float<T>(0.f);
        }
        uint4 *dst = reinterpret_cast<uint4 *>(&bs[load_row][load_k]);
        if (br < m) {
          const uint4 *src = reinterpret_cast<const uint4 *>(bank + (size_t)br * d + kb);
#pragma unroll
          for (int v = 0; v < 4; ++v) dst[v] = src[v];
        } else {
#pragma unroll
          for (int v = 0; v < 4; ++v) dst[v] = make_uint4(0, 0, 0, 0);
        }
      } else {
#pragma unroll 4
        for (int e = 0; e < 32; ++e) {
          const int k = kb + e;
          qs[load_row][load_k + e] =
              from_float<T>((qr < n && k < d) ? q[(size_t)qr * d + k] * q_scale : 0.f);
          bs[load_row][load_k + e] =
              (br < m && k < d) ? bank[(size_t)br * d + k] : from_float<T>(0.f);
        }
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < TC_K; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a[2];
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b[4];
#pragma unroll
        for (int i = 0; i < 2; ++i)
          wmma::load_matrix_sync(a[i], &qs[warp_row * 32 + i * 16][kk], TC_LD);
#pragma unroll
        for (int j = 0; j < 4; ++j)
          wmma::load_matrix_sync(b[j], &bs[warp_col * 64 + j * 16][kk], TC_LD);
#pragma unroll
        for (int i = 0; i < 2; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
      }
      __syncthreads();
    }

    // Lane l looks at row l/2 of each 16x16 tile, columns (l%2)*8 .. +8.
    const int rr = lane >> 1, c0 = (lane & 1) * 8;
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float s = -INFINITY;
      uint32_t idx = 0xffffffffu;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        wmma::store_matrix_sync(tile, acc[i][j], 16, wmma::mem_row_major);
        __syncwarp();
        const int col0 = m0 + warp_col * 64 + j * 16 + c0;
#pragma unroll
        for (int c = 0; c < 8; ++c) {
          const int col = col0 + c;
          const float v = tile[rr * 16 + c0 + c];
          if (col < m && better(v, (uint32_t)col, s, idx)) {
            s = v;
            idx = (uint32_t)col;
          }
        }
        __syncwarp();
      }
      keep_better(s, idx, __shfl_xor_sync(0xffffffffu, s, 1), __shfl_xor_sync(0xffffffffu, idx, 1));
      keep_better(run_s[i], run_i[i], s, idx);
    }
  }

  if ((lane & 1) == 0) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int row = q0 + warp_row * 32 + i * 16 + (lane >> 1);
      if (row < n && run_i[i] != 0xffffffffu) {
        const unsigned long long packed =
            ((unsigned long long)order_bits(run_s[i]) << 32) | (unsigned long long)(~run_i[i]);
        atomicMax(best + row, packed);
      }
    }
  }
}

// Unpacks results whose scores are already cosines.
__device__ void ncc_finish_cosine_kernel(const unsigned long long *__restrict__ best,
                                         uint32_t *__restrict__ out, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const unsigned long long p = best[i];
    out[i] = ~(uint32_t)(p & 0xffffffffu);
    out[n + i] = __float_as_uint(from_order_bits((uint32_t)(p >> 32)));
  }
}

extern "C" __global__ void query_inv_norms(const float *q, float *inv, int n, int d) {
  query_inv_norms_kernel(q, inv, n, d);
}
extern "C" __global__ void __launch_bounds__(THREADS)
    ncc_best_tc_f16(const float *q, const float *inv_norm, const __half *bank,
                    unsigned long long *best, int n, int m, int d) {
  ncc_best_tc<__half>(q, inv_norm, bank, best, n, m, d);
}
extern "C" __global__ void __launch_bounds__(THREADS)
    ncc_best_tc_bf16(const float *q, const float *inv_norm, const __nv_bfloat16 *bank,
                     unsigned long long *best, int n, int m, int d) {
  ncc_best_tc<__nv_bfloat16>(q, inv_norm, bank, best, n, m, d);
}
extern "C" __global__ void ncc_finish_cosine(const unsigned long long *best, uint32_t *out, int n) {
  ncc_finish_cosine_kernel(best, out, n);
}
