// The math of each discretization method of docs/METHODS.md, for the compiled kernels.
//
// What a method is, which methods exist, their ids, stencils and which inputs their weights
// read come from the registry, discbench.methods: discbench/scan/cpu.py generates
// ds_method_list.h from it at build time (see ds_params.h). This header holds only the math,
// one struct per method × variant, named after its registry key ("foh/paper" -> FohPaper):
//
//   template <bool kSmall, class Z, class A, class D, class L, class W>
//   DS_FN static void eval(Z z, A a, D dt, L lam, Z& abar, W* w)
//
// sets Ā(z) and w[j − kLo] for the stencil's offsets j in [kLo, kHi] (the registry's taps in
// their order; eval writes 0 for an offset inside the span that the registry has no tap for).
// It is written once, generically in the number types: the kernels' forward calls it on lanes
// (every type V), and the backward calls it with one argument a DsJet (value and derivative,
// seeded 1) to get the partial derivatives along that argument (see DsMethod below). So the
// math uses only +, −, ×, / and the helpers below, which all take jets (ds_exp_phis,
// ds_exp_any, ds_tustin, ds_poly), and writes constants as ds_fill<W>(c). kSmall: see below.
//
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

// ---------------------------------------------------------------- derivatives

// A number and its derivative along one input of eval (the kernels seed that input with 1 and
// pass the others as plain lanes, so nothing is spent on derivatives known to be zero).
template <class V>
struct DsJet {
  V v, d;
  DsJet() = default;
  DS_FN DsJet(V value) : v(value), d(V{}) {}  // a constant along the seeded input
  DS_FN DsJet(V value, V derivative) : v(value), d(derivative) {}
};

// Sums, products and quotients of jets with jets, lanes (V) and float constants (C).
template <class V>
DS_FN DsJet<V> operator+(DsJet<V> x, DsJet<V> y) { return {x.v + y.v, x.d + y.d}; }
template <class V, class C>
DS_FN DsJet<V> operator+(DsJet<V> x, C c) { return {x.v + c, x.d}; }
template <class V, class C>
DS_FN DsJet<V> operator+(C c, DsJet<V> x) { return {c + x.v, x.d}; }
template <class V>
DS_FN DsJet<V> operator-(DsJet<V> x) { return {-x.v, -x.d}; }
template <class V>
DS_FN DsJet<V> operator-(DsJet<V> x, DsJet<V> y) { return {x.v - y.v, x.d - y.d}; }
template <class V, class C>
DS_FN DsJet<V> operator-(DsJet<V> x, C c) { return {x.v - c, x.d}; }
template <class V, class C>
DS_FN DsJet<V> operator-(C c, DsJet<V> x) { return {c - x.v, -x.d}; }
template <class V>
DS_FN DsJet<V> operator*(DsJet<V> x, DsJet<V> y) { return {x.v * y.v, x.d * y.v + x.v * y.d}; }
template <class V, class C>
DS_FN DsJet<V> operator*(DsJet<V> x, C c) { return {x.v * c, x.d * c}; }
template <class V, class C>
DS_FN DsJet<V> operator*(C c, DsJet<V> x) { return {c * x.v, c * x.d}; }
template <class V>
DS_FN DsJet<V> operator/(DsJet<V> x, DsJet<V> y) {
  V q = x.v / y.v;
  return {q, (x.d - q * y.d) / y.v};
}
template <class V, class C>
DS_FN DsJet<V> operator/(DsJet<V> x, C c) { return {x.v / c, x.d / c}; }
template <class V, class C>
DS_FN DsJet<V> operator/(C c, DsJet<V> x) {
  V q = c / x.v;
  return {q, -(q * x.d) / x.v};
}

// The helpers along a jet z: their values as for lanes, their derivatives in closed form.
// d/dz φ_p = φ_p − p φ_{p+1} (so one more φ is evaluated), d/dz e^z = e^z.
template <bool kSmall, int P, class V>
DS_FN void ds_exp_phis(DsJet<V> z, DsJet<V>& e, DsJet<V>* phi /* phi[1..P] */) {
  V ev, f[P + 2];
  ds_exp_phis<kSmall, P + 1>(z.v, ev, f);
  e = {ev, ev * z.d};
#pragma GCC unroll 4
  for (int p = 1; p <= P; ++p) phi[p] = {f[p], (f[p] - (float)p * f[p + 1]) * z.d};
}

