// The seven discretization methods x two variants of docs/METHODS.md, once, for compiled kernels.
//
// A method is a struct with
//   kLo, kHi          the stencil's token offsets span [kLo, kHi] (taps outside S have weight 0)
//   kExplicitAD       true when a weight depends on a and Δ separately (paper polynomials), not
//                     only through z = aΔ
//   kWeightsOfZ       false when ∂w/∂z ≡ 0 (the kernels then skip those sums: 0·x is not
//                     foldable in IEEE arithmetic)
//   kTakesLam         true when the weights read the token's λ (trapezoid/paper); the others
//                     ignore the lam argument
//   weights<kSmall>(z, a, dt, lam, abar, w)       Ā(z) and w[j - kLo] for j in [kLo, kHi]
//   grads<kSmall>(z, a, dt, lam, abar, dabar, w, wz, wa, wd, wl)
//                                                 also dĀ/dz and, per tap, ∂w/∂z (wz), the
//                                                 explicit partials ∂w/∂a (wa), ∂w/∂Δ (wd) (only
//                                                 written when kExplicitAD) and ∂w/∂λ (wl, only
//                                                 written when kTakesLam)
// where kSmall promises |z| < 1 in every lane (see below).
// Everything is templated on the lane type V (float on a GPU thread or in the scalar build, a
// GCC vector of floats in the SIMD builds). The includer provides, for its V:
//   V ds_exp(V), void ds_exp_em1(V x, V& e^x, V& e^x − 1), V ds_abs(V),
//   V ds_where(mask, V, V) with mask the type of `V < float`,
//   V ds_fill<V>(float), and the macro DS_FN (e.g. `__host__ __device__ __forceinline__`).
// This header includes nothing, so it can be included inside a namespace.

// kSmall: a kernel passes true when it knows |z| < 1 in every lane (in Mamba Δ|a| is mostly
// below 1); the φ-functions and e^z then come from one series, with no exponential and no
// division. false handles every z.
constexpr float kInvFact[16] = {1.f, 1.f, 1.f / 2, 1.f / 6, 1.f / 24, 1.f / 120, 1.f / 720,
                                1.f / 5040, 1.f / 40320, 1.f / 362880, 1.f / 3628800,
                                1.f / 39916800, 1.f / 479001600, 1.f / 6227020800.f,
                                1.f / 87178291200.f, 1.f / 1307674368000.f};

// φ_1..φ_P (P ≤ 4) for |z| < 1: the series Σ_m z^m/(m+P)! for φ_P, then the stable downward
// recursion φ_p = z φ_{p+1} + 1/p!. Series terms: 10 for P ≤ 2, 9 for P = 3, 4, so that the first
// omitted term is below 1e-7 of φ_P(z) for |z| < 1; evaluated by Estrin's scheme (depth 4
// instead of a 9-deep Horner chain).
template <int P, class V>
DS_FN void ds_phis_series(V z, V* phi /* phi[1..P] */) {
  const float* c = kInvFact + P;  // c[m] = 1/(m+P)!
  V z2 = z * z, z4 = z2 * z2, z8 = z4 * z4;
  V u0 = z * c[1] + c[0], u1 = z * c[3] + c[2], u2 = z * c[5] + c[4], u3 = z * c[7] + c[6];
  V u4 = P <= 2 ? z * c[9] + c[8] : ds_fill<V>(c[8]);
  phi[P] = (u0 + u1 * z2) + (u2 + u3 * z2) * z4 + u4 * z8;
#pragma GCC unroll 4
  for (int p = P - 1; p >= 1; --p) phi[p] = z * phi[p + 1] + kInvFact[p];
}

