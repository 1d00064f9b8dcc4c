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
    DsTokenAcc db = {};  // sums over tokens in ds_simd.h's fixed order
    for (int64_t t = 0; t < L; t += kW) {
      const vf d = ds_load(gp + t);  // zero past the end, so g is too
      vf g = d;
      if (p.silu) {
        const vf pre = ds_conv_pre(p, xp, w, bias, t);
        const vf s = ds_sigmoid(pre);
        g = d * (s * (1.0f + pre * (1.0f - s)));
      }
      ds_store(gp + t, g);
      ds_token_add(db, t, g);
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
      DsTokenAcc acc = {};
      const float* xs = xp + ds_conv_offset(p, k);
      for (int64_t t = 0; t < L; t += kW) ds_token_add(acc, t, ds_load(gp + t) * ds_load(xs + t));
      dw[k] = ds_token_total(acc);
    }
    p.db_part[row] = ds_token_total(db);
  }
}

// Token-major layout (x, out, dout, dx all with channel stride 1, as Vim's (b, l, 2d)
// projection lays them out): vectorised over channels instead of tokens. Work unit: one batch
// element and one block of kStateAlign (16) channels, unit = batch · blocks + block (the same
// units in every ISA build), over all tokens, one vector of kW channels at a time.
struct DsConvBlock {
  int64_t bi, c0, n;  // batch element, first channel, channels in the block
};

static inline DsConvBlock ds_conv_block(const DsConvParams& p, int64_t unit) {
  const int64_t blocks = (p.dim + kStateAlign - 1) / kStateAlign;
  const int64_t c0 = (unit % blocks) * kStateAlign;
  return DsConvBlock{unit / blocks, c0, ds_min(kStateAlign, p.dim - c0)};
}

// Runs body(vector block) over the unit's channels, kW at a time.
template <class F>
DS_FN void ds_conv_vectors(const DsConvParams& p, int64_t unit, const F& body) {
  const DsConvBlock big = ds_conv_block(p, unit);
  for (int64_t v0 = 0; v0 < big.n; v0 += kW) body(DsConvBlock{big.bi, big.c0 + v0, ds_min(kW, big.n - v0)});
}

// The block's weights as lanes, wv[k] (k < width), and its bias.
static inline void ds_conv_block_weights(const DsConvParams& p, const DsConvBlock& blk, float* wv, vf& bias) {
  for (int64_t k = 0; k < p.width; ++k)
    for (int64_t i = 0; i < kW; ++i) wv[k * kW + i] = i < blk.n ? p.weight[(blk.c0 + i) * p.width + k] : 0.0f;
  bias = p.bias ? ds_load_n(p.bias + blk.c0, blk.n) : ds_fill<vf>(0.0f);
}

DS_FN const float* ds_conv_tm(const float* base, const DsRowStrides& s, const DsConvBlock& blk, int64_t t) {
  return base + blk.bi * s.batch + t * s.len + blk.c0;
}

DS_FN vf ds_conv_pre_tm(const DsConvParams& p, const DsConvBlock& blk, const float* wv, vf bias, int64_t t) {
  vf acc = bias;
  for (int64_t k = 0; k < p.width; ++k) {
    const int64_t tt = t + ds_conv_offset(p, k);
    if (tt >= 0 && tt < p.len) acc += ds_load(wv + k * kW) * ds_load_n(ds_conv_tm(p.x, p.x_strides, blk, tt), blk.n);
  }
  return acc;
}

void conv_forward_tm_part(const DsConvParams& p, int64_t begin, int64_t end, float* scratch) {
  float* wv = scratch;
  for (int64_t unit = begin; unit < end; ++unit) ds_conv_vectors(p, unit, [&](const DsConvBlock& blk) {
    vf bias;
    ds_conv_block_weights(p, blk, wv, bias);
    for (int64_t t = 0; t < p.len; ++t) {
      const vf pre = ds_conv_pre_tm(p, blk, wv, bias, t);
      ds_store_n(const_cast<float*>(ds_conv_tm(p.out, p.out_strides, blk, t)), p.silu ? ds_silu(pre) : pre, blk.n);
    }
  });
}

void conv_backward_tm_part(const DsConvParams& p, int64_t begin, int64_t end, float* scratch) {
  float* wv = scratch;
  float* dwv = wv + p.width * kW;
  float* g = dwv + p.width * kW;  // [len · kW] dL/dpre per token
  for (int64_t unit = begin; unit < end; ++unit) ds_conv_vectors(p, unit, [&](const DsConvBlock& blk) {
    vf bias;
    ds_conv_block_weights(p, blk, wv, bias);
    for (int64_t k = 0; k < p.width; ++k) ds_store(dwv + k * kW, ds_fill<vf>(0.0f));
    vf db = ds_fill<vf>(0.0f);
    for (int64_t t = 0; t < p.len; ++t) {
      vf gt = ds_load_n(ds_conv_tm(p.dout, p.dout_strides, blk, t), blk.n);
      if (p.silu) {
        const vf pre = ds_conv_pre_tm(p, blk, wv, bias, t);
        const vf s = ds_sigmoid(pre);
        gt = gt * (s * (1.0f + pre * (1.0f - s)));
      }
      ds_store(g + t * kW, gt);
      db += gt;
      for (int64_t k = 0; k < p.width; ++k) {
        const int64_t tt = t + ds_conv_offset(p, k);
        if (tt >= 0 && tt < p.len)
          ds_store(dwv + k * kW, ds_load(dwv + k * kW) + gt * ds_load_n(ds_conv_tm(p.x, p.x_strides, blk, tt), blk.n));
      }
    }
    for (int64_t t = 0; t < p.len; ++t) {
      vf acc = ds_fill<vf>(0.0f);
      for (int64_t k = 0; k < p.width; ++k) {
        const int64_t tt = t - ds_conv_offset(p, k);
        if (tt >= 0 && tt < p.len) acc += ds_load(wv + k * kW) * ds_load(g + tt * kW);
      }
      ds_store_n(const_cast<float*>(ds_conv_tm(p.dx, p.out_strides, blk, t)), acc, blk.n);
    }
    float lanes[kW];
    ds_store(lanes, db);
    for (int64_t i = 0; i < blk.n; ++i) p.db_part[blk.bi * p.dim + blk.c0 + i] = lanes[i];
    for (int64_t k = 0; k < p.width; ++k)
      for (int64_t i = 0; i < blk.n; ++i)
        p.dw_part[(blk.bi * p.dim + blk.c0 + i) * p.width + k] = dwv[k * kW + i];
  });
}
