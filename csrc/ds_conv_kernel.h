// The fused depthwise causal conv1d (+ SiLU) of a Mamba block, forward and backward, for one ISA
// build (see kernel_*.cpp). Work unit: one (batch, channel) row of l tokens.
//
// With offsets o_k = k − (W − 1) (causal: token t sees t − W + 1 … t) or o_k = W − 1 − k
// (`reverse`: the causal conv of the flipped row, flipped back; token t sees t … t + W − 1):
//   pre_t = bias + Σ_k w_k x_{t + o_k}  (x zero outside [0, l)),   out_t = silu(pre_t) or pre_t
// Backward (pre recomputed, g_t = dout_t · silu'(pre_t) or dout_t):
//   dx_t = Σ_k w_k g_{t − o_k},   dw_k = Σ_t g_t x_{t + o_k},   dbias = Σ_t g_t
// dw and dbias are written per row (dw_part, db_part) and summed over the batch by the caller.
// x and dout are read with any strides; out and dx are written with out_strides (the caller
// lays them out like x: channel-major rows, or token-major as Vim's projections are).
//
// Included inside the build's namespace after ds_simd.h; includes nothing.

// A row (tokens `stride` apart) copied into zero-padded scratch: pad floats before and after, so
// reads at t + o_k need no bounds checks.
static inline void ds_conv_pad_row(const float* src, int64_t stride, int64_t len, int64_t pad, float* dst) {
  for (int64_t i = 0; i < pad; ++i) dst[i] = 0.0f;
  if (stride == 1) {
    for (int64_t t = 0; t < len; t += kW) ds_store(dst + pad + t, ds_load_n(src + t, len - t));
  } else {
    for (int64_t t = 0; t < len; ++t) dst[pad + t] = src[t * stride];
  }
  for (int64_t i = pad + len; i < ds_conv_row_floats(len, pad); ++i) dst[i] = 0.0f;
}

// Stores the first n (≤ kW) lanes of v at tokens t … t + n − 1 of a row whose tokens are
// `stride` apart.
DS_FN void ds_conv_store(float* row, int64_t stride, int64_t t, vf v, int64_t n) {
  if (stride == 1) return ds_store_n(row + t, v, n);
  float lanes[kW];
  ds_store(lanes, v);
  for (int64_t i = 0; i < n && i < kW; ++i) row[(t + i) * stride] = lanes[i];
}

static inline float* ds_conv_row(float* base, const DsRowStrides& s, int64_t dim, int64_t row) {
  return base + (row / dim) * s.batch + (row % dim) * s.dim;
}

static inline int64_t ds_conv_offset(const DsConvParams& p, int64_t k) {
  return p.reverse ? p.width - 1 - k : k - (p.width - 1);
}

DS_FN vf ds_conv_pre(const DsConvParams& p, const float* xp, const float* w, float bias, int64_t t) {
  vf acc = ds_fill<vf>(bias);
  for (int64_t k = 0; k < p.width; ++k) acc += w[k] * ds_load(xp + t + ds_conv_offset(p, k));
  return acc;
}

void conv_forward_part(const DsConvParams& p, int64_t begin, int64_t end, float* scratch) {
  const int64_t L = p.len, pad = p.width - 1 + kW;
  float* xp = scratch + pad;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t bi = row / p.dim, di = row % p.dim;
    ds_conv_pad_row(p.x + bi * p.x_strides.batch + di * p.x_strides.dim, p.x_strides.len, L, pad, scratch);
    const float* w = p.weight + di * p.width;
    const float bias = p.bias ? p.bias[di] : 0.0f;
    float* out = ds_conv_row(p.out, p.out_strides, p.dim, row);
    for (int64_t t = 0; t < L; t += kW) {
      const vf pre = ds_conv_pre(p, xp, w, bias, t);
      ds_conv_store(out, p.out_strides.len, t, p.silu ? ds_silu(pre) : pre, L - t);
    }
  }
}

void conv_backward_part(const DsConvParams& p, int64_t begin, int64_t end, float* scratch) {
  const int64_t L = p.len, pad = p.width - 1 + kW;
  float* xp = scratch + pad;
  float* gp = scratch + ds_conv_row_floats(L, pad) + pad;
  for (int64_t row = begin; row < end; ++row) {
    const int64_t bi = row / p.dim, di = row % p.dim;
    ds_conv_pad_row(p.x + bi * p.x_strides.batch + di * p.x_strides.dim, p.x_strides.len, L, pad, scratch);
    const float* w = p.weight + di * p.width;
    const float bias = p.bias ? p.bias[di] : 0.0f;
    // dout's row in gp first (gathered when its tokens are strided), zero past the end.
    ds_conv_pad_row(ds_conv_row(const_cast<float*>(p.dout), p.dout_strides, p.dim, row), p.dout_strides.len, L,
                    pad, gp - pad);
    vf db = ds_fill<vf>(0.0f);
    for (int64_t t = 0; t < L; t += kW) {
      const vf d = ds_load(gp + t);  // zero past the end, so g is too
      vf g = d;
      if (p.silu) {
        const vf pre = ds_conv_pre(p, xp, w, bias, t);
        const vf s = ds_sigmoid(pre);
        g = d * (s * (1.0f + pre * (1.0f - s)));
      }
      ds_store(gp + t, g);
      db += g;
    }
    const int64_t tail = (L + kW - 1) / kW * kW;
    for (int64_t i = tail; i < tail + pad; ++i) gp[i] = 0.0f;
    float* dx = ds_conv_row(p.dx, p.out_strides, p.dim, row);
    for (int64_t t = 0; t < L; t += kW) {
      vf acc = ds_fill<vf>(0.0f);
      for (int64_t k = 0; k < p.width; ++k) acc += w[k] * ds_load(gp + t - ds_conv_offset(p, k));
      ds_conv_store(dx, p.out_strides.len, t, acc, L - t);
    }
    float* dw = p.dw_part + row * p.width;
    for (int64_t k = 0; k < p.width; ++k) {
      vf acc = ds_fill<vf>(0.0f);
      const float* xs = xp + ds_conv_offset(p, k);
      for (int64_t t = 0; t < L; t += kW) acc += ds_load(gp + t) * ds_load(xs + t);
      dw[k] = ds_hsum(acc);
    }
    p.db_part[row] = ds_hsum(db);
  }
}
