// The fused selective scan, forward and backward, for one ISA build (see kernel_*.cpp).
//
// Work unit: one (batch, channel) pair. Per pair, the state is walked in lane-wide blocks of n
// (outer) and tokens (inner), so the state h, the stencil's drive samples v_{k+j} and the
// adjoints stay in registers; nothing of size (b, d, l, n) is ever stored.
//
// Forward per token k and state block:  z = aΔ_k;  Ā, w_j = method(z) (and λ_k if it takes one);
//   h = Ā h + Δ_k Σ_j w_j v_{k+j};   y_k += Σ_n C_k h        (v_m = B_m u_m, zero outside [0, L))
// and h is checkpointed every kCkptEvery tokens when a backward will follow.
//
// Backward: per chunk of kCkptEvery tokens, last chunk first. A recompute pass runs the forward
// from the chunk's checkpoint, evaluating the method's derivatives once, and leaves per token
// everything the adjoint needs that does not depend on the adjoint (with S = Σ_j w_j v_{k+j},
// S_z, S_a, S_Δ the same sums over ∂w_j/∂z, ∂w_j/∂a, ∂w_j/∂Δ, and ĥ = h_{k−1} dĀ/dz):
//   Ā_k,  q1 = Δ (Δ S_z + S_a + ĥ),  q2 = S + Δ (a S_z + S_Δ) + a ĥ,  w_j
// (and dC_k += dy_k h_k, which needs no adjoint either), so that the reverse pass is only
//   g_k = C_k dy_k + Ā_{k+1} g_{k+1}  (adjoint of h_k),
//   dA += g_k q1,   dΔ_k = Σ_n g_k q2,   dv_{k+j} += g_k Δ_k w_j
// (and for a method with a per-token λ, dλ_k = Σ_n g_k Δ_k S_λ, S_λ = Σ_j ∂w_j/∂λ v_{k+j}).
// dv_m is complete once token m − kHi is done; it is then turned into dB_m += dv_m u_m and
// du_m += Σ_n dv_m B_m. Per-token lane sums over n are batched through ds_add_group_sums.
//
// Every build gives the same bits (see ds_simd.h): lanes are independent, each sum over n or over
// tokens runs in one fixed order (a build narrower than a group of 16 states keeps each state
// block's per-token vectors for the whole row until the group's last block adds them up), and the
// series-or-closed-form choice of a token is made for the channel's whole state (|Δ| max|a| < 1
// over every state), not per vector.
//
// Included inside the build's namespace after ds_simd.h and ds_methods.h; includes nothing.

static inline int64_t ds_min(int64_t a, int64_t b) { return a < b ? a : b; }

// Per-token vectors awaiting a sum over the state are kept in rows of kGroup floats, a state
// block of kW lanes at offset c mod kGroup. At width kGroup a group is one block, so a chunk's
// rows (row k − t0) are summed as soon as they are written; a narrower build keeps rows for the
// whole sequence (row k + kPadFront) until the group's last block has written them.
static_assert(kGroup == kStateAlign, "a group is the state's padding unit");
constexpr bool kWholeGroup = kW == kGroup;
DS_FN float* ds_group_row(float* rows, int64_t k, int64_t t0) {
  return rows + (kWholeGroup ? k - t0 : k + kPadFront) * kGroup;
}

// The largest |a| of the channel's padded state (nan if any is nan): |Δ| amax < 1 promises
// |z| < 1 in every lane of every state block.
static inline float ds_channel_amax(const DsScanParams& p, int64_t di) {
  float amax = 0.0f;
  for (int64_t i = 0; i < p.state_pad; ++i) {
    const float x = __builtin_fabsf(p.A[di * p.state_pad + i]);
    amax = x > amax || x != x ? x : amax;
  }
  return amax;
}

