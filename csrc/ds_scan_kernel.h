// The fused selective scan, forward and backward, for one ISA build (see kernel_*.cpp).
//
// Work unit: one (batch, channel) pair. Per pair, the state is walked in lane-wide blocks of n
// (outer) and tokens (inner), so the state h, the stencil's drive samples v_{k+j} and the
// adjoints stay in registers; nothing of size (b, d, l, n) is ever stored.
//
// Forward per token k and state block:  z = aΔ_k;  Ā, w_j = method(z);
//   h = Ā h + Δ_k Σ_j w_j v_{k+j};   y_k += Σ_n C_k h        (v_m = B_m u_m, zero outside [0, L))
// and h is checkpointed every kCkptEvery tokens when a backward will follow.
//
// Backward: per chunk of kCkptEvery tokens, last chunk first, the states are recomputed from the
// checkpoint into a small buffer, then the reverse recurrence runs over the chunk:
//   g_k = C_k dy_k + Ā_{k+1} g_{k+1}                          (adjoint of h_k)
//   dĀ_k = g_k h_{k−1},   dv_{k+j} += g_k Δ_k w_j,   dC_k += dy_k h_k
//   dA  += g_k Δ_k (Δ_k Σ_j ∂w_j/∂z v_{k+j} + Σ_j ∂w_j/∂a v_{k+j}) + dĀ_k dĀ/dz Δ_k
//   dΔ_k = Σ_n [g_k (Σ_j w_j v + Δ_k (a Σ_j ∂w_j/∂z v + Σ_j ∂w_j/∂Δ v)) + dĀ_k dĀ/dz a]
// dv_m is complete once token m − kHi is done; it is then turned into dB_m += dv_m u_m and
// du_m += Σ_n dv_m B_m.
//
// Included inside the build's namespace after ds_simd.h and ds_methods.h; includes nothing.

static inline float ds_softplus(float x) { return x > 20.0f ? x : __builtin_log1pf(__builtin_expf(x)); }
// d softplus / dx, as torch's softplus_backward computes it (threshold 20).
static inline float ds_softplus_grad(float x) {
  if (x > 20.0f) return 1.0f;
  float e = __builtin_expf(x);
  return e / (e + 1.0f);
}
static inline float ds_sigmoid(float x) { return 1.0f / (1.0f + __builtin_expf(-x)); }
static inline float ds_silu(float x) { return x * ds_sigmoid(x); }
static inline float ds_silu_grad(float x) {
  float s = ds_sigmoid(x);
  return s * (1.0f + x * (1.0f - s));
}
static inline int64_t ds_min(int64_t a, int64_t b) { return a < b ? a : b; }

// Per-pair scratch: Δ after bias and softplus, and u zero-padded so that stencil reads past
// either end need no bounds checks.
struct PairScratch {
  float* dt;   // [len]
  float* ub;   // [len] with kPadFront before and kPadBack after, zero
  float* y;    // [len]
  float* dy;   // [len]
  float* dtg;  // [len]        dL/dΔ (after the activation)
  float* dub;  // [len] padded dL/du through the drive
  float* hbuf; // [(kCkptEvery + 1) * kW] states of one chunk, entering state first
};

static PairScratch ds_scratch(const DsScanParams& p, float* s) {
  const int64_t padded = p.len + kPadFront + kPadBack;
  PairScratch ps;
  ps.dt = s;
  ps.ub = s + padded + kPadFront;
  ps.y = s + 2 * padded;
  ps.dy = s + 3 * padded;
  ps.dtg = s + 4 * padded;
  ps.dub = s + 5 * padded + kPadFront;
  ps.hbuf = s + 6 * padded;
  return ps;
}

