// Multi-scale deformable attention on the CPU: forward and backward, parallel with OpenMP (via
// at::parallel_for, so torch.set_num_threads applies). Registered as
// torch.ops.mask2former_msda_cpu.{forward,backward}.
//
// value (N, S, M, D) keeps the D channels of one head contiguous, so each bilinear corner is one
// contiguous, vectorisable run of D values.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <tuple>
#include <vector>

#include "bilinear.h"
#include "checks.h"

namespace msda {
namespace {

// Runs f(begin, end) over [0, n) in chunks handed out dynamically to at::parallel_for's threads,
// so a thread that the OS preempts (busy machines) does not hold up a fixed share of the work.
template <typename F>
void parallel_chunks(int64_t n, int64_t chunk, const F& f) {
  std::atomic<int64_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    for (int64_t b = next.fetch_add(chunk); b < n; b = next.fetch_add(chunk)) {
      f(b, std::min(n, b + chunk));
    }
  });
}

// Forward: parallel over (n, q); each (n, q, m) accumulates its L*P samples in acc_t.
template <typename scalar_t, typename acc_t>
void forward_kernel(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                    const acc_t* loc, const acc_t* attn, scalar_t* out, const Dims d) {
  const int64_t row = d.M * d.D;  // stride between two positions of the value map
  parallel_chunks(d.N * d.Lq, 64, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(d.D);
    const std::vector<scalar_t> zeros(d.D, scalar_t(0));  // stands in for corners outside the map
    for (int64_t nq = begin; nq < end; ++nq) {
      const int64_t n = nq / d.Lq;
      for (int64_t m = 0; m < d.M; ++m) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t l = 0; l < d.L; ++l) {
          const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
          const scalar_t* level = value + ((n * d.S + starts[l]) * d.M + m) * d.D;
          for (int64_t p = 0; p < d.P; ++p) {
            const int64_t s = ((nq * d.M + m) * d.L + l) * d.P + p;
            Corners<acc_t> c;
            if (!bilinear_corners(loc[2 * s], loc[2 * s + 1], H, W, c)) continue;
            const scalar_t* v[4];
            acc_t w[4];
            for (int k = 0; k < 4; ++k) {
              v[k] = c.pos[k] >= 0 ? level + c.pos[k] * row : zeros.data();
              w[k] = attn[s] * c.w[k];
            }
            acc_t* a = acc.data();
#pragma omp simd
            for (int64_t i = 0; i < d.D; ++i) {
              a[i] += w[0] * static_cast<acc_t>(v[0][i]) + w[1] * static_cast<acc_t>(v[1][i]) +
                      w[2] * static_cast<acc_t>(v[2][i]) + w[3] * static_cast<acc_t>(v[3][i]);
            }
          }
        }
        scalar_t* o = out + (nq * d.M + m) * d.D;
        for (int64_t i = 0; i < d.D; ++i) o[i] = static_cast<scalar_t>(acc[i]);
      }
    }
  });
}

