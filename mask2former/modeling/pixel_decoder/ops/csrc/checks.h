// Argument checks and operator schemas shared by the CPU and CUDA entry points.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "bilinear.h"

namespace msda {

// The accumulation type: float64 for float64 values, float32 otherwise. Sampling locations and
// attention weights come in this type, and gradients go out in it.
inline at::ScalarType acc_type(const at::Tensor& value) {
  return value.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline Dims check_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                         const at::Tensor& level_start_index, const at::Tensor& loc,
                         const at::Tensor& attn, at::DeviceType device) {
  TORCH_CHECK(value.dim() == 4, "value must be (N, S, M, D), got ", value.sizes());
  TORCH_CHECK(loc.dim() == 6 && loc.size(5) == 2,
              "sampling_locations must be (N, Lq, M, L, P, 2), got ", loc.sizes());
  const Dims d{value.size(0), value.size(1), value.size(2), value.size(3),
               loc.size(1),   loc.size(3),   loc.size(4)};
  TORCH_CHECK(loc.size(0) == d.N && loc.size(2) == d.M, "sampling_locations ", loc.sizes(),
              " does not match value ", value.sizes());
  TORCH_CHECK(attn.sizes() == loc.sizes().slice(0, 5), "attention_weights must be ",
              loc.sizes().slice(0, 5), ", got ", attn.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(0) == d.L &&
                  spatial_shapes.size(1) == 2,
              "spatial_shapes must be (L=", d.L, ", 2), got ", spatial_shapes.sizes());
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == d.L,
              "level_start_index must be (L=", d.L, "), got ", level_start_index.sizes());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong &&
                  level_start_index.scalar_type() == at::kLong,
              "spatial_shapes and level_start_index must be int64");
  TORCH_CHECK(loc.scalar_type() == acc_type(value) && attn.scalar_type() == acc_type(value),
              "sampling_locations and attention_weights must be ", acc_type(value), " for ",
              value.scalar_type(), " values, got ", loc.scalar_type(), " and ", attn.scalar_type());
  for (const at::Tensor* t : {&value, &spatial_shapes, &level_start_index, &loc, &attn}) {
    TORCH_CHECK(t->device().type() == device && t->device() == value.device(),
                "all inputs must be on ", value.device(), ", got one on ", t->device());
    TORCH_CHECK(t->is_contiguous(), "all inputs must be contiguous");
  }
  return d;
}

inline void check_grad_output(const at::Tensor& grad_output, const at::Tensor& value,
                              const Dims& d) {
  TORCH_CHECK(grad_output.is_contiguous() && grad_output.scalar_type() == value.scalar_type() &&
                  grad_output.device() == value.device() &&
                  grad_output.numel() == d.N * d.Lq * d.M * d.D,
              "grad_output must be a contiguous (N, Lq, M*D) tensor of value's dtype and device");
}

// Both libraries register `forward` and `backward` with these schemas, each in its namespace.
constexpr const char* kForwardSchema =
    "forward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
    "Tensor sampling_locations, Tensor attention_weights) -> Tensor";
constexpr const char* kBackwardSchema =
    "backward(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
    "Tensor sampling_locations, Tensor attention_weights, Tensor grad_output) "
    "-> (Tensor, Tensor, Tensor)";

}  // namespace msda
