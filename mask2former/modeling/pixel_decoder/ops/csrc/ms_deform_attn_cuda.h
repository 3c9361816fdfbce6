// Kernel launchers of ms_deform_attn_cuda.cu, instantiated for (float, float), (double, double),
// (c10::Half, float) and (c10::BFloat16, float). They return cudaGetLastError() after the launch.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "bilinear.h"

namespace msda {

template <typename scalar_t, typename acc_t>
cudaError_t launch_forward(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                           const acc_t* loc, const acc_t* attn, scalar_t* out, const Dims& d,
                           cudaStream_t stream);

template <typename scalar_t, typename acc_t>
cudaError_t launch_backward(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                            const acc_t* loc, const acc_t* attn, const scalar_t* grad_out,
                            acc_t* grad_value, acc_t* grad_loc, acc_t* grad_attn, const Dims& d,
                            cudaStream_t stream);

}  // namespace msda