// Token-indexed inputs and outputs of a pair (u, delta, z, out, ypre, dout, du, ddelta, dz) are
// in the caller's token order; with p.reverse the scan runs from the last token to the first, so
// scan position k is token L − 1 − k. These read / write scan positions k .. k + n − 1.
constexpr int64_t kPrefetchAhead = 64;  // floats (4 cache lines) below the block being read
DS_FN vf ds_load_tok(const DsScanParams& p, const float* base, int64_t k, int64_t n) {
  if (!p.reverse) return ds_load_n(base + k, n);
  const int64_t first = p.len - k - n;  // the block's lowest token
  // A row read back to front defeats the hardware prefetcher, which follows ascending
  // addresses; fetch the lines ahead by hand so the reverse scan does not wait on memory.
  __builtin_prefetch(base + first - kPrefetchAhead);
  if (n == kW) return ds_reverse(ds_load(base + first));
  float t[kW] = {};
  for (int64_t i = 0; i < n; ++i) t[i] = base[p.len - 1 - k - i];
  return ds_load(t);
}
DS_FN void ds_store_tok(const DsScanParams& p, float* base, int64_t k, vf v, int64_t n) {
  if (!p.reverse) return ds_store_n(base + k, v, n);
  __builtin_prefetch(base + p.len - k - n - kPrefetchAhead, 1);
  if (n == kW) return ds_store(base + p.len - k - n, ds_reverse(v));
  float t[kW];
  ds_store(t, v);
  for (int64_t i = 0; i < n; ++i) base[p.len - 1 - k - i] = t[i];
}

// Per-pair scratch, each array padded to whole vectors: Δ after bias and softplus, u zero-padded
// so that stencil reads past either end need no bounds checks, and the per-token sums.
struct PairScratch {
  float* dt;   // [len]
  float* ub;   // [len] with kPadFront before and kPadBack after, zero
  float* y;    // [len]
  float* dy;   // [len]        dL/dy before the gate
  float* sg;   // [len]        σ(z), the gate's sigmoid
  float* dtg;  // [len]        dL/dΔ (after the activation)
  float* dub;  // [len] padded dL/du through the drive
  float* lam;  // [len]        λ (methods that take one)
  float* dlg;  // [len]        dL/dλ
  float* pre;   // [len]        Δ + bias before the softplus (the backward's softplus')
  float* tok;   // [len]        Δ before its bias in token order (formed with delta_proj)
  float* chunk;                 // [kCkptEvery * kChunkSlots * kW] the recompute pass's per-token vectors
  float* rows1, *rows2, *rows3;  // per-token rows awaiting ds_add_group_sums (ds_group_row)
};

static PairScratch ds_scratch(const DsScanParams& p, float* s) {
  const int64_t stride = ds_scratch_row(p.len);
  PairScratch ps;
  ps.dt = s;
  ps.ub = s + stride + kPadFront;
  ps.y = s + 2 * stride;
  ps.dy = s + 3 * stride;
  ps.sg = s + 4 * stride;
  ps.dtg = s + 5 * stride;
  ps.dub = s + 6 * stride + kPadFront;
  ps.lam = s + 7 * stride;
  ps.dlg = s + 8 * stride;
  ps.pre = s + 9 * stride;
  ps.tok = s + 10 * stride;
  ps.chunk = s + kScratchRows * stride;
  const int64_t rows = kWholeGroup ? kChunkRows : ds_group_rows(p.len);
  ps.rows1 = ps.chunk + kCkptEvery * kChunkSlots * kStateAlign;
  ps.rows2 = ps.rows1 + rows * kStateAlign;
  ps.rows3 = ps.rows2 + rows * kStateAlign;
  return ps;
}

// The pair's (batch, group) slab of a packed B or C (see ds_params.h), at scan position 0.
static inline const float* ds_slab_rows(const DsScanParams& p, const float* packed, int64_t pair) {
  const int64_t slab = pair / p.chan_per_group;
  return packed + (slab * (p.len + kPadFront + kPadBack) + kPadFront) * p.state_pad;
}

// The pair's row of a token-indexed input (tokens contiguous: the binding guarantees it).
static inline const float* ds_in_row(const DsScanParams& p, const float* base, const DsRowStrides& s,
                                     int64_t pair) {
  return base + (pair / p.dim) * s.batch + (pair % p.dim) * s.dim;
}

