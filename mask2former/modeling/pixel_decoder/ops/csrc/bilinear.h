// Bilinear sampling of one point, shared by the CPU and CUDA kernels (no ATen headers, so nvcc
// compiles the CUDA kernels quickly).
//
// Convention of grid_sample(align_corners=False, padding_mode="zeros"): a normalised location
// (x, y) in [0, 1] maps to pixel coordinates (x * W - 0.5, y * H - 0.5), pixel centres sit at
// integers, and corners outside the map read zero.
#pragma once

#include <c10/macros/Macros.h>
#include <cmath>
#include <cstdint>

namespace msda {

// Sizes of one call; letters as in functional.py.
struct Dims {
  int64_t N, S, M, D, Lq, L, P;
};

// The four corners of one sample: top-left, top-right, bottom-left, bottom-right.
template <typename acc_t>
struct Corners {
  int64_t pos[4];  // h * W + w within the level, or -1 when the corner is outside the map
  acc_t w[4];      // bilinear weights
  acc_t lh, lw;    // fractional offsets from the top-left corner (for the location gradient)
};

// Fills `c` and returns true if the sample touches the map; false means it reads only zeros.
template <typename acc_t>
C10_HOST_DEVICE inline bool bilinear_corners(acc_t x, acc_t y, int64_t H, int64_t W,
                                             Corners<acc_t>& c) {
  const acc_t h_im = y * static_cast<acc_t>(H) - acc_t(0.5);
  const acc_t w_im = x * static_cast<acc_t>(W) - acc_t(0.5);
  // Written so that NaN locations fail the test.
  if (!(h_im > acc_t(-1) && w_im > acc_t(-1) && h_im < static_cast<acc_t>(H) &&
        w_im < static_cast<acc_t>(W))) {
    return false;
  }
  const acc_t h_floor = std::floor(h_im), w_floor = std::floor(w_im);
  const int64_t h0 = static_cast<int64_t>(h_floor), w0 = static_cast<int64_t>(w_floor);
  c.lh = h_im - h_floor;
  c.lw = w_im - w_floor;
  const acc_t hh = acc_t(1) - c.lh, hw = acc_t(1) - c.lw;
  const bool top = h0 >= 0, bottom = h0 + 1 < H, left = w0 >= 0, right = w0 + 1 < W;
  c.pos[0] = top && left ? h0 * W + w0 : -1;
  c.pos[1] = top && right ? h0 * W + w0 + 1 : -1;
  c.pos[2] = bottom && left ? (h0 + 1) * W + w0 : -1;
  c.pos[3] = bottom && right ? (h0 + 1) * W + w0 + 1 : -1;
  c.w[0] = hh * hw;
  c.w[1] = hh * c.lw;
  c.w[2] = c.lh * hw;
  c.w[3] = c.lh * c.lw;
  return true;
}

// Gradient of the attention-weighted sample with respect to the normalised location (x, y),
// given dot[k] = <grad_output, value at corner k> (zero for corners outside the map).
template <typename acc_t>
C10_HOST_DEVICE inline void location_grad(const Corners<acc_t>& c, const acc_t dot[4], acc_t attn,
                                          int64_t H, int64_t W, acc_t& grad_x, acc_t& grad_y) {
  const acc_t hh = acc_t(1) - c.lh, hw = acc_t(1) - c.lw;
  grad_x = attn * static_cast<acc_t>(W) * (hh * (dot[1] - dot[0]) + c.lh * (dot[3] - dot[2]));
  grad_y = attn * static_cast<acc_t>(H) * (hw * (dot[2] - dot[0]) + c.lw * (dot[3] - dot[1]));
}

}  // namespace msda
