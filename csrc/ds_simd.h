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
DS_FN float ds_hsum(vf v) { return v; }
DS_FN vi ds_to_int(vf v) { return (int)v; }
DS_FN vf ds_bits_to_float(vi v) { return __builtin_bit_cast(float, v); }
#else
typedef float vf __attribute__((vector_size(DS_VEC_WIDTH * 4)));
typedef int vi __attribute__((vector_size(DS_VEC_WIDTH * 4)));
typedef float vf_unaligned __attribute__((vector_size(DS_VEC_WIDTH * 4), aligned(4), may_alias));
typedef float vf8 __attribute__((vector_size(32)));
typedef float vf4 __attribute__((vector_size(16)));
DS_FN vf ds_load(const float* p) { return *reinterpret_cast<const vf_unaligned*>(p); }
DS_FN void ds_store(float* p, vf v) { *reinterpret_cast<vf_unaligned*>(p) = v; }
DS_FN float ds_hsum(vf v) {
#if DS_VEC_WIDTH == 16
  vf8 s8 = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
           __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
#else
  vf8 s8 = v;
#endif
  vf4 s4 = __builtin_shufflevector(s8, s8, 0, 1, 2, 3) + __builtin_shufflevector(s8, s8, 4, 5, 6, 7);
  s4 = s4 + __builtin_shufflevector(s4, s4, 2, 3, 0, 1);
  return s4[0] + s4[1];
}
DS_FN vi ds_to_int(vf v) { return __builtin_convertvector(v, vi); }
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
DS_FN vf ds_max(vf x, float lo) { return ds_where(x < lo, ds_fill<vf>(lo), x); }

// e^x to about 1 ulp (Cody–Waite reduction, Cephes' degree-6 polynomial). The scale 2^k is
// applied in two halves so denormal results (x down to −103.9) and overflow to +inf are exact
// limits; nan propagates.
DS_FN vf ds_exp(vf x) {
  vf xc = ds_where(x < -104.0f, ds_fill<vf>(-104.0f), x);
  xc = ds_where(xc > 89.0f, ds_fill<vf>(89.0f), xc);
  // Round to nearest by the 1.5·2^23 trick (|x log2 e| < 2^22 here).
  vf k = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  vf r = xc - k * 0.693359375f;
  r = r - k * -2.12194440e-4f;
  vf p = ds_fill<vf>(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  vi ki = ds_to_int(k);
  vi k1 = ki >> 1;
  vi k2 = ki - k1;
  vf s1 = ds_bits_to_float((k1 + 127) << 23);
  vf s2 = ds_bits_to_float((k2 + 127) << 23);
  vf out = p * s1 * s2;
  return ds_where(x < -104.0f, ds_fill<vf>(0.0f), out);
}