// The pair's Δ row before its bias, in token order: the input row itself, or with delta_proj the
// pair's row of delta_proj times the batch element's `rank` rows, summed into `tok` chunk by
// chunk and one input row at a time: every read runs forward through memory whichever way the
// scan goes, so the hardware prefetcher (which follows ascending addresses) serves the reverse
// scan as well as the forward one.
constexpr int64_t kDeltaChunk = 256;  // tokens per chunk: the chunk of `tok` stays in L1
static const float* ds_delta_row(const DsScanParams& p, int64_t pair, float* tok) {
  if (!p.delta_proj) return ds_in_row(p, p.delta, p.delta_strides, pair);
  const float* w = p.delta_proj + (pair % p.dim) * p.delta_rank;
  const float* rows = p.delta + (pair / p.dim) * p.delta_strides.batch;
  const int64_t L = p.len;
  for (int64_t c0 = 0; c0 < L; c0 += kDeltaChunk) {
    const int64_t c1 = ds_min(c0 + kDeltaChunk, L);
    for (int64_t t = c0; t < c1; t += kW) ds_store(tok + t, w[0] * ds_load_n(rows + t, ds_min(kW, c1 - t)));
    for (int64_t r = 1; r < p.delta_rank; ++r) {
      const float* row = rows + r * p.delta_strides.dim;
      for (int64_t t = c0; t < c1; t += kW)
        ds_store(tok + t, ds_load(tok + t) + w[r] * ds_load_n(row + t, ds_min(kW, c1 - t)));
    }
  }
  return tok;
}

static void ds_prepare_pair(const DsScanParams& p, int64_t pair, const PairScratch& ps) {
  const int64_t L = p.len, di = pair % p.dim;
  const float* u = ds_in_row(p, p.u, p.u_strides, pair);
  const float* lam = p.lam ? ds_in_row(p, p.lam, p.lam_strides, pair) : nullptr;
  const float* delta = ds_delta_row(p, pair, ps.tok);
  const float bias = p.delta_bias ? p.delta_bias[di] : 0.0f;
  for (int64_t k = -kPadFront; k < 0; ++k) ps.ub[k] = 0.0f;
  for (int64_t k = L; k < L + kPadBack; ++k) ps.ub[k] = 0.0f;
  for (int64_t k = 0; k < L; k += kW) {
    const int64_t n = ds_min(kW, L - k);
    ds_store_n(ps.ub + k, ds_load_tok(p, u, k, n), n);
    const vf x = ds_load_tok(p, delta, k, n) + bias;
    ds_store(ps.pre + k, x);
    ds_store(ps.dt + k, p.softplus ? ds_softplus(x) : x);
    if (lam) ds_store(ps.lam + k, ds_load_tok(p, lam, k, n));
  }
}

