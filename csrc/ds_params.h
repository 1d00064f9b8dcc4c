// The arguments of one scan call as the kernels see them: fp32 buffers in fixed layouts.
// Shared by the torch binding (scan_cpu.cpp) and the per-ISA kernel builds (kernel_*.cpp).
//
// Layouts (row-major; NP = state padded to a multiple of 16, R = len + kPadFront + kPadBack):
//   out, ypre, dout, du, ddelta, dz, dlam           (batch, dim, len) in the caller's token order;
//                                                   with `reverse` the scan runs last token first
//   u, delta, z, lam                                (batch, dim, len) likewise, tokens contiguous,
//                                                   any batch/dim strides (*_strides; e.g. z a
//                                                   channel half of a (b, 2d, l) projection, λ
//                                                   shared by the channels with dim stride 0)
//   delta with delta_proj                           (batch, rank, len) likewise: Δ before its bias
//                                                   is delta_proj (dim, rank) times these rows
//                                                   (Mamba's dt_proj inside the kernel)
//   A                                               (dim, NP)
//   Bt, Ct, dB, dC                                  (batch, groups, R, NP), scan position k at row
//                                                   k + kPadFront (already reversed for `reverse`),
//                                                   pad rows zero (stencils read past both ends)
//   D, delta_bias                                   (dim)
//   last_state, dlast, dA_part                      (batch, dim, NP)
//   ckpt                                            (batch, dim, n_ckpt, NP): h entering each
//                                                   ckpt_every-token chunk
//   dD_part, ddb_part                               (batch, dim)
//   slab_parts                                      (n_parts, 2, 2, R, NP): dB/dC of the
//                                                   (batch, group) slabs a part shares with its
//                                                   neighbours; slab_part_ids (n_parts, 2), −1 = unused
#pragma once
#include <stdint.h>

constexpr int64_t kPadFront = 4;
constexpr int64_t kPadBack = 2;
constexpr int64_t kCkptEvery = 32;  // tokens per checkpoint; a chunk's vectors stay in L1
constexpr int64_t kChunkSlots = 7;  // per-token vectors of the backward's recompute pass (3 + taps [+ 1 with λ])
constexpr int64_t kStateAlign = 16;

struct DsRowStrides {
  int64_t batch, dim, len;  // elements between consecutive batches / channels / tokens
};

struct DsScanParams {
  int64_t batch, dim, len, state_pad, groups, chan_per_group, n_ckpt;
  const float *u, *delta, *A, *Bt, *Ct, *D, *z, *delta_bias;  // D, z, delta_bias may be null
  const float* lam;  // null unless the method takes λ
  DsRowStrides u_strides, delta_strides, z_strides, lam_strides;
  const float* delta_proj;  // (dim, delta_rank) or null: delta is then Δ itself
  int64_t delta_rank;
  bool softplus, reverse;
  float *out, *last_state, *ckpt, *ypre;  // last_state, ckpt, ypre may be null
  const float *dout, *dlast;              // dlast may be null
  float *du, *ddelta, *dA_part, *dB, *dC, *dD_part, *dz, *ddb_part, *slab_parts;
  float* dlam;  // null unless the method takes λ
  int64_t* slab_part_ids;
};

// Floats of scratch one part needs in a build of `width` lanes: kScratchRows per-token rows, each
// padded to whole vectors (plus the stencil pads), then the chunk's per-token vectors and three
// buffers of per-token rows awaiting a sum over the state (ds_scan_kernel.h: a chunk's rows at
// width 16, every scan position's and the pads' in a narrower build, plus a vector read past).
constexpr int64_t kChunkRows = kCkptEvery + 2 * kStateAlign;  // rows of a per-chunk lane buffer
constexpr int64_t kScratchRows = 11;
inline int64_t ds_scratch_row(int64_t len) {
  return (len + kPadFront + kPadBack + kStateAlign - 1) / kStateAlign * kStateAlign + kStateAlign;
}
inline int64_t ds_group_rows(int64_t len) { return len + kPadFront + kPadBack + kStateAlign; }
inline int64_t ds_scratch_floats(int64_t len, int64_t width) {
  const int64_t rows = width == kStateAlign ? kChunkRows : ds_group_rows(len);
  return kScratchRows * ds_scratch_row(len) + (kCkptEvery * kChunkSlots + 3 * rows) * kStateAlign;
}

// The methods: ds_method_list.h, generated at build time by discbench/scan/cpu.py from the
// registry (discbench.methods) into the build folder, defines DS_METHOD_LIST(X) with one
//   X(id, "name/variant", takes_lam, Struct, kLo, kHi, weights_of_z, explicit_a_delta)
// per registry method whose math ds_methods.h has (Struct, named after the key): its id, key,
// whether its weights read a per-token λ, and the rest as DsMethod's template arguments.
#include "ds_method_list.h"

// The depthwise causal conv1d (+ SiLU) of ds_conv_kernel.h. x, dout (batch, dim, len) with any
// strides; out, dx (batch, dim, len) with out_strides; weight (dim, width); bias (dim) or null;
// dw_part (batch, dim, width), db_part (batch, dim). The *_tm kernels take the token-major case
// (channel stride 1 in x, out, dout and dx).
struct DsConvParams {
  int64_t batch, dim, len, width;
  const float *x, *weight, *bias;
  DsRowStrides x_strides, out_strides, dout_strides;
  bool silu, reverse;
  float* out;
  const float* dout;
  float *dx, *dw_part, *db_part;
};

// Floats of one zero-padded row (pad before and after, the row rounded up to whole vectors of 16).
inline int64_t ds_conv_row_floats(int64_t len, int64_t pad) {
  return pad + (len + kStateAlign - 1) / kStateAlign * kStateAlign + pad;
}
// Scratch of one part: the padded x row and the padded gradient row (pad = width − 1 + 16); in
// the token-major path the block's weights and their gradient (width vectors each) and one
// gradient vector per token.
inline int64_t ds_conv_scratch_floats(int64_t len, int64_t width) {
  const int64_t rows = 2 * ds_conv_row_floats(len, width - 1 + kStateAlign);
  const int64_t token_major = (2 * width + len) * kStateAlign;
  return rows > token_major ? rows : token_major;
}

#define DS_DECLARE_KERNELS(ns)                                                                  \
  namespace ns {                                                                                \
  void forward_part(const DsScanParams& p, int method, int64_t begin, int64_t end, float* scratch); \
  void backward_part(const DsScanParams& p, int method, int64_t part, int64_t begin, int64_t end, \
                     float* scratch);                                                           \
  void conv_forward_part(const DsConvParams& p, int64_t begin, int64_t end, float* scratch);   \
  void conv_backward_part(const DsConvParams& p, int64_t begin, int64_t end, float* scratch);  \
  void conv_forward_tm_part(const DsConvParams& p, int64_t begin, int64_t end, float* scratch); \
  void conv_backward_tm_part(const DsConvParams& p, int64_t begin, int64_t end, float* scratch); \
  }
DS_DECLARE_KERNELS(ds_avx512)
DS_DECLARE_KERNELS(ds_avx2)
DS_DECLARE_KERNELS(ds_scalar)