static void ds_prepare_pair(const DsScanParams& p, int64_t pair, const PairScratch& ps) {
  const int64_t L = p.len, di = pair % p.dim;
  const float* u = p.u + pair * L;
  const float* delta = p.delta + pair * L;
  const float bias = p.delta_bias ? p.delta_bias[di] : 0.0f;
  for (int64_t k = -kPadFront; k < 0; ++k) ps.ub[k] = 0.0f;
  for (int64_t k = L; k < L + kPadBack; ++k) ps.ub[k] = 0.0f;
  for (int64_t k = 0; k < L; ++k) {
    ps.ub[k] = u[k];
    const float x = delta[k] + bias;
    ps.dt[k] = p.softplus ? ds_softplus(x) : x;
  }
}

template <class M>
static void ds_forward_pair(const DsScanParams& p, int64_t pair, const PairScratch& ps) {
  constexpr int kLo = M::kLo, kHi = M::kHi, kTaps = kHi - kLo + 1;
  const int64_t L = p.len, NP = p.state_pad, di = pair % p.dim;
  const int64_t slab = pair / p.chan_per_group;
  const int64_t rows = L + kPadFront + kPadBack;
  const float* Bs = p.Bt + (slab * rows + kPadFront) * NP;
  const float* Cs = p.Ct + (slab * rows + kPadFront) * NP;
  ds_prepare_pair(p, pair, ps);
  const float* dt = ps.dt;
  const float* ub = ps.ub;
  float* y = ps.y;
  for (int64_t k = 0; k < L; ++k) y[k] = 0.0f;

  for (int64_t c = 0; c < NP; c += kW) {
    const vf a = ds_load(p.A + di * NP + c);
    vf h = ds_fill<vf>(0.0f);
    vf v[kTaps];  // v[j − kLo] = v_{k+j}
#pragma GCC unroll 4
    for (int j = kLo; j <= kHi; ++j) v[j - kLo] = ds_load(Bs + j * NP + c) * ub[j];
    for (int64_t t0 = 0, t = 0; t0 < L; t0 += kCkptEvery, ++t) {
      if (p.ckpt) ds_store(p.ckpt + ((pair * p.n_ckpt + t) * NP + c), h);
      const int64_t t1 = ds_min(t0 + kCkptEvery, L);
      for (int64_t k = t0; k < t1; ++k) {
        const vf dtv = ds_fill<vf>(dt[k]);
        vf abar, w[kTaps];
        M::weights(a * dt[k], a, dtv, abar, w);
        vf x = w[0] * v[0];
#pragma GCC unroll 4
        for (int j = 1; j < kTaps; ++j) x += w[j] * v[j];
        h = abar * h + dt[k] * x;
        y[k] += ds_hsum(ds_load(Cs + k * NP + c) * h);
#pragma GCC unroll 4
        for (int j = 0; j + 1 < kTaps; ++j) v[j] = v[j + 1];
        v[kTaps - 1] = ds_load(Bs + (k + 1 + kHi) * NP + c) * ub[k + 1 + kHi];
      }
    }
    if (p.last_state) ds_store(p.last_state + pair * NP + c, h);
  }

  const float D = p.D ? p.D[di] : 0.0f;
  float* out = p.out + pair * L;
  const float* zg = p.z ? p.z + pair * L : nullptr;
  float* ypre = p.ypre ? p.ypre + pair * L : nullptr;
  for (int64_t k = 0; k < L; ++k) {
    const float yk = y[k] + D * ub[k];
    if (ypre) ypre[k] = yk;
    out[k] = zg ? yk * ds_silu(zg[k]) : yk;
  }
}

