// CUDA entry points: checks, allocation and dtype dispatch around the kernels of
// ms_deform_attn_cuda.cu, registered as torch.ops.mask2former_msda_cuda.{forward,backward}.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "checks.h"
#include "ms_deform_attn_cuda.h"

namespace msda {
namespace {

at::Tensor forward(const at::Tensor& value, const at::Tensor& spatial_shapes,
                   const at::Tensor& level_start_index, const at::Tensor& loc,
                   const at::Tensor& attn) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index, loc, attn, at::kCUDA);
  const c10::cuda::CUDAGuard guard(value.device());
  at::Tensor out = at::empty({d.N, d.Lq, d.M * d.D}, value.options());
  if (out.numel() == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "msda_fwd", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const cudaError_t err = launch_forward<scalar_t, acc_t>(
        value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
        level_start_index.const_data_ptr<int64_t>(), loc.const_data_ptr<acc_t>(),
        attn.const_data_ptr<acc_t>(), out.mutable_data_ptr<scalar_t>(), d, stream);
    C10_CUDA_CHECK(err);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& value, const at::Tensor& spatial_shapes, const at::Tensor& level_start_index,
    const at::Tensor& loc, const at::Tensor& attn, const at::Tensor& grad_output) {
  const Dims d = check_inputs(value, spatial_shapes, level_start_index, loc, attn, at::kCUDA);
  check_grad_output(grad_output, value, d);
  const c10::cuda::CUDAGuard guard(value.device());
  // grad_value accumulates in acc_t (float for half/bfloat16) via atomicAdd; the other two are
  // sums over channels that start at zero.
  at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(acc_type(value)));
  at::Tensor grad_loc = at::zeros(loc.sizes(), loc.options());
  at::Tensor grad_attn = at::zeros(attn.sizes(), attn.options());
  if (grad_output.numel() > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, value.scalar_type(), "msda_bwd", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const cudaError_t err = launch_backward<scalar_t, acc_t>(
          value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
          level_start_index.const_data_ptr<int64_t>(), loc.const_data_ptr<acc_t>(),
          attn.const_data_ptr<acc_t>(), grad_output.const_data_ptr<scalar_t>(),
          grad_value.mutable_data_ptr<acc_t>(), grad_loc.mutable_data_ptr<acc_t>(),
          grad_attn.mutable_data_ptr<acc_t>(), d, stream);
      C10_CUDA_CHECK(err);
    });
  }
  return {grad_value.to(value.scalar_type()), grad_loc, grad_attn};
}

}  // namespace
}  // namespace msda

TORCH_LIBRARY(mask2former_msda_cuda, m) {
  m.def(msda::kForwardSchema);
  m.def(msda::kBackwardSchema);
  m.impl("forward", c10::DispatchKey::CUDA, TORCH_FN(msda::forward));
  m.impl("backward", c10::DispatchKey::CUDA, TORCH_FN(msda::backward));
}