template <class M>
static void ds_forward_pair(const DsScanParams& p, int64_t pair, const PairScratch& ps) {
  constexpr int kLo = M::kLo, kHi = M::kHi, kTaps = kHi - kLo + 1;
  const int64_t L = p.len, NP = p.state_pad, di = pair % p.dim;
  const float* __restrict Bs = ds_slab_rows(p, p.Bt, pair);
  const float* __restrict Cs = ds_slab_rows(p, p.Ct, pair);
  ds_prepare_pair(p, pair, ps);
  const float* __restrict dt = ps.dt;
  const float* __restrict ub = ps.ub;
  float* __restrict y = ps.y;
  float* __restrict rows1 = ps.rows1;
  for (int64_t k = 0; k < L; k += kW) ds_store(y + k, ds_fill<vf>(0.0f));

  const float amax = ds_channel_amax(p, di);
  for (int64_t c = 0; c < NP; c += kW) {
    const vf a = ds_load(p.A + di * NP + c);
    const int64_t lane0 = c % kGroup;
    const bool group_done = lane0 + kW == kGroup;
    vf h = ds_fill<vf>(0.0f);
    vf v[kTaps];  // v[j − kLo] = v_{k+j}
#pragma GCC unroll 4
    for (int j = kLo; j <= kHi; ++j) v[j - kLo] = ds_load(Bs + j * NP + c) * ub[j];
    for (int64_t t0 = 0, t = 0; t0 < L; t0 += kCkptEvery, ++t) {
      if (p.ckpt) ds_store(p.ckpt + ((pair * p.n_ckpt + t) * NP + c), h);
      const int64_t t1 = ds_min(t0 + kCkptEvery, L);
      for (int64_t k = t0; k < t1; ++k) {
        const vf dtv = ds_fill<vf>(dt[k]);
        const vf lamv = ds_fill<vf>(M::kTakesLam ? ps.lam[k] : 0.0f);
        vf abar, w[kTaps];
        if (__builtin_fabsf(dt[k]) * amax < 1.0f)
          M::template weights<true>(a * dt[k], a, dtv, lamv, abar, w);
        else
          M::template weights<false>(a * dt[k], a, dtv, lamv, abar, w);
        vf x = w[0] * v[0];
#pragma GCC unroll 4
        for (int j = 1; j < kTaps; ++j) x = ds_fma(w[j], v[j], x);
        h = ds_fma(abar, h, dt[k] * x);
        ds_store(ds_group_row(rows1, k, t0) + lane0, ds_load(Cs + k * NP + c) * h);
#pragma GCC unroll 4
        for (int j = 0; j + 1 < kTaps; ++j) v[j] = v[j + 1];
        v[kTaps - 1] = ds_load(Bs + (k + 1 + kHi) * NP + c) * ub[k + 1 + kHi];
      }
      if (group_done) ds_add_group_sums(ds_group_row(rows1, t0, t0), t1 - t0, y + t0);
    }
    if (p.last_state) ds_store(p.last_state + pair * NP + c, h);
  }

  const float D = p.D ? p.D[di] : 0.0f;
  float* out = p.out + pair * L;
  const float* zg = p.z ? ds_in_row(p, p.z, p.z_strides, pair) : nullptr;
  float* ypre = p.ypre ? p.ypre + pair * L : nullptr;
  for (int64_t k = 0; k < L; k += kW) {
    const int64_t n = ds_min(kW, L - k);
    const vf yk = ds_load(y + k) + D * ds_load(ub + k);
    if (ypre) ds_store_tok(p, ypre, k, yk, n);
    ds_store_tok(p, out, k, zg ? yk * ds_silu(ds_load_tok(p, zg, k, n)) : yk, n);
  }
}