// φ_1..φ_P at any z, given em1 = e^z − 1. φ_1 = em1/z is accurate everywhere (em1 keeps its
// relative accuracy near 0). For P ≥ 2, per lane: the series where |z| < 1, elsewhere the closed
// form φ_{p+1} = (φ_p − 1/p!)/z.
template <int P, class V>
DS_FN void ds_phis(V z, V em1, V* phi /* phi[1..P] */) {
  if constexpr (P == 1) {
    phi[1] = ds_where(z == 0.0f, ds_fill<V>(1.0f), em1 / z);
  } else {
    auto small = ds_abs(z) < 1.0f;
    V series[P + 1];
    ds_phis_series<P>(ds_where(small, z, ds_fill<V>(0.0f)), series);
    V r = 1.0f / ds_where(small, ds_fill<V>(-1.0f), z);  // keeps the unused closed form finite
    V closed = em1 * r;
    phi[1] = ds_where(small, series[1], closed);
#pragma GCC unroll 4
    for (int p = 2; p <= P; ++p) {
      closed = (closed - kInvFact[p - 1]) * r;
      phi[p] = ds_where(small, series[p], closed);
    }
  }
}

// e^z and φ_1..φ_P. With |z| < 1 known: e^z = 1 + z φ_1 (within an ulp of 1 of the exponential).
template <bool kSmall, int P, class V>
DS_FN void ds_exp_phis(V z, V& e, V* phi /* phi[1..P] */) {
  if constexpr (kSmall) {
    ds_phis_series<P>(z, phi);
    e = 1.0f + z * phi[1];
  } else {
    V em1;
    ds_exp_em1(z, e, em1);
    ds_phis<P>(z, em1, phi);
  }
}

template <bool kSmall, class V>
DS_FN V ds_exp_any(V z) {
  if constexpr (kSmall) {
    V phi[2];
    ds_phis_series<1>(z, phi);
    return 1.0f + z * phi[1];
  } else {
    return ds_exp(z);
  }
}

// ---------------------------------------------------------------- canonical variants

struct ZohCanonical {
  static constexpr int kLo = 0, kHi = 0;
  static constexpr bool kExplicitAD = false;
  static constexpr bool kWeightsOfZ = true;
  static constexpr bool kTakesLam = false;
  template <bool kSmall, class V>
  DS_FN static void weights(V z, V, V, V, V& abar, V* w) {
    V e, phi[2];
    ds_exp_phis<kSmall, 1>(z, e, phi);
    abar = e;
    w[0] = phi[1];
  }
  template <bool kSmall, class V>
  DS_FN static void grads(V z, V, V, V, V& abar, V& dabar, V* w, V* wz, V*, V*, V*) {
    V e, phi[3];
    ds_exp_phis<kSmall, 2>(z, e, phi);
    abar = e;
    dabar = e;
    w[0] = phi[1];
    wz[0] = phi[1] - phi[2];
  }
};

struct FohCanonical {
  static constexpr int kLo = -1, kHi = 0;
  static constexpr bool kExplicitAD = false;
  static constexpr bool kWeightsOfZ = true;
  static constexpr bool kTakesLam = false;
  template <bool kSmall, class V>
  DS_FN static void weights(V z, V, V, V, V& abar, V* w) {
    V e, phi[3];
    ds_exp_phis<kSmall, 2>(z, e, phi);
    abar = e;
    w[0] = phi[1] - phi[2];
    w[1] = phi[2];
  }
  template <bool kSmall, class V>
  DS_FN static void grads(V z, V, V, V, V& abar, V& dabar, V* w, V* wz, V*, V*, V*) {
    V e, phi[4];
    ds_exp_phis<kSmall, 3>(z, e, phi);
    V d1 = phi[1] - phi[2], d2 = phi[2] - 2.0f * phi[3];  // φ_p' = φ_p − p φ_{p+1}
    abar = e;
    dabar = e;
    w[0] = phi[1] - phi[2];
    w[1] = phi[2];
    wz[0] = d1 - d2;
    wz[1] = d2;
  }
};