// Backward: parallel over (n, m, l), so each task owns one slice of grad_value (no atomics) and
// every (q, p) sample of that slice writes its own grad_loc / grad_attn entries.
template <typename scalar_t, typename acc_t>
void backward_kernel(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                     const acc_t* loc, const acc_t* attn, const scalar_t* grad_out,
                     acc_t* grad_value, acc_t* grad_loc, acc_t* grad_attn, const Dims d) {
  const int64_t row = d.M * d.D;
  parallel_chunks(d.N * d.M * d.L, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> g(d.D), sink(d.D);  // grad_output in acc_t; target for outside corners
    const std::vector<scalar_t> zeros(d.D, scalar_t(0));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t l = task % d.L, m = (task / d.L) % d.M, n = task / (d.L * d.M);
      const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
      const int64_t offset = ((n * d.S + starts[l]) * d.M + m) * d.D;
      for (int64_t q = 0; q < d.Lq; ++q) {
        const int64_t nq = n * d.Lq + q;
        const scalar_t* go = grad_out + (nq * d.M + m) * d.D;
        for (int64_t i = 0; i < d.D; ++i) g[i] = static_cast<acc_t>(go[i]);
        for (int64_t p = 0; p < d.P; ++p) {
          const int64_t s = ((nq * d.M + m) * d.L + l) * d.P + p;
          Corners<acc_t> c;
          if (!bilinear_corners(loc[2 * s], loc[2 * s + 1], H, W, c)) {
            grad_loc[2 * s] = grad_loc[2 * s + 1] = grad_attn[s] = acc_t(0);
            continue;
          }
          const acc_t a = attn[s];
          const scalar_t* v[4];
          acc_t* gv[4];
          acc_t wa[4];
          for (int k = 0; k < 4; ++k) {
            v[k] = c.pos[k] >= 0 ? value + offset + c.pos[k] * row : zeros.data();
            gv[k] = c.pos[k] >= 0 ? grad_value + offset + c.pos[k] * row : sink.data();
            wa[k] = a * c.w[k];
          }
          acc_t d0 = 0, d1 = 0, d2 = 0, d3 = 0;  // <grad_output, corner value>
          const acc_t* gp = g.data();
#pragma omp simd reduction(+ : d0, d1, d2, d3)
          for (int64_t i = 0; i < d.D; ++i) {
            const acc_t gi = gp[i];
            d0 += gi * static_cast<acc_t>(v[0][i]);
            d1 += gi * static_cast<acc_t>(v[1][i]);
            d2 += gi * static_cast<acc_t>(v[2][i]);
            d3 += gi * static_cast<acc_t>(v[3][i]);
            gv[0][i] += wa[0] * gi;
            gv[1][i] += wa[1] * gi;
            gv[2][i] += wa[2] * gi;
            gv[3][i] += wa[3] * gi;
          }
          const acc_t dot[4] = {d0, d1, d2, d3};
          grad_attn[s] = c.w[0] * d0 + c.w[1] * d1 + c.w[2] * d2 + c.w[3] * d3;
          location_grad(c, dot, a, H, W, grad_loc[2 * s], grad_loc[2 * s + 1]);
        }
      }
    }
  });
}

at::Tensor forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                   const at::Tensor& level_start_index, const at::Tensor& loc,
                   const at::Tensor& attn) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index, loc, attn, at::kCPU);
  at::Tensor out = at::empty({d.N, d.Lq, d.M * d.D}, value.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "msda_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    forward_kernel<scalar_t, acc_t>(
        value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
        level_start_index.const_data_ptr<int64_t>(), loc.const_data_ptr<acc_t>(),
        attn.const_data_ptr<acc_t>(), out.mutable_data_ptr<scalar_t>(), d);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& loc, const at::Tensor& attn, const at::Tensor& grad_output) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index, loc, attn, at::kCPU);
  check_grad_output(grad_output, value, d);
  at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(acc_type(value)));
  at::Tensor grad_loc = at::empty(loc.sizes(), loc.options());
  at::Tensor grad_attn = at::empty(attn.sizes(), attn.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "msda_bwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_kernel<scalar_t, acc_t>(
        value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
        level_start_index.const_data_ptr<int64_t>(), loc.const_data_ptr<acc_t>(),
        attn.const_data_ptr<acc_t>(),
        grad_output.const_data_ptr<scalar_t>(), grad_value.mutable_data_ptr<acc_t>(),
        grad_loc.mutable_data_ptr<acc_t>(), grad_attn.mutable_data_ptr<acc_t>(), d);
  });
  return {grad_value.to(value.scalar_type()), grad_loc, grad_attn};
}

}  // namespace
}  // namespace msda

TORCH_LIBRARY(mask2former_msda_cpu, m) {
  m.def(msda::kForwardSchema);
  m.def(msda::kBackwardSchema);
  m.impl("forward", c10::DispatchKey::CPU, TORCH_FN(msda::forward));
  m.impl("backward", c10::DispatchKey::CPU, TORCH_FN(msda::backward));
}
