// The lane type of one kernel build and the few operations ds_methods.h needs.
//
// Included inside the build's namespace (ds_avx512, ds_avx2, ds_scalar) after
// DS_VEC_WIDTH is defined: 16 (AVX-512), 8 (AVX2) or 1 (plain float). The vector builds use
// GCC vector extensions, so the same source compiles to each instruction set under its
// `#pragma GCC target`. It includes nothing (see kernel_*.cpp).

#define DS_FN inline __attribute__((always_inline))

constexpr int kW = DS_VEC_WIDTH;

#if DS_VEC_WIDTH == 1
typedef float vf;
typedef int vi;
DS_FN vf ds_load(const float* p) { return *p; }
DS_FN void ds_store(float* p, vf v) { *p = v; }
DS_FN vi ds_to_int(vf v) { return (int)v; }
DS_FN vf ds_reverse(vf v) { return v; }
DS_FN vf ds_bits_to_float(vi v) { return __builtin_bit_cast(float, v); }
#else
typedef float vf __attribute__((vector_size(DS_VEC_WIDTH * 4)));
typedef int vi __attribute__((vector_size(DS_VEC_WIDTH * 4)));
typedef float vf_unaligned __attribute__((vector_size(DS_VEC_WIDTH * 4), aligned(4), may_alias));
DS_FN vf ds_load(const float* p) { return *reinterpret_cast<const vf_unaligned*>(p); }
DS_FN void ds_store(float* p, vf v) { *reinterpret_cast<vf_unaligned*>(p) = v; }
DS_FN vi ds_to_int(vf v) { return __builtin_convertvector(v, vi); }
DS_FN vf ds_reverse(vf v) {  // lane i <- lane kW − 1 − i
#if DS_VEC_WIDTH == 16
  return __builtin_shufflevector(v, v, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
#else
  return __builtin_shufflevector(v, v, 7, 6, 5, 4, 3, 2, 1, 0);
#endif
}
DS_FN vf ds_bits_to_float(vi v) { return reinterpret_cast<vf>(v); }
#endif

template <class V>
DS_FN V ds_fill(float c) {
  V r = V{};  // zero in every lane
  return r + c;
}

template <class M>
DS_FN vf ds_where(M mask, vf a, vf b) { return mask ? a : b; }
DS_FN vf ds_abs(vf x) { return ds_where(x < 0.0f, -x, x); }

// 2^k for integral k in [−150, 128] (exactly; 0 and +inf at the ends), nan for nan. Two halves,
// each a normal float's exponent field; their product rounds like one scaling. Exact, so every
// build gives the same bits (AVX-512's scalef would too, but one formula is one thing to check).
DS_FN vf ds_pow2(vf k) {
  vi ki = ds_to_int(k);
  vi k1 = ki >> 1;
  vi k2 = ki - k1;
  return ds_bits_to_float((k1 + 127) << 23) * ds_bits_to_float((k2 + 127) << 23);
}

// a·b + c rounded once, in every lane. The builds compile with -ffp-contract=off (cpu.py), so a
// product and a sum are rounded separately everywhere except where the source asks for this:
// the same bits from every instruction set (the compiler's own contraction choices may differ
// between builds, and the scalar build has no FMA instruction: fmaf is correctly rounded too).
DS_FN vf ds_fma(vf a, vf b, vf c) {
#if DS_VEC_WIDTH == 16
  return __builtin_ia32_vfmaddps512_mask(a, b, c, (unsigned short)0xFFFF, 4);
#elif DS_VEC_WIDTH == 8
  return __builtin_ia32_vfmaddps256(a, b, c);
#else
  return __builtin_fmaf(a, b, c);
#endif
}

// e^x and e^x − 1 to about 1 ulp each (Cody–Waite reduction x = k ln2 + r, Cephes' degree-6
// polynomial p(r) − 1 = r + r² q(r)); e^x − 1 = 2^k (p − 1) + (2^k − 1) keeps its relative
// accuracy near 0. Limits: 0 / −1 below −104, +inf above 88.7; nan propagates.
// ds_exp_parts gives the pieces: s = 2^k and pm1 = p(r) − 1.
DS_FN void ds_exp_parts(vf x, vf& s, vf& pm1) {
  vf xc = ds_where(x < -104.0f, ds_fill<vf>(-104.0f), x);
  xc = ds_where(xc > 89.0f, ds_fill<vf>(89.0f), xc);
  // Round to nearest by the 1.5·2^23 trick (|x log2 e| < 2^22 here).
  vf k = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  vf r = xc - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  vf q = ds_fill<vf>(1.9875691500e-4f);
  q = ds_fma(q, r, ds_fill<vf>(1.3981999507e-3f));
  q = ds_fma(q, r, ds_fill<vf>(8.3334519073e-3f));
  q = ds_fma(q, r, ds_fill<vf>(4.1665795894e-2f));
  q = ds_fma(q, r, ds_fill<vf>(1.6666665459e-1f));
  q = ds_fma(q, r, ds_fill<vf>(5.0000001201e-1f));
  pm1 = ds_fma(q, r * r, r);
  s = ds_pow2(k);
}

DS_FN void ds_exp_em1(vf x, vf& e, vf& em1) {
  vf s, pm1;
  ds_exp_parts(x, s, pm1);
  e = (pm1 + 1.0f) * s;
  em1 = pm1 * s + (s - 1.0f);
}

DS_FN vf ds_exp(vf x) {
  vf s, pm1;
  ds_exp_parts(x, s, pm1);
  return (pm1 + 1.0f) * s;
}

// The first `count` (≤ kW) lanes at p, the rest zero; and the converse store. Masked moves,
// which touch no memory past the count: a partial vector at the end of a tensor row costs what a
// full one does (a scalar loop through a stack buffer stalls on store forwarding).
DS_FN vf ds_load_n(const float* p, int64_t count) {
#if DS_VEC_WIDTH == 16
  if (count >= kW) return ds_load(p);
  return __builtin_ia32_loadups512_mask(p, ds_fill<vf>(0.0f), (unsigned short)((1u << count) - 1));
#elif DS_VEC_WIDTH == 8
  if (count >= kW) return ds_load(p);
  const vi lane = {0, 1, 2, 3, 4, 5, 6, 7};
  return __builtin_ia32_maskloadps256(reinterpret_cast<const vf*>(p), lane < (int)count);
#else
  return count > 0 ? *p : 0.0f;
#endif
}
DS_FN void ds_store_n(float* p, vf v, int64_t count) {
#if DS_VEC_WIDTH == 16
  if (count >= kW) return ds_store(p, v);
  __builtin_ia32_storeups512_mask(p, v, (unsigned short)((1u << count) - 1));
#elif DS_VEC_WIDTH == 8
  if (count >= kW) return ds_store(p, v);
  const vi lane = {0, 1, 2, 3, 4, 5, 6, 7};
  __builtin_ia32_maskstoreps256(reinterpret_cast<vf*>(p), lane < (int)count, v);
#else
  if (count > 0) *p = v;
#endif
}

// Sums across lanes in one fixed order, whatever the build's width, so that every instruction
// set gives the same bits. Over a group of kGroup = 16 lanes x: a_i = x_i + x_{i+8}, then pairs 4
// apart, 2 apart, 1 apart (the add tree of a 16-lane transposing reduction); a row of more than
// one group adds the groups' sums in order. A sum over tokens puts token t in lane t mod 16.
constexpr int kGroup = 16;
static_assert(kGroup % kW == 0, "a group is whole vectors");

DS_FN float ds_sum16(const float* x) {
  float a[8], b[4];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) a[i] = x[i] + x[i + 8];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) b[i] = a[i] + a[i + 4];
  return (b[0] + b[2]) + (b[1] + b[3]);
}