struct BilinearCanonical {
  static constexpr int kLo = -1, kHi = 0;
  static constexpr bool kExplicitAD = false;
  static constexpr bool kWeightsOfZ = true;
  static constexpr bool kTakesLam = false;
  template <bool kSmall, class V>
  DS_FN static void weights(V z, V, V, V, V& abar, V* w) {
    V r = 1.0f / (1.0f - 0.5f * z);
    abar = (1.0f + 0.5f * z) * r;
    w[0] = 0.5f * r;
    w[1] = 0.5f * r;
  }
  template <bool kSmall, class V>
  DS_FN static void grads(V z, V, V, V, V& abar, V& dabar, V* w, V* wz, V*, V*, V*) {
    V r = 1.0f / (1.0f - 0.5f * z);
    abar = (1.0f + 0.5f * z) * r;
    dabar = r * r;
    w[0] = w[1] = 0.5f * r;
    wz[0] = wz[1] = 0.25f * r * r;
  }
};

struct PolynomialCanonical {
  static constexpr int kLo = -1, kHi = 1;
  static constexpr bool kExplicitAD = false;
  static constexpr bool kWeightsOfZ = true;
  static constexpr bool kTakesLam = false;
  template <bool kSmall, class V>
  DS_FN static void weights(V z, V, V, V, V& abar, V* w) {
    V e, phi[4];
    ds_exp_phis<kSmall, 3>(z, e, phi);
    abar = e;
    w[0] = phi[3] - 1.5f * phi[2] + phi[1];
    w[1] = 2.0f * phi[2] - 2.0f * phi[3];
    w[2] = phi[3] - 0.5f * phi[2];
  }
  template <bool kSmall, class V>
  DS_FN static void grads(V z, V, V, V, V& abar, V& dabar, V* w, V* wz, V*, V*, V*) {
    V e, phi[5];
    ds_exp_phis<kSmall, 4>(z, e, phi);
    V d1 = phi[1] - phi[2], d2 = phi[2] - 2.0f * phi[3], d3 = phi[3] - 3.0f * phi[4];
    abar = e;
    dabar = e;
    w[0] = phi[3] - 1.5f * phi[2] + phi[1];
    w[1] = 2.0f * phi[2] - 2.0f * phi[3];
    w[2] = phi[3] - 0.5f * phi[2];
    wz[0] = d3 - 1.5f * d2 + d1;
    wz[1] = 2.0f * d2 - 2.0f * d3;
    wz[2] = d3 - 0.5f * d2;
  }
};

struct HighorderCanonical {
  static constexpr int kLo = -2, kHi = 0;
  static constexpr bool kExplicitAD = false;
  static constexpr bool kWeightsOfZ = true;
  static constexpr bool kTakesLam = false;
  template <bool kSmall, class V>
  DS_FN static void weights(V z, V, V, V, V& abar, V* w) {
    V e, phi[4];
    ds_exp_phis<kSmall, 3>(z, e, phi);
    abar = e;
    w[0] = phi[3] - 0.5f * phi[2];
    w[1] = phi[1] - 2.0f * phi[3];
    w[2] = phi[3] + 0.5f * phi[2];
  }
  template <bool kSmall, class V>
  DS_FN static void grads(V z, V, V, V, V& abar, V& dabar, V* w, V* wz, V*, V*, V*) {
    V e, phi[5];
    ds_exp_phis<kSmall, 4>(z, e, phi);
    V d1 = phi[1] - phi[2], d2 = phi[2] - 2.0f * phi[3], d3 = phi[3] - 3.0f * phi[4];
    abar = e;
    dabar = e;
    w[0] = phi[3] - 0.5f * phi[2];
    w[1] = phi[1] - 2.0f * phi[3];
    w[2] = phi[3] + 0.5f * phi[2];
    wz[0] = d3 - 0.5f * d2;
    wz[1] = d1 - 2.0f * d3;
    wz[2] = d3 + 0.5f * d2;
  }
};