template <class M>
static void ds_backward_pair(const DsScanParams& p, int64_t pair, const PairScratch& ps,
                             float* dBs, float* dCs /* slab accumulators at token 0 */) {
  constexpr int kLo = M::kLo, kHi = M::kHi, kTaps = kHi - kLo + 1;
  constexpr int kLamSlot = 3 + kTaps;  // the chunk slot of Δ S_λ
  static_assert(kLamSlot + (M::kTakesLam ? 1 : 0) <= kChunkSlots, "too few chunk slots");
  const int64_t L = p.len, NP = p.state_pad, di = pair % p.dim;
  const float* __restrict Bs = ds_slab_rows(p, p.Bt, pair);
  const float* __restrict Cs = ds_slab_rows(p, p.Ct, pair);
  ds_prepare_pair(p, pair, ps);
  const float* __restrict dt = ps.dt;
  const float* __restrict ub = ps.ub;
  float* __restrict dy = ps.dy;
  float* __restrict sg = ps.sg;
  float* __restrict dtg = ps.dtg;
  float* __restrict dub = ps.dub;
  float* __restrict chunk = ps.chunk;
  float* __restrict rows1 = ps.rows1;
  float* __restrict rows2 = ps.rows2;
  float* __restrict rows3 = ps.rows3;
  float* __restrict dlg = ps.dlg;
  const float* dout = p.dout + pair * L;
  const float* zg = p.z ? ds_in_row(p, p.z, p.z_strides, pair) : nullptr;
  for (int64_t k = 0; k < L; k += kW) {
    const int64_t n = ds_min(kW, L - k);
    const vf d = ds_load_tok(p, dout, k, n);  // zero past the end, so dy is too
    if (zg) {
      const vf zk = ds_load_tok(p, zg, k, n);
      const vf s = ds_sigmoid(zk);
      ds_store(sg + k, s);
      ds_store(dy + k, d * (zk * s));
    } else {
      ds_store(dy + k, d);
    }
    ds_store(dtg + k, ds_fill<vf>(0.0f));
    if constexpr (M::kTakesLam) ds_store(dlg + k, ds_fill<vf>(0.0f));
  }
  for (int64_t k = -kPadFront; k < L + kPadBack; ++k) dub[k] = 0.0f;

  const float amax = ds_channel_amax(p, di);
  for (int64_t c = 0; c < NP; c += kW) {
    const vf a = ds_load(p.A + di * NP + c);
    const int64_t lane0 = c % kGroup;
    const bool group_done = lane0 + kW == kGroup;
    vf dA_acc = ds_fill<vf>(0.0f);
    // The adjoint g_k = C_k dy_k + Ā_{k+1} g_{k+1}: one FMA per token on the dependency chain.
    vf g = p.dlast ? ds_load(p.dlast + pair * NP + c) : ds_fill<vf>(0.0f);
    vf abar_next = ds_fill<vf>(1.0f);
    vf dv[kTaps];  // dv[j − kLo] = dL/dv_{k+j} so far
#pragma GCC unroll 4
    for (int j = 0; j < kTaps; ++j) dv[j] = ds_fill<vf>(0.0f);
    for (int64_t t = p.n_ckpt - 1; t >= 0; --t) {
      const int64_t t0 = t * kCkptEvery, t1 = ds_min(t0 + kCkptEvery, L);
      // Recompute pass: the chunk's states and the adjoint-independent per-token vectors.
      vf h = ds_load(p.ckpt + ((pair * p.n_ckpt + t) * NP + c));
      vf v[kTaps];  // v[j − kLo] = v_{k+j}
#pragma GCC unroll 4
      for (int j = kLo; j <= kHi; ++j) v[j - kLo] = ds_load(Bs + (t0 + j) * NP + c) * ub[t0 + j];
      for (int64_t k = t0; k < t1; ++k) {
        const vf dtv = ds_fill<vf>(dt[k]);
        const vf lamv = ds_fill<vf>(M::kTakesLam ? ps.lam[k] : 0.0f);
        vf abar, dabar, w[kTaps], wz[kTaps], wa[kTaps], wd[kTaps], wl[kTaps];
        if (__builtin_fabsf(dt[k]) * amax < 1.0f)
          M::template grads<true>(a * dt[k], a, dtv, lamv, abar, dabar, w, wz, wa, wd, wl);
        else
          M::template grads<false>(a * dt[k], a, dtv, lamv, abar, dabar, w, wz, wa, wd, wl);
        vf S = w[0] * v[0];
#pragma GCC unroll 4
        for (int j = 1; j < kTaps; ++j) S = ds_fma(w[j], v[j], S);
        const vf hd = h * dabar;
        // q1 = Δ S_z + S_a + ĥ and the factor of dΔ_k = Σ_n g_k (S + Δ q2 + a ĥ), term by term
        vf q1 = hd, ddt_factor = S + a * hd;
        if constexpr (M::kWeightsOfZ) {
          vf Sz = wz[0] * v[0];
#pragma GCC unroll 4
          for (int j = 1; j < kTaps; ++j) Sz = ds_fma(wz[j], v[j], Sz);
          q1 += dtv * Sz;
          ddt_factor += dtv * (a * Sz);
        }
        if constexpr (M::kExplicitAD) {
          vf Sa = wa[0] * v[0], Sd = wd[0] * v[0];
#pragma GCC unroll 4
          for (int j = 1; j < kTaps; ++j) {
            Sa = ds_fma(wa[j], v[j], Sa);
            Sd = ds_fma(wd[j], v[j], Sd);
          }
          q1 += Sa;
          ddt_factor += dtv * Sd;
        }
        h = ds_fma(abar, h, dt[k] * S);
        ds_store(dCs + k * NP + c, ds_load(dCs + k * NP + c) + dy[k] * h);
        float* slot = chunk + (k - t0) * kChunkSlots * kW;
        ds_store(slot, abar);
        ds_store(slot + kW, dt[k] * q1);
        ds_store(slot + 2 * kW, ddt_factor);
#pragma GCC unroll 4
        for (int j = 0; j < kTaps; ++j) ds_store(slot + (3 + j) * kW, w[j]);
        if constexpr (M::kTakesLam) {
          vf Sl = wl[0] * v[0];
#pragma GCC unroll 4
          for (int j = 1; j < kTaps; ++j) Sl = ds_fma(wl[j], v[j], Sl);
          ds_store(slot + kLamSlot * kW, dt[k] * Sl);
        }
#pragma GCC unroll 4
        for (int j = 0; j + 1 < kTaps; ++j) v[j] = v[j + 1];
        v[kTaps - 1] = ds_load(Bs + (k + 1 + kHi) * NP + c) * ub[k + 1 + kHi];
      }
      // Reverse pass.
      for (int64_t k = t1 - 1; k >= t0; --k) {
        const float* slot = chunk + (k - t0) * kChunkSlots * kW;
        g = ds_fma(abar_next, g, ds_load(Cs + k * NP + c) * dy[k]);
        abar_next = ds_load(slot);
        dA_acc = ds_fma(g, ds_load(slot + kW), dA_acc);
        ds_store(ds_group_row(rows1, k, t0) + lane0, g * ds_load(slot + 2 * kW));
        if constexpr (M::kTakesLam) ds_store(ds_group_row(rows3, k, t0) + lane0, g * ds_load(slot + kLamSlot * kW));
        const vf gdt = g * dt[k];
#pragma GCC unroll 4
        for (int j = 0; j < kTaps; ++j) dv[j] = ds_fma(gdt, ds_load(slot + (3 + j) * kW), dv[j]);
        // dv_{k+kHi} is complete: no earlier token reaches that far.
        const int64_t m = k + kHi;
        ds_store(dBs + m * NP + c, ds_load(dBs + m * NP + c) + dv[kTaps - 1] * ub[m]);
        ds_store(ds_group_row(rows2, m, t0) + lane0, dv[kTaps - 1] * ds_load(Bs + m * NP + c));
#pragma GCC unroll 4
        for (int j = kTaps - 1; j > 0; --j) dv[j] = dv[j - 1];
        dv[0] = ds_fill<vf>(0.0f);
      }
      if (group_done) {
        ds_add_group_sums(ds_group_row(rows1, t0, t0), t1 - t0, dtg + t0);
        if constexpr (M::kTakesLam) ds_add_group_sums(ds_group_row(rows3, t0, t0), t1 - t0, dlg + t0);
        ds_add_group_sums(ds_group_row(rows2, t0 + kHi, t0), t1 - t0, dub + t0 + kHi);
      }
    }
    // Tokens kLo .. kHi − 1 still hold contributions (dv[j − kLo] is now dv_{j−1}); their rows
    // go where scan position kLo's would (at width kGroup, after the chunk rows just summed).
#pragma GCC unroll 4
    for (int j = kLo + 1; j <= kHi; ++j) {
      const int64_t m = j - 1;
      ds_store(dBs + m * NP + c, ds_load(dBs + m * NP + c) + dv[j - kLo] * ub[m]);
      ds_store(ds_group_row(rows2, m, kLo) + lane0, dv[j - kLo] * ds_load(Bs + m * NP + c));
    }
    if (group_done && kHi > kLo) ds_add_group_sums(ds_group_row(rows2, kLo, kLo), kHi - kLo, dub + kLo);
    ds_store(p.dA_part + pair * NP + c, dA_acc);
  }

  const float D = p.D ? p.D[di] : 0.0f;
  const float* ypre = p.ypre ? p.ypre + pair * L : nullptr;
  float* du = p.du + pair * L;
  float* ddelta = p.ddelta + pair * L;
  float* dz = p.dz ? p.dz + pair * L : nullptr;
  float* dlam = M::kTakesLam ? p.dlam + pair * L : nullptr;
  DsTokenAcc dD = {}, ddb = {};
  for (int64_t k = 0; k < L; k += kW) {
    const int64_t n = ds_min(kW, L - k);
    const vf dyk = ds_load(dy + k);  // zero past the end, so the sums below are exact
    ds_token_add(dD, k, dyk * ds_load(ub + k));
    ds_store_tok(p, du, k, ds_load(dub + k) + dyk * D, n);
    vf draw = ds_load_n(dtg + k, n);
    // softplus'(x) = σ(x) = 1 − e^{−softplus(x)}, from the Δ already at hand
    if (p.softplus) draw *= ds_sigmoid_from_softplus(ds_load(ps.pre + k), ds_load(dt + k));
    ds_store_tok(p, ddelta, k, draw, n);
    ds_token_add(ddb, k, draw);
    if constexpr (M::kTakesLam) ds_store_tok(p, dlam, k, ds_load_n(dlg + k, n), n);
    if (dz) {
      const vf zk = ds_load_tok(p, zg, k, n), s = ds_load(sg + k);
      const vf silu_grad = s * (1.0f + zk * (1.0f - s));
      ds_store_tok(p, dz, k, ds_load_tok(p, dout, k, n) * ds_load_tok(p, ypre, k, n) * silu_grad, n);
    }
  }
  p.dD_part[pair] = ds_token_total(dD);
  p.ddb_part[pair] = ds_token_total(ddb);
}