template <bool kSmall, class V>
DS_FN DsJet<V> ds_exp_any(DsJet<V> z) {
  V e = ds_exp_any<kSmall>(z.v);
  return {e, e * z.d};
}

// Tustin's Ā(z) = (1 + z/2)/(1 − z/2) and r = 1/(1 − z/2): dĀ/dz = r², dr/dz = r²/2.
template <class V>
DS_FN void ds_tustin(V z, V& abar, V& r) {
  r = 1.0f / (1.0f - 0.5f * z);
  abar = (1.0f + 0.5f * z) * r;
}
template <class V>
DS_FN void ds_tustin(DsJet<V> z, DsJet<V>& abar, DsJet<V>& r) {
  V rv, av;
  ds_tustin(z.v, av, rv);
  abar = {av, rv * rv * z.d};
  r = {rv, 0.5f * rv * rv * z.d};
}

// Σ_i c[i] z^i by Horner's rule; along a jet z the derivative is Horner's rule on (i c[i]).
template <int N, class V>
DS_FN V ds_poly(V z, const float (&c)[N]) {
  V p = ds_fill<V>(c[N - 1]);
#pragma GCC unroll 8
  for (int i = N - 2; i >= 0; --i) p = c[i] + z * p;
  return p;
}
template <int N, class V>
DS_FN DsJet<V> ds_poly(DsJet<V> z, const float (&c)[N]) {
  float dc[N - 1];
#pragma GCC unroll 8
  for (int i = 1; i < N; ++i) dc[i - 1] = (float)i * c[i];
  return {ds_poly(z.v, c), ds_poly(z.v, dc) * z.d};
}

// A method of the generated list: the registry's facts about it (whether its weights take λ,
// its stencil span, whether they read z, and a or Δ apart from z) and its math, with the two
// calls the scan kernels make.
//   weights<kSmall>(z, a, dt, lam, abar, w)       Ā(z) and w[j − kLo] for j in [kLo, kHi]
//   grads<kSmall>(z, a, dt, lam, abar, dabar, w, wz, wa, wd, wl)
//                                                 also dĀ/dz and, per tap, ∂w/∂z (wz), the
//                                                 explicit partials ∂w/∂a (wa), ∂w/∂Δ (wd) (only
//                                                 written when kExplicitAD) and ∂w/∂λ (wl, only
//                                                 written when kTakesLam)
// where kSmall promises |z| < 1 in every lane. kWeightsOfZ false means ∂w/∂z ≡ 0, so the
// kernels skip those sums (0·x is not foldable in IEEE arithmetic).
template <bool kTakesLam_, class Math, int kLo_, int kHi_, bool kWeightsOfZ_, bool kExplicitAD_>
struct DsMethod {
  static constexpr int kLo = kLo_, kHi = kHi_, kTaps = kHi_ - kLo_ + 1;
  static constexpr bool kTakesLam = kTakesLam_, kWeightsOfZ = kWeightsOfZ_, kExplicitAD = kExplicitAD_;

  template <bool kSmall, class V>
  DS_FN static void weights(V z, V a, V dt, V lam, V& abar, V* w) {
    Math::template eval<kSmall>(z, a, dt, lam, abar, w);
  }