// Classical RK4 on h' = a h + v(t); the midpoint drive by cubic interpolation of 4 samples.
struct Rk4Canonical {
  static constexpr int kLo = -2, kHi = 1;
  static constexpr bool kExplicitAD = false;
  static constexpr bool kWeightsOfZ = true;
  static constexpr bool kTakesLam = false;
  template <bool kSmall, class V>
  DS_FN static void weights(V z, V, V, V, V& abar, V* w) {
    abar = 1.0f + z * (1.0f + z * (0.5f + z * (1.0f / 6 + z * (1.0f / 24))));
    V cs = 1.0f + z * (1.0f + z * (0.5f + z * 0.25f));
    V cm = 4.0f + z * (2.0f + z * 0.5f);
    w[0] = w[3] = cm * (-1.0f / 96);
    w[1] = (cs + (9.0f / 16) * cm) * (1.0f / 6);
    w[2] = (1.0f + (9.0f / 16) * cm) * (1.0f / 6);
  }
  template <bool kSmall, class V>
  DS_FN static void grads(V z, V a, V dt, V lam, V& abar, V& dabar, V* w, V* wz, V*, V*, V*) {
    weights<kSmall>(z, a, dt, lam, abar, w);
    dabar = 1.0f + z * (1.0f + z * (0.5f + z * (1.0f / 6)));
    V dcs = 1.0f + z * (1.0f + z * 0.75f);
    V dcm = 2.0f + z;
    wz[0] = wz[3] = dcm * (-1.0f / 96);
    wz[1] = (dcs + (9.0f / 16) * dcm) * (1.0f / 6);
    wz[2] = ((9.0f / 16) * dcm) * (1.0f / 6);
  }
};

// Mamba-3's exponential-trapezoidal rule: Ā = e^z, w_{−1} = (1 − λ) e^z, w_0 = λ.
struct TrapezoidCanonical {  // λ = ½
  static constexpr int kLo = -1, kHi = 0;
  static constexpr bool kExplicitAD = false;
  static constexpr bool kWeightsOfZ = true;
  static constexpr bool kTakesLam = false;
  template <bool kSmall, class V>
  DS_FN static void weights(V z, V, V, V, V& abar, V* w) {
    abar = ds_exp_any<kSmall>(z);
    w[0] = 0.5f * abar;
    w[1] = ds_fill<V>(0.5f);
  }
  template <bool kSmall, class V>
  DS_FN static void grads(V z, V, V, V, V& abar, V& dabar, V* w, V* wz, V*, V*, V*) {
    abar = dabar = ds_exp_any<kSmall>(z);
    w[0] = wz[0] = 0.5f * abar;
    w[1] = ds_fill<V>(0.5f);
    wz[1] = ds_fill<V>(0.0f);
  }
};

// ---------------------------------------------------------------- paper variants

struct ZohPaper {  // mamba_ssm's selective_scan_ref: Ā = e^z, B̄ = Δ
  static constexpr int kLo = 0, kHi = 0;
  static constexpr bool kExplicitAD = false;
  static constexpr bool kWeightsOfZ = false;
  static constexpr bool kTakesLam = false;
  template <bool kSmall, class V>
  DS_FN static void weights(V z, V, V, V, V& abar, V* w) {
    abar = ds_exp_any<kSmall>(z);
    w[0] = ds_fill<V>(1.0f);
  }
  template <bool kSmall, class V>
  DS_FN static void grads(V z, V, V, V, V& abar, V& dabar, V* w, V* wz, V*, V*, V*) {
    abar = dabar = ds_exp_any<kSmall>(z);
    w[0] = ds_fill<V>(1.0f);
    wz[0] = ds_fill<V>(0.0f);
  }
};

struct BilinearPaper {  // Tustin Ā, B̄ = Δ/(1 − z/2)
  static constexpr int kLo = 0, kHi = 0;
  static constexpr bool kExplicitAD = false;
  static constexpr bool kWeightsOfZ = true;
  static constexpr bool kTakesLam = false;
  template <bool kSmall, class V>
  DS_FN static void weights(V z, V, V, V, V& abar, V* w) {
    V r = 1.0f / (1.0f - 0.5f * z);
    abar = (1.0f + 0.5f * z) * r;
    w[0] = r;
  }
  template <bool kSmall, class V>
  DS_FN static void grads(V z, V, V, V, V& abar, V& dabar, V* w, V* wz, V*, V*, V*) {
    V r = 1.0f / (1.0f - 0.5f * z);
    abar = (1.0f + 0.5f * z) * r;
    dabar = r * r;
    w[0] = r;
    wz[0] = 0.5f * r * r;
  }
};

