// Cutting a feature map [C, H, W] into k x k patches at a stride, and the adjoint: summing
// patch values back onto the map (the MRF gradient's scatter of match - patch over overlaps).
// A patch row is laid out channel-major, element c*k*k + ky*k + kx, as on the CPU.
// The adjoint is written as a gather (each map cell sums the patches that cover it), so it
// needs no atomics and gives the same result every run.
#include <stdint.h>

extern "C" __global__ void unfold_f32(const float *__restrict__ x, float *__restrict__ out, int c,
                                      int h, int w, int k, int stride, int ph, int pw) {
  const size_t d = (size_t)c * k * k;
  const size_t total = (size_t)ph * pw * d;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
       i += (size_t)gridDim.x * blockDim.x) {
    const size_t p = i / d;
    const int e = (int)(i - p * d);
    const int ch = e / (k * k), ky = (e / k) % k, kx = e % k;
    const int y = (int)(p / pw) * stride + ky, xx = (int)(p % pw) * stride + kx;
    out[i] = x[((size_t)ch * h + y) * w + xx];
  }
}

extern "C" __global__ void fold_f32(const float *__restrict__ patches, float *__restrict__ out,
                                    int c, int h, int w, int k, int stride, int ph, int pw) {
  const size_t d = (size_t)c * k * k;
  const size_t total = (size_t)c * h * w;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
       i += (size_t)gridDim.x * blockDim.x) {
    const int ch = (int)(i / ((size_t)h * w));
    const int y = (int)((i / w) % h), xx = (int)(i % w);
    float acc = 0.f;
    for (int ky = 0; ky < k; ++ky) {
      const int oy = y - ky;
      if (oy < 0 || oy % stride != 0 || oy / stride >= ph) continue;
      for (int kx = 0; kx < k; ++kx) {
        const int ox = xx - kx;
        if (ox < 0 || ox % stride != 0 || ox / stride >= pw) continue;
        const size_t p = (size_t)(oy / stride) * pw + ox / stride;
        acc += patches[p * d + (size_t)ch * k * k + ky * k + kx];
      }
    }
    out[i] = acc;
  }
}