#if DS_VEC_WIDTH > 1
// Lane i of the result is the fixed-order sum of vector r[i] (kW vectors of kW lanes): a
// transposing add tree, log2(kW) rounds of (2 shuffles + 1 add) per pair.
DS_FN vf ds_tree_sums(const vf* rows) {
#if DS_VEC_WIDTH == 16
  // The tree leaves lane i holding the row whose index is i bit-reversed; feed rows so.
  vf r[16];
  constexpr int rev[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = rows[rev[i]];
  vf s[8], t[4], w[2];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    s[i] = __builtin_shufflevector(r[2 * i], r[2 * i + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23) +
           __builtin_shufflevector(r[2 * i], r[2 * i + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)
    t[i] = __builtin_shufflevector(s[2 * i], s[2 * i + 1], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27) +
           __builtin_shufflevector(s[2 * i], s[2 * i + 1], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i)
    w[i] = __builtin_shufflevector(t[2 * i], t[2 * i + 1], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29) +
           __builtin_shufflevector(t[2 * i], t[2 * i + 1], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
  return __builtin_shufflevector(w[0], w[1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30) +
         __builtin_shufflevector(w[0], w[1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
#else
  vf r[8];
  constexpr int rev[8] = {0, 4, 2, 6, 1, 5, 3, 7};
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) r[i] = rows[rev[i]];
  vf s[4], t[2];
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)
    s[i] = __builtin_shufflevector(r[2 * i], r[2 * i + 1], 0, 1, 2, 3, 8, 9, 10, 11) +
           __builtin_shufflevector(r[2 * i], r[2 * i + 1], 4, 5, 6, 7, 12, 13, 14, 15);
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i)
    t[i] = __builtin_shufflevector(s[2 * i], s[2 * i + 1], 0, 1, 8, 9, 4, 5, 12, 13) +
           __builtin_shufflevector(s[2 * i], s[2 * i + 1], 2, 3, 10, 11, 6, 7, 14, 15);
  return __builtin_shufflevector(t[0], t[1], 0, 8, 2, 10, 4, 12, 6, 14) +
         __builtin_shufflevector(t[0], t[1], 1, 9, 3, 11, 5, 13, 7, 15);
#endif
}
#endif

// out[i] += the fixed-order sum of the kGroup floats at rows + i·kGroup, for i < count (rows
// past count, up to a whole vector, are read but feed only lanes that are not stored).
DS_FN void ds_add_group_sums(const float* rows, int64_t count, float* out) {
#if DS_VEC_WIDTH == 16
  for (int64_t i = 0; i < count; i += kW) {
    vf r[kW];
#pragma GCC unroll 16
    for (int j = 0; j < kW; ++j) r[j] = ds_load(rows + (i + j) * kGroup);
    const int64_t n = count - i < kW ? count - i : kW;
    ds_store_n(out + i, ds_load_n(out + i, n) + ds_tree_sums(r), n);
  }
#elif DS_VEC_WIDTH == 8
  for (int64_t i = 0; i < count; i += kW) {
    vf r[kW];  // the group's first step, x_i + x_{i+8}, then the 8-lane tree does the rest
#pragma GCC unroll 8
    for (int j = 0; j < kW; ++j) r[j] = ds_load(rows + (i + j) * kGroup) + ds_load(rows + (i + j) * kGroup + 8);
    const int64_t n = count - i < kW ? count - i : kW;
    ds_store_n(out + i, ds_load_n(out + i, n) + ds_tree_sums(r), n);
  }
#else
  for (int64_t i = 0; i < count; ++i) out[i] += ds_sum16(rows + i * kGroup);
#endif
}

// A sum over tokens: ds_token_add(acc, k, x) for the vector of tokens k .. k + kW − 1 (k a
// multiple of kW), then ds_token_total(acc); acc starts zero.
typedef vf DsTokenAcc[kGroup / kW];
DS_FN void ds_token_add(DsTokenAcc acc, int64_t k, vf x) {
  vf& a = acc[(k / kW) % (kGroup / kW)];
  a = a + x;
}
DS_FN float ds_token_total(const DsTokenAcc acc) {
  float lanes[kGroup];
#pragma GCC unroll 16
  for (int j = 0; j < kGroup / kW; ++j) ds_store(lanes + j * kW, acc[j]);
  return ds_sum16(lanes);
}

// log(1 + y) for y in [0, 1] (u = 1 + y rounded, corrected by the rounding error of u);
// Cephes' logf polynomial on the mantissa.
DS_FN vf ds_log1p_unit(vf y) {
  vf u = 1.0f + y;
  auto big = u > 1.41421356f;
  vf m = ds_where(big, 0.5f * u, u);
  vf e = ds_where(big, ds_fill<vf>(1.0f), ds_fill<vf>(0.0f));
  vf x = m - 1.0f;
  vf x2 = x * x;
  vf p = ds_fill<vf>(7.0376836292e-2f);
  p = p * x - 1.1514610310e-1f;
  p = p * x + 1.1676998740e-1f;
  p = p * x - 1.2420140846e-1f;
  p = p * x + 1.4249322787e-1f;
  p = p * x - 1.6668057665e-1f;
  p = p * x + 2.0000714765e-1f;
  p = p * x - 2.4999993993e-1f;
  p = p * x + 3.3333331174e-1f;
  p = p * x * x2;
  p = p + e * -2.12194440e-4f;
  p = p - 0.5f * x2;
  vf logu = x + p + e * 0.693359375f;
  return logu - ((u - 1.0f) - y) / u;
}

DS_FN vf ds_sigmoid(vf x) { return 1.0f / (1.0f + ds_exp(-x)); }
DS_FN vf ds_silu(vf x) { return x * ds_sigmoid(x); }
// torch's softplus (beta 1, threshold 20).
DS_FN vf ds_softplus(vf x) {
  vf pos = ds_where(x > 0.0f, x, ds_fill<vf>(0.0f));
  return ds_where(x > 20.0f, x, pos + ds_log1p_unit(ds_exp(-ds_abs(x))));
}
// softplus'(x) = σ(x) given sp = ds_softplus(x): 1 − e^{−sp} = e^x/(1 + e^x), as −expm1(−sp) so
// that it keeps its relative accuracy where σ is tiny; exactly 1 above the threshold, as torch.
DS_FN vf ds_sigmoid_from_softplus(vf x, vf sp) {
  vf e, em1;
  ds_exp_em1(-sp, e, em1);
  return ds_where(x > 20.0f, ds_fill<vf>(1.0f), -em1);
}