struct Rk4Paper {  // B̄ = Δ(1 + z/2 + z²/6 + z³/24)
  static constexpr int kLo = 0, kHi = 0;
  static constexpr bool kExplicitAD = false;
  static constexpr bool kWeightsOfZ = true;
  static constexpr bool kTakesLam = false;
  template <bool kSmall, class V>
  DS_FN static void weights(V z, V, V, V, V& abar, V* w) {
    abar = ds_exp_any<kSmall>(z);
    w[0] = 1.0f + z * (0.5f + z * (1.0f / 6 + z * (1.0f / 24)));
  }
  template <bool kSmall, class V>
  DS_FN static void grads(V z, V, V, V, V& abar, V& dabar, V* w, V* wz, V*, V*, V*) {
    abar = dabar = ds_exp_any<kSmall>(z);
    w[0] = 1.0f + z * (0.5f + z * (1.0f / 6 + z * (1.0f / 24)));
    wz[0] = 0.5f + z * (1.0f / 3 + z * (1.0f / 8));
  }
};

// The remaining paper formulas are w = Σ_i c_i(a) Δ^i (B̄ = Δ·w): evaluated by Horner in Δ,
// with ∂w/∂Δ = Σ i c_i Δ^{i−1} and ∂w/∂a = Σ c_i'(a) Δ^i.

struct FohPaper {  // w = Δ/2 + aΔ²/6 + a²Δ³/24 + a³Δ⁴/120
  static constexpr int kLo = 0, kHi = 0;
  static constexpr bool kExplicitAD = true;
  static constexpr bool kWeightsOfZ = false;
  static constexpr bool kTakesLam = false;
  template <bool kSmall, class V>
  DS_FN static void weights(V z, V a, V dt, V, V& abar, V* w) {
    abar = ds_exp_any<kSmall>(z);
    V c2 = a * (1.0f / 6), c3 = a * a * (1.0f / 24), c4 = a * a * a * (1.0f / 120);
    w[0] = dt * (0.5f + dt * (c2 + dt * (c3 + dt * c4)));
  }
  template <bool kSmall, class V>
  DS_FN static void grads(V z, V a, V dt, V, V& abar, V& dabar, V* w, V* wz, V* wa, V* wd, V*) {
    abar = dabar = ds_exp_any<kSmall>(z);
    V c2 = a * (1.0f / 6), c3 = a * a * (1.0f / 24), c4 = a * a * a * (1.0f / 120);
    w[0] = dt * (0.5f + dt * (c2 + dt * (c3 + dt * c4)));
    wz[0] = ds_fill<V>(0.0f);
    wd[0] = 0.5f + dt * (2.0f * c2 + dt * (3.0f * c3 + dt * (4.0f * c4)));
    V dc2 = ds_fill<V>(1.0f / 6), dc3 = a * (1.0f / 12), dc4 = a * a * (1.0f / 40);
    wa[0] = dt * dt * (dc2 + dt * (dc3 + dt * dc4));
  }
};