template <class M>
static void ds_backward_pair(const DsScanParams& p, int64_t pair, const PairScratch& ps,
                             float* dBs, float* dCs /* slab accumulators at token 0 */) {
  constexpr int kLo = M::kLo, kHi = M::kHi, kTaps = kHi - kLo + 1;
  const int64_t L = p.len, NP = p.state_pad, di = pair % p.dim;
  const int64_t slab = pair / p.chan_per_group;
  const int64_t rows = L + kPadFront + kPadBack;
  const float* Bs = p.Bt + (slab * rows + kPadFront) * NP;
  const float* Cs = p.Ct + (slab * rows + kPadFront) * NP;
  ds_prepare_pair(p, pair, ps);
  const float* dt = ps.dt;
  const float* ub = ps.ub;
  float* dy = ps.dy;
  float* dtg = ps.dtg;
  float* dub = ps.dub;
  float* hbuf = ps.hbuf;
  const float* dout = p.dout + pair * L;
  const float* zg = p.z ? p.z + pair * L : nullptr;
  for (int64_t k = 0; k < L; ++k) {
    dy[k] = zg ? dout[k] * ds_silu(zg[k]) : dout[k];
    dtg[k] = 0.0f;
  }
  for (int64_t k = -kPadFront; k < L + kPadBack; ++k) dub[k] = 0.0f;

  for (int64_t c = 0; c < NP; c += kW) {
    const vf a = ds_load(p.A + di * NP + c);
    vf dA_acc = ds_fill<vf>(0.0f);
    vf carry = p.dlast ? ds_load(p.dlast + pair * NP + c) : ds_fill<vf>(0.0f);  // Ā_{k+1} g_{k+1}
    vf v[kTaps], dv[kTaps];  // v[j − kLo] = v_{k+j}, dv[j − kLo] = dL/dv_{k+j} so far
#pragma GCC unroll 4
    for (int j = kLo; j <= kHi; ++j) {
      v[j - kLo] = ds_load(Bs + (L - 1 + j) * NP + c) * ub[L - 1 + j];
      dv[j - kLo] = ds_fill<vf>(0.0f);
    }
    for (int64_t t = p.n_ckpt - 1; t >= 0; --t) {
      const int64_t t0 = t * kCkptEvery, t1 = ds_min(t0 + kCkptEvery, L);
      // Recompute the chunk's states from its checkpoint.
      vf h = ds_load(p.ckpt + ((pair * p.n_ckpt + t) * NP + c));
      ds_store(hbuf, h);
      vf vr[kTaps];
#pragma GCC unroll 4
      for (int j = kLo; j <= kHi; ++j) vr[j - kLo] = ds_load(Bs + (t0 + j) * NP + c) * ub[t0 + j];
      for (int64_t k = t0; k < t1; ++k) {
        vf abar, w[kTaps];
        M::weights(a * dt[k], a, ds_fill<vf>(dt[k]), abar, w);
        vf x = w[0] * vr[0];
#pragma GCC unroll 4
        for (int j = 1; j < kTaps; ++j) x += w[j] * vr[j];
        h = abar * h + dt[k] * x;
        ds_store(hbuf + (k - t0 + 1) * kW, h);
#pragma GCC unroll 4
        for (int j = 0; j + 1 < kTaps; ++j) vr[j] = vr[j + 1];
        vr[kTaps - 1] = ds_load(Bs + (k + 1 + kHi) * NP + c) * ub[k + 1 + kHi];
      }
      // Reverse recurrence over the chunk.
      for (int64_t k = t1 - 1; k >= t0; --k) {
        const vf dtv = ds_fill<vf>(dt[k]);
        vf abar, dabar, w[kTaps], wz[kTaps], wa[kTaps], wd[kTaps];
        M::grads(a * dt[k], a, dtv, abar, dabar, w, wz, wa, wd);
        const vf g = ds_load(Cs + k * NP + c) * dy[k] + carry;
        const vf hk = ds_load(hbuf + (k - t0 + 1) * kW);
        const vf hprev = ds_load(hbuf + (k - t0) * kW);
        ds_store(dCs + k * NP + c, ds_load(dCs + k * NP + c) + dy[k] * hk);
        const vf gh = g * hprev * dabar;
        carry = abar * g;
        vf S = w[0] * v[0], Sz = wz[0] * v[0];
#pragma GCC unroll 4
        for (int j = 1; j < kTaps; ++j) {
          S += w[j] * v[j];
          Sz += wz[j] * v[j];
        }
        const vf gdt = g * dt[k];
        vf dA_term = dtv * Sz, dt_term = a * Sz;
        if constexpr (M::kExplicitAD) {
          vf Sa = wa[0] * v[0], Sd = wd[0] * v[0];
#pragma GCC unroll 4
          for (int j = 1; j < kTaps; ++j) {
            Sa += wa[j] * v[j];
            Sd += wd[j] * v[j];
          }
          dA_term += Sa;
          dt_term += Sd;
        }
        dA_acc += gdt * dA_term + gh * dt[k];
        dtg[k] += ds_hsum(g * (S + dt[k] * dt_term) + gh * a);
#pragma GCC unroll 4
        for (int j = 0; j < kTaps; ++j) dv[j] += gdt * w[j];
        // dv_{k+kHi} is complete: no earlier token reaches that far.
        const int64_t m = k + kHi;
        ds_store(dBs + m * NP + c, ds_load(dBs + m * NP + c) + dv[kTaps - 1] * ub[m]);
        dub[m] += ds_hsum(dv[kTaps - 1] * ds_load(Bs + m * NP + c));
#pragma GCC unroll 4
        for (int j = kTaps - 1; j > 0; --j) {
          dv[j] = dv[j - 1];
          v[j] = v[j - 1];
        }
        dv[0] = ds_fill<vf>(0.0f);
        v[0] = ds_load(Bs + (k - 1 + kLo) * NP + c) * ub[k - 1 + kLo];
      }
    }
    // Tokens kLo .. kHi − 1 still hold contributions (dv[j − kLo] is now dv_{j−1}).
#pragma GCC unroll 4
    for (int j = kLo + 1; j <= kHi; ++j) {
      const int64_t m = j - 1;
      ds_store(dBs + m * NP + c, ds_load(dBs + m * NP + c) + dv[j - kLo] * ub[m]);
      dub[m] += ds_hsum(dv[j - kLo] * ds_load(Bs + m * NP + c));
    }
    ds_store(p.dA_part + pair * NP + c, dA_acc);
  }

  const float D = p.D ? p.D[di] : 0.0f;
  const float bias = p.delta_bias ? p.delta_bias[di] : 0.0f;
  const float* delta = p.delta + pair * L;
  const float* ypre = p.ypre ? p.ypre + pair * L : nullptr;
  float* du = p.du + pair * L;
  float* ddelta = p.ddelta + pair * L;
  float* dz = p.dz ? p.dz + pair * L : nullptr;
  float dD = 0.0f, ddb = 0.0f;
  for (int64_t k = 0; k < L; ++k) {
    dD += dy[k] * ub[k];
    du[k] = dub[k] + dy[k] * D;
    const float draw = p.softplus ? dtg[k] * ds_softplus_grad(delta[k] + bias) : dtg[k];
    ddelta[k] = draw;
    ddb += draw;
    if (dz) dz[k] = dout[k] * ypre[k] * ds_silu_grad(zg[k]);
  }
  p.dD_part[pair] = dD;
  p.ddb_part[pair] = ddb;
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
        p.slab_part_ids[part * 2 + slot] = slab;
      }
    }
    ds_backward_pair<M>(p, pair, ps, dBs + kPadFront * p.state_pad, dCs + kPadFront * p.state_pad);
  }
}

void forward_part(const DsScanParams& p, int method, int64_t begin, int64_t end, float* scratch) {
  switch (method) {
#define DS_CASE(id, key, T) \
  case id:                  \
    return ds_forward_part<T>(p, begin, end, scratch);
    DS_METHOD_LIST(DS_CASE)
#undef DS_CASE
  }
}

void backward_part(const DsScanParams& p, int method, int64_t part, int64_t begin, int64_t end,
                   float* scratch) {
  switch (method) {
#define DS_CASE(id, key, T) \
  case id:                  \
    return ds_backward_part<T>(p, part, begin, end, scratch);
    DS_METHOD_LIST(DS_CASE)
#undef DS_CASE
  }
}