template <class M>
static void ds_forward_part(const DsScanParams& p, int64_t begin, int64_t end, float* scratch) {
  const PairScratch ps = ds_scratch(p, scratch);
  for (int64_t pair = begin; pair < end; ++pair) ds_forward_pair<M>(p, pair, ps);
}

// A part is a contiguous range of pairs. The pairs of one (batch, group) slab are contiguous,
// so only a part's first and last slab can be shared with another part: their dB/dC go to the
// part's own slots (summed afterwards in part order, hence deterministic); every other slab is
// owned and accumulated in place.
template <class M>
static void ds_backward_part(const DsScanParams& p, int64_t part, int64_t begin, int64_t end,
                             float* scratch) {
  const PairScratch ps = ds_scratch(p, scratch);
  const int64_t cpg = p.chan_per_group;
  const int64_t slab_floats = (p.len + kPadFront + kPadBack) * p.state_pad;
  int64_t current = -1;
  float *dBs = nullptr, *dCs = nullptr;
  for (int64_t pair = begin; pair < end; ++pair) {
    const int64_t slab = pair / cpg;
    if (slab != current) {
      current = slab;
      if (slab * cpg >= begin && (slab + 1) * cpg <= end) {
        dBs = p.dB + slab * slab_floats;
        dCs = p.dC + slab * slab_floats;
      } else {
        const int64_t slot = slab == begin / cpg ? 0 : 1;
        dBs = p.slab_parts + (part * 2 + slot) * 2 * slab_floats;
        dCs = dBs + slab_floats;
        for (int64_t i = 0; i < 2 * slab_floats; ++i) dBs[i] = 0.0f;  // the slot's dB and dC
        p.slab_part_ids[part * 2 + slot] = slab;
      }
    }
    ds_backward_pair<M>(p, pair, ps, dBs + kPadFront * p.state_pad, dCs + kPadFront * p.state_pad);
  }
}

void forward_part(const DsScanParams& p, int method, int64_t begin, int64_t end, float* scratch) {
  switch (method) {
#define DS_CASE(id, key, ...) \
  case id:                    \
    return ds_forward_part<DsMethod<__VA_ARGS__>>(p, begin, end, scratch);
    DS_METHOD_LIST(DS_CASE)
#undef DS_CASE
  }
}

void backward_part(const DsScanParams& p, int method, int64_t part, int64_t begin, int64_t end,
                   float* scratch) {
  switch (method) {
#define DS_CASE(id, key, ...) \
  case id:                    \
    return ds_backward_part<DsMethod<__VA_ARGS__>>(p, part, begin, end, scratch);
    DS_METHOD_LIST(DS_CASE)
#undef DS_CASE
  }
}