struct PolynomialPaper {  // w = 1 + (a/2 + 1/4)Δ + (a²/6 + a/12)Δ² + (a³/24 + a²/48)Δ³
  static constexpr int kLo = 0, kHi = 0;
  static constexpr bool kExplicitAD = true;
  static constexpr bool kWeightsOfZ = false;
  static constexpr bool kTakesLam = false;
  template <bool kSmall, class V>
  DS_FN static void weights(V z, V a, V dt, V, V& abar, V* w) {
    abar = ds_exp_any<kSmall>(z);
    V c1 = 0.5f * a + 0.25f, c2 = a * (a * (1.0f / 6) + 1.0f / 12),
      c3 = a * a * (a * (1.0f / 24) + 1.0f / 48);
    w[0] = 1.0f + dt * (c1 + dt * (c2 + dt * c3));
  }
  template <bool kSmall, class V>
  DS_FN static void grads(V z, V a, V dt, V, V& abar, V& dabar, V* w, V* wz, V* wa, V* wd, V*) {
    abar = dabar = ds_exp_any<kSmall>(z);
    V c1 = 0.5f * a + 0.25f, c2 = a * (a * (1.0f / 6) + 1.0f / 12),
      c3 = a * a * (a * (1.0f / 24) + 1.0f / 48);
    w[0] = 1.0f + dt * (c1 + dt * (c2 + dt * c3));
    wz[0] = ds_fill<V>(0.0f);
    wd[0] = c1 + dt * (2.0f * c2 + dt * (3.0f * c3));
    V dc2 = a * (1.0f / 3) + 1.0f / 12, dc3 = a * (a * (1.0f / 8) + 1.0f / 24);
    wa[0] = dt * (0.5f + dt * (dc2 + dt * dc3));
  }
};

struct HighorderPaper {  // w = 1 + (a/2 + 1/2)Δ + (a²/6 + a/6 + 1/12)Δ² + (a³/24 + a²/24 + a/48)Δ³
  static constexpr int kLo = 0, kHi = 0;
  static constexpr bool kExplicitAD = true;
  static constexpr bool kWeightsOfZ = false;
  static constexpr bool kTakesLam = false;
  template <bool kSmall, class V>
  DS_FN static void weights(V z, V a, V dt, V, V& abar, V* w) {
    abar = ds_exp_any<kSmall>(z);
    V c1 = 0.5f * a + 0.5f, c2 = a * (a * (1.0f / 6) + 1.0f / 6) + 1.0f / 12,
      c3 = a * (a * (a * (1.0f / 24) + 1.0f / 24) + 1.0f / 48);
    w[0] = 1.0f + dt * (c1 + dt * (c2 + dt * c3));
  }
  template <bool kSmall, class V>
  DS_FN static void grads(V z, V a, V dt, V, V& abar, V& dabar, V* w, V* wz, V* wa, V* wd, V*) {
    abar = dabar = ds_exp_any<kSmall>(z);
    V c1 = 0.5f * a + 0.5f, c2 = a * (a * (1.0f / 6) + 1.0f / 6) + 1.0f / 12,
      c3 = a * (a * (a * (1.0f / 24) + 1.0f / 24) + 1.0f / 48);
    w[0] = 1.0f + dt * (c1 + dt * (c2 + dt * c3));
    wz[0] = ds_fill<V>(0.0f);
    wd[0] = c1 + dt * (2.0f * c2 + dt * (3.0f * c3));
    V dc2 = a * (1.0f / 3) + 1.0f / 6, dc3 = a * (a * (1.0f / 8) + 1.0f / 12) + 1.0f / 48;
    wa[0] = dt * (0.5f + dt * (dc2 + dt * dc3));
  }
};

struct TrapezoidPaper {  // the caller's per-token λ (Mamba-3: sigmoid of a learned projection)
  static constexpr int kLo = -1, kHi = 0;
  static constexpr bool kExplicitAD = false;
  static constexpr bool kWeightsOfZ = true;
  static constexpr bool kTakesLam = true;
  template <bool kSmall, class V>
  DS_FN static void weights(V z, V, V, V lam, V& abar, V* w) {
    abar = ds_exp_any<kSmall>(z);
    w[0] = (1.0f - lam) * abar;
    w[1] = lam;
  }
  template <bool kSmall, class V>
  DS_FN static void grads(V z, V, V, V lam, V& abar, V& dabar, V* w, V* wz, V*, V*, V* wl) {
    abar = dabar = ds_exp_any<kSmall>(z);
    w[0] = wz[0] = (1.0f - lam) * abar;
    w[1] = lam;
    wz[1] = ds_fill<V>(0.0f);
    wl[0] = -abar;
    wl[1] = ds_fill<V>(1.0f);
  }
};