  template <bool kSmall, class V>
  DS_FN static void grads(V z, V a, V dt, V lam, V& abar, V& dabar, V* w, V* wz, V* wa, V* wd,
                          V* wl) {
    using J = DsJet<V>;
    const V one = ds_fill<V>(1.0f);
    J abar_z, w_z[kTaps];
    Math::template eval<kSmall>(J{z, one}, a, dt, lam, abar_z, w_z);  // along z, a, Δ, λ held
    abar = abar_z.v;
    dabar = abar_z.d;
#pragma GCC unroll 4
    for (int j = 0; j < kTaps; ++j) {
      w[j] = w_z[j].v;
      wz[j] = w_z[j].d;
    }
    V unused;
    if constexpr (kExplicitAD) {
      J w_a[kTaps], w_d[kTaps];
      Math::template eval<kSmall>(z, J{a, one}, dt, lam, unused, w_a);
      Math::template eval<kSmall>(z, a, J{dt, one}, lam, unused, w_d);
#pragma GCC unroll 4
      for (int j = 0; j < kTaps; ++j) {
        wa[j] = w_a[j].d;
        wd[j] = w_d[j].d;
      }
    }
    if constexpr (kTakesLam) {
      J w_l[kTaps];
      Math::template eval<kSmall>(z, a, dt, J{lam, one}, unused, w_l);
#pragma GCC unroll 4
      for (int j = 0; j < kTaps; ++j) wl[j] = w_l[j].d;
    }
  }
};

// ---------------------------------------------------------------- canonical variants

struct ZohCanonical {  // taps 0
  template <bool kSmall, class Z, class A, class D, class L, class W>
  DS_FN static void eval(Z z, A, D, L, Z& abar, W* w) {
    Z phi[2];
    ds_exp_phis<kSmall, 1>(z, abar, phi);
    w[0] = phi[1];
  }
};

struct FohCanonical {  // taps −1, 0
  template <bool kSmall, class Z, class A, class D, class L, class W>
  DS_FN static void eval(Z z, A, D, L, Z& abar, W* w) {
    Z phi[3];
    ds_exp_phis<kSmall, 2>(z, abar, phi);
    w[0] = phi[1] - phi[2];
    w[1] = phi[2];
  }
};

struct BilinearCanonical {  // taps −1, 0
  template <bool kSmall, class Z, class A, class D, class L, class W>
  DS_FN static void eval(Z z, A, D, L, Z& abar, W* w) {
    Z r;
    ds_tustin(z, abar, r);
    w[0] = 0.5f * r;
    w[1] = 0.5f * r;
  }
};

struct PolynomialCanonical {  // taps −1, 0, +1
  template <bool kSmall, class Z, class A, class D, class L, class W>
  DS_FN static void eval(Z z, A, D, L, Z& abar, W* w) {
    Z phi[4];
    ds_exp_phis<kSmall, 3>(z, abar, phi);
    w[0] = phi[3] - 1.5f * phi[2] + phi[1];
    w[1] = 2.0f * phi[2] - 2.0f * phi[3];
    w[2] = phi[3] - 0.5f * phi[2];
  }
};

struct HighorderCanonical {  // taps −2, −1, 0
  template <bool kSmall, class Z, class A, class D, class L, class W>
  DS_FN static void eval(Z z, A, D, L, Z& abar, W* w) {
    Z phi[4];
    ds_exp_phis<kSmall, 3>(z, abar, phi);
    w[0] = phi[3] - 0.5f * phi[2];
    w[1] = phi[1] - 2.0f * phi[3];
    w[2] = phi[3] + 0.5f * phi[2];
  }
};

// Classical RK4 on h' = a h + v(t); the midpoint drive by cubic interpolation of 4 samples.
struct Rk4Canonical {  // taps −2, −1, 0, +1
  template <bool kSmall, class Z, class A, class D, class L, class W>
  DS_FN static void eval(Z z, A, D, L, Z& abar, W* w) {
    abar = ds_poly(z, {1.0f, 1.0f, 0.5f, 1.0f / 6, 1.0f / 24});
    Z cs = ds_poly(z, {1.0f, 1.0f, 0.5f, 0.25f});
    Z cm = ds_poly(z, {4.0f, 2.0f, 0.5f});
    w[0] = w[3] = cm * (-1.0f / 96);
    w[1] = (cs + (9.0f / 16) * cm) * (1.0f / 6);
    w[2] = (1.0f + (9.0f / 16) * cm) * (1.0f / 6);
  }
};

