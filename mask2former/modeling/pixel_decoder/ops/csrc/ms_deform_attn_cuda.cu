// Multi-scale deformable attention on CUDA: forward and backward kernels and their launchers.
// Only light headers here (no ATen): tensors, checks and dtype dispatch live in
// ms_deform_attn_cuda_ops.cpp, which keeps nvcc's share of the build short.
//
// One warp per (n, q, m): lane c handles channel c (and c + 32, ...), so the D channels of each
// bilinear corner are one coalesced load. Locations and attention weights are read in acc_t
// (float, or double for double values); half and bfloat16 values accumulate in float.
// Backward: grad_value is scattered with atomicAdd into an acc_t buffer (so half/bfloat16 need no
// 16-bit atomics); grad_loc and grad_attn are warp reductions written by lane 0.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include "bilinear.h"
#include "ms_deform_attn_cuda.h"

namespace msda {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;  // 8 warps per block

template <typename T>
__device__ __forceinline__ T warp_sum(T x) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    x += __shfl_xor_sync(0xffffffffu, x, offset);
  }
  return x;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) forward_kernel(
    const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts, const acc_t* __restrict__ loc,
    const acc_t* __restrict__ attn, scalar_t* __restrict__ out, const Dims d) {
  const int64_t nqm = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / kWarp;
  if (nqm >= d.N * d.Lq * d.M) return;  // whole warps exit together
  const int lane = threadIdx.x % kWarp;
  const int64_t n = nqm / (d.Lq * d.M), m = nqm % d.M;
  const int64_t row = d.M * d.D;  // stride between two positions of the value map
  for (int64_t c = lane; c - lane < d.D; c += kWarp) {
    acc_t acc = 0;
    for (int64_t l = 0; l < d.L; ++l) {
      const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
      const scalar_t* level = value + ((n * d.S + starts[l]) * d.M + m) * d.D + c;
      for (int64_t p = 0; p < d.P; ++p) {
        const int64_t s = (nqm * d.L + l) * d.P + p;
        Corners<acc_t> k;
        if (c >= d.D || !bilinear_corners(loc[2 * s], loc[2 * s + 1], H, W, k)) continue;
        acc_t sample = 0;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          if (k.pos[j] >= 0) sample += k.w[j] * static_cast<acc_t>(level[k.pos[j] * row]);
        }
        acc += attn[s] * sample;
      }
    }
    if (c < d.D) out[nqm * d.D + c] = static_cast<scalar_t>(acc);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) backward_kernel(
    const scalar_t* __restrict__ value, const int64_t* __restrict__ shapes,
    const int64_t* __restrict__ starts, const acc_t* __restrict__ loc,
    const acc_t* __restrict__ attn, const scalar_t* __restrict__ grad_out,
    acc_t* __restrict__ grad_value, acc_t* __restrict__ grad_loc, acc_t* __restrict__ grad_attn,
    const Dims d) {
  const int64_t nqm = (static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) / kWarp;
  if (nqm >= d.N * d.Lq * d.M) return;
  const int lane = threadIdx.x % kWarp;
  const int64_t n = nqm / (d.Lq * d.M), m = nqm % d.M;
  const int64_t row = d.M * d.D;
  for (int64_t c = lane; c - lane < d.D; c += kWarp) {  // the same trip count in every lane
    const acc_t g = c < d.D ? static_cast<acc_t>(grad_out[nqm * d.D + c]) : acc_t(0);
    for (int64_t l = 0; l < d.L; ++l) {
      const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
      const int64_t offset = ((n * d.S + starts[l]) * d.M + m) * d.D + c;
      for (int64_t p = 0; p < d.P; ++p) {
        const int64_t s = (nqm * d.L + l) * d.P + p;
        Corners<acc_t> k;
        if (!bilinear_corners(loc[2 * s], loc[2 * s + 1], H, W, k)) continue;  // warp-uniform
        const acc_t a = attn[s];
        acc_t dot[4];  // <grad_output, corner value>, this lane's channel only
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          dot[j] = 0;
          if (c < d.D && k.pos[j] >= 0) {
            dot[j] = g * static_cast<acc_t>(value[offset + k.pos[j] * row]);
            atomicAdd(grad_value + offset + k.pos[j] * row, a * k.w[j] * g);
          }
        }
        // The gradients are linear in dot: per-lane partials, then summed over the warp.
        acc_t gx, gy;
        location_grad(k, dot, a, H, W, gx, gy);
        const acc_t ga =
            warp_sum(k.w[0] * dot[0] + k.w[1] * dot[1] + k.w[2] * dot[2] + k.w[3] * dot[3]);
        gx = warp_sum(gx);
        gy = warp_sum(gy);
        if (lane == 0) {  // zero-initialised; only this warp writes sample s
          grad_attn[s] += ga;
          grad_loc[2 * s] += gx;
          grad_loc[2 * s + 1] += gy;
        }
      }
    }
  }
}

unsigned int num_blocks(const Dims& d) {
  return static_cast<unsigned int>((d.N * d.Lq * d.M * kWarp + kThreads - 1) / kThreads);
}

}  // namespace

template <typename scalar_t, typename acc_t>
cudaError_t launch_forward(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                           const acc_t* loc, const acc_t* attn, scalar_t* out, const Dims& d,
                           cudaStream_t stream) {
  forward_kernel<scalar_t, acc_t><<<num_blocks(d), kThreads, 0, stream>>>(
      value, shapes, starts, loc, attn, out, d);
  return cudaGetLastError();
}

template <typename scalar_t, typename acc_t>
cudaError_t launch_backward(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                            const acc_t* loc, const acc_t* attn, const scalar_t* grad_out,
                            acc_t* grad_value, acc_t* grad_loc, acc_t* grad_attn, const Dims& d,
                            cudaStream_t stream) {
  backward_kernel<scalar_t, acc_t><<<num_blocks(d), kThreads, 0, stream>>>(
      value, shapes, starts, loc, attn, grad_out, grad_value, grad_loc, grad_attn, d);
  return cudaGetLastError();
}

#define MSDA_INSTANTIATE(scalar_t, acc_t)                                                          \
  template cudaError_t launch_forward<scalar_t, acc_t>(const scalar_t*, const int64_t*,            \
                                                       const int64_t*, const acc_t*, const acc_t*, \
                                                       scalar_t*, const Dims&, cudaStream_t);      \
  template cudaError_t launch_backward<scalar_t, acc_t>(                                           \
      const scalar_t*, const int64_t*, const int64_t*, const acc_t*, const acc_t*,                 \
      const scalar_t*, acc_t*, acc_t*, acc_t*, const Dims&, cudaStream_t);

MSDA_INSTANTIATE(float, float)
MSDA_INSTANTIATE(double, double)
MSDA_INSTANTIATE(c10::Half, float)
MSDA_INSTANTIATE(c10::BFloat16, float)

}  // namespace msda