// Mamba-3's exponential-trapezoidal rule: Ā = e^z, w_{−1} = (1 − λ) e^z, w_0 = λ.
struct TrapezoidCanonical {  // λ = ½; taps −1, 0
  template <bool kSmall, class Z, class A, class D, class L, class W>
  DS_FN static void eval(Z z, A, D, L, Z& abar, W* w) {
    abar = ds_exp_any<kSmall>(z);
    w[0] = 0.5f * abar;
    w[1] = ds_fill<W>(0.5f);
  }
};

// ---------------------------------------------------------------- paper variants

struct ZohPaper {  // mamba_ssm's selective_scan_ref: Ā = e^z, B̄ = Δ; taps 0
  template <bool kSmall, class Z, class A, class D, class L, class W>
  DS_FN static void eval(Z z, A, D, L, Z& abar, W* w) {
    abar = ds_exp_any<kSmall>(z);
    w[0] = ds_fill<W>(1.0f);
  }
};

struct BilinearPaper {  // Tustin Ā, B̄ = Δ/(1 − z/2); taps 0
  template <bool kSmall, class Z, class A, class D, class L, class W>
  DS_FN static void eval(Z z, A, D, L, Z& abar, W* w) {
    Z r;
    ds_tustin(z, abar, r);
    w[0] = r;
  }
};

struct Rk4Paper {  // B̄ = Δ(1 + z/2 + z²/6 + z³/24); taps 0
  template <bool kSmall, class Z, class A, class D, class L, class W>
  DS_FN static void eval(Z z, A, D, L, Z& abar, W* w) {
    abar = ds_exp_any<kSmall>(z);
    w[0] = ds_poly(z, {1.0f, 0.5f, 1.0f / 6, 1.0f / 24});
  }
};

// The remaining paper formulas are w = Σ_i c_i(a) Δ^i (B̄ = Δ·w), evaluated by Horner in Δ;
// taps 0.

struct FohPaper {  // w = Δ/2 + aΔ²/6 + a²Δ³/24 + a³Δ⁴/120
  template <bool kSmall, class Z, class A, class D, class L, class W>
  DS_FN static void eval(Z z, A a, D dt, L, Z& abar, W* w) {
    abar = ds_exp_any<kSmall>(z);
    A c2 = a * (1.0f / 6), c3 = a * a * (1.0f / 24), c4 = a * a * a * (1.0f / 120);
    w[0] = dt * (0.5f + dt * (c2 + dt * (c3 + dt * c4)));
  }
};

struct PolynomialPaper {  // w = 1 + (a/2 + 1/4)Δ + (a²/6 + a/12)Δ² + (a³/24 + a²/48)Δ³
  template <bool kSmall, class Z, class A, class D, class L, class W>
  DS_FN static void eval(Z z, A a, D dt, L, Z& abar, W* w) {
    abar = ds_exp_any<kSmall>(z);
    A c1 = 0.5f * a + 0.25f, c2 = a * (a * (1.0f / 6) + 1.0f / 12),
      c3 = a * a * (a * (1.0f / 24) + 1.0f / 48);
    w[0] = 1.0f + dt * (c1 + dt * (c2 + dt * c3));
  }
};

struct HighorderPaper {  // w = 1 + (a/2 + 1/2)Δ + (a²/6 + a/6 + 1/12)Δ² + (a³/24 + a²/24 + a/48)Δ³
  template <bool kSmall, class Z, class A, class D, class L, class W>
  DS_FN static void eval(Z z, A a, D dt, L, Z& abar, W* w) {
    abar = ds_exp_any<kSmall>(z);
    A c1 = 0.5f * a + 0.5f, c2 = a * (a * (1.0f / 6) + 1.0f / 6) + 1.0f / 12,
      c3 = a * (a * (a * (1.0f / 24) + 1.0f / 24) + 1.0f / 48);
    w[0] = 1.0f + dt * (c1 + dt * (c2 + dt * c3));
  }
};

struct TrapezoidPaper {  // the caller's per-token λ (Mamba-3: sigmoid of a learned projection); taps −1, 0
  template <bool kSmall, class Z, class A, class D, class L, class W>
  DS_FN static void eval(Z z, A, D, L lam, Z& abar, W* w) {
    abar = ds_exp_any<kSmall>(z);
    w[0] = (1.0f - lam) * abar;
    w[1] = lam;
  }
};
