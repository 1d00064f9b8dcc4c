// Torch binding of the fused CPU selective scan and of the depthwise causal conv1d (+ SiLU) that
// precedes it in a Mamba block: checks arguments, lays the inputs out for the kernels (fp32, B and
// C token-major and padded; token rows read in place), picks the instruction set at run time and
// runs the kernels over (batch, channel) pairs with at::parallel_for.
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "ds_params.h"

namespace {

using Tensor = torch::Tensor;
using OptTensor = std::optional<Tensor>;

using ForwardFn = void (*)(const DsScanParams&, int, int64_t, int64_t, float*);
using BackwardFn = void (*)(const DsScanParams&, int, int64_t, int64_t, int64_t, float*);
using ConvFn = void (*)(const DsConvParams&, int64_t, int64_t, float*);

struct Isa {
  const char* name;
  int64_t width;  // lanes of the build's vectors
  ForwardFn forward;
  BackwardFn backward;
  ConvFn conv_forward, conv_backward;        // over (batch, channel) rows
  ConvFn conv_forward_tm, conv_backward_tm;  // token-major: over (batch, channel block) units
};

#define DS_ISA(ns, name, width)                                                                 \
  {                                                                                             \
    name, width, ns::forward_part, ns::backward_part, ns::conv_forward_part, ns::conv_backward_part, \
        ns::conv_forward_tm_part, ns::conv_backward_tm_part                                   \
  }
const Isa kIsas[] = {DS_ISA(ds_avx512, "avx512", 16), DS_ISA(ds_avx2, "avx2", 8), DS_ISA(ds_scalar, "scalar", 1)};
#undef DS_ISA

bool cpu_supports(const std::string& name) {
  __builtin_cpu_init();
  if (name == "avx512")
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (name == "avx2") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return name == "scalar";
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> out;
  for (const Isa& isa : kIsas)
    if (cpu_supports(isa.name)) out.push_back(isa.name);
  return out;
}

// "auto": the widest this CPU runs; a named one must be supported here.
const Isa& pick_isa(const std::string& requested) {
  std::string valid = "auto";
  for (const Isa& isa : kIsas) {
    valid += std::string(", ") + isa.name;
    if (requested == "auto" ? cpu_supports(isa.name) : requested == isa.name) {
      TORCH_CHECK(cpu_supports(isa.name), "discbench CPU scan: isa '", requested,
                  "' is not supported by this CPU; supported: ", c10::Join(", ", supported_isas()));
      return isa;
    }
  }
  TORCH_CHECK(false, "discbench CPU scan: unknown isa '", requested, "'; valid: ", valid);
}

int method_id(const std::string& key) {
#define DS_MATCH(id, name, ...) \
  if (key == name) return id;
  DS_METHOD_LIST(DS_MATCH)
#undef DS_MATCH
  std::string valid;
#define DS_NAME(id, name, ...) valid += std::string(valid.empty() ? "" : ", ") + name;
  DS_METHOD_LIST(DS_NAME)
#undef DS_NAME
  TORCH_CHECK(false, "discbench CPU scan: unknown method '", key, "'; valid: ", valid);
}

bool method_takes_lam(int id) {
#define DS_LAM(mid, name, takes_lam, ...) \
  if (id == mid) return takes_lam;
  DS_METHOD_LIST(DS_LAM)
#undef DS_LAM
  return false;
}

void check_tensor(const char* name, const Tensor& t, c10::IntArrayRef shape) {
  TORCH_CHECK(t.device().is_cpu(), "discbench CPU scan: ", name, " must be a CPU tensor, got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kBFloat16,
              "discbench CPU scan: ", name, " must be float32 or bfloat16, got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, "discbench CPU scan: ", name, " must have shape ", shape, ", got ",
              t.sizes());
}

// Pairs are cut into more parts than threads, handed out dynamically: when another process holds
// a core, the other threads take over its share instead of the whole call waiting for it. Part
// sizes shrink geometrically (guided scheduling), so the parts handed out last are small and a
// thread that runs out of work waits only for a small part at the end. The boundaries depend on
// the pair count alone, not on the thread count: the backward sums a (batch, group) slab's dB/dC
// per part, so parts that moved with the threads would move the last bits of dB and dC with how
// many threads a run had (as they did when this was 8 parts per thread).
// `run(part, begin, end, scratch)` gets the part's contiguous range of pairs and scratch_floats
// floats of scratch.
constexpr int64_t kParts = 64;        // 8 per thread up to 8 threads
constexpr double kPartShrink = 0.85;  // size of a part relative to the one before it

int64_t parts_for(int64_t pairs) { return std::max<int64_t>(1, std::min<int64_t>(pairs, kParts)); }

// bounds[p] .. bounds[p + 1] are part p's pairs; every part gets at least one.
std::vector<int64_t> part_bounds(int64_t pairs, int64_t parts) {
  std::vector<int64_t> bounds(parts + 1);
  const double total = 1.0 - std::pow(kPartShrink, (double)parts);
  for (int64_t p = 0; p <= parts; ++p)
    bounds[p] = std::llround(pairs * (1.0 - std::pow(kPartShrink, (double)p)) / total);
  bounds[0] = 0;
  bounds[parts] = pairs;
  for (int64_t p = 1; p < parts; ++p)
    bounds[p] = std::min(std::max(bounds[p], bounds[p - 1] + 1), pairs - (parts - p));
  return bounds;
}

template <class F>
void for_parts(int64_t pairs, int64_t parts, int64_t scratch_floats, const F& run) {
  if (pairs == 0) return;
  const std::vector<int64_t> bounds = part_bounds(pairs, parts);
  std::atomic<int64_t> next{0};
  at::parallel_for(0, std::min<int64_t>(at::get_num_threads(), parts), 1, [&](int64_t, int64_t) {
    std::vector<float> scratch(scratch_floats);
    for (int64_t part = next.fetch_add(1); part < parts; part = next.fetch_add(1))
      run(part, bounds[part], bounds[part + 1], scratch.data());
  });
}

Tensor f32(const Tensor& t) { return t.to(torch::kFloat32).contiguous(); }
const float* ptr_or_null(const std::optional<Tensor>& t) { return t ? t->data_ptr<float>() : nullptr; }
std::optional<Tensor> f32_opt(const OptTensor& t) {
  return t ? std::optional<Tensor>(f32(*t)) : std::nullopt;
}

// (b, g, n, l) -> (b, g, kPadFront + l + kPadBack, NP), zero padded: each token's n contiguous,
// in scan order (last token first when `reverse`). B and C are read with their strides (in Vim
// they are (b, l, n) slices of x_proj's token-major output, which is this layout already).
Tensor pack_tokens(const Tensor& B, int64_t state_pad, bool reverse) {
  const int64_t b = B.size(0), g = B.size(1), n = B.size(2), l = B.size(3);
  Tensor out = torch::zeros({b, g, l + kPadFront + kPadBack, state_pad}, B.options().dtype(torch::kFloat32));
  const Tensor src = B.to(torch::kFloat32);
  const float* in = src.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const int64_t sb = src.stride(0), sg = src.stride(1), sn = src.stride(2), sl = src.stride(3);
  const int64_t rows = l + kPadFront + kPadBack;
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t gi = 0; gi < g; ++gi)
      for (int64_t k = 0; k < l; ++k) {
        const float* token = in + bi * sb + gi * sg + (reverse ? l - 1 - k : k) * sl;
        float* row = dst + ((bi * g + gi) * rows + kPadFront + k) * state_pad;
        for (int64_t i = 0; i < n; ++i) row[i] = token[i * sn];
      }
  return out;
}

Tensor unpack_tokens(const Tensor& packed, int64_t n, int64_t l, bool reverse) {
  Tensor tokens = packed.narrow(2, kPadFront, l).narrow(3, 0, n);
  return (reverse ? tokens.flip(2) : tokens).transpose(2, 3);
}

// A (b, d, l) input in fp32 with its batch and channel strides kept, so a channel slice of a
// wider tensor or a λ shared by the channels (an expanded view, stride 0 along d) is read without
// a copy. Strided tokens (a token-major (b, l, ·) projection) are made contiguous by ATen's
// blocked transpose rather than gathered per (batch, channel) row in the kernel: tokens 1.5–3 KB
// apart fall into a few L1 sets and miss, so the kernels always see contiguous tokens.
Tensor token_rows(const Tensor& t) {
  Tensor out = t.to(torch::kFloat32);
  return out.size(2) > 1 && out.stride(2) != 1 ? out.contiguous() : out;
}
DsRowStrides row_strides(const OptTensor& t) {
  if (!t) return DsRowStrides{0, 0, 1};
  return DsRowStrides{t->stride(0), t->stride(1), t->size(2) > 1 ? t->stride(2) : 1};
}

// The validated call: shapes, devices, dtypes, fp32 copies and the kernel layouts.
struct Call {
  int64_t b, d, l, n, g, np;
  Tensor u, delta, A, Bt, Ct;  // u, delta (and z, lam) as token_rows: strides kept
  OptTensor D, z, delta_bias, lam, delta_proj;
  int method;
  bool reverse;
  const Isa* isa;

  Call(const Tensor& u_, const Tensor& delta_, const Tensor& A_, const Tensor& B_, const Tensor& C_,
       const OptTensor& D_, const OptTensor& z_, const OptTensor& bias_, const OptTensor& lam_,
       const OptTensor& proj_, const std::string& key, bool reverse_, const std::string& isa_name)
      : reverse(reverse_) {
    TORCH_CHECK(u_.dim() == 3, "discbench CPU scan: u must be (b, d, l), got shape ", u_.sizes());
    b = u_.size(0), d = u_.size(1), l = u_.size(2);
    TORCH_CHECK(A_.dim() == 2 && A_.size(0) == d, "discbench CPU scan: A must be (d=", d,
                ", n), got shape ", A_.sizes());
    n = A_.size(1);
    TORCH_CHECK(B_.dim() == 4 && C_.dim() == 4, "discbench CPU scan: B and C must be (b, g, n, l), got ",
                B_.sizes(), " and ", C_.sizes());
    g = B_.size(1);
    TORCH_CHECK(g > 0 && d % g == 0, "discbench CPU scan: B has ", g, " groups, which must divide d=", d);
    check_tensor("u", u_, {b, d, l});
    if (proj_) {  // delta holds dt_proj's input, (b, rank, l); Δ = delta_proj · delta
      TORCH_CHECK(proj_->dim() == 2 && proj_->size(0) == d && proj_->size(1) > 0,
                  "discbench CPU scan: delta_proj must be (d=", d, ", rank), got shape ", proj_->sizes());
      check_tensor("delta_proj", *proj_, {d, proj_->size(1)});
      check_tensor("delta", delta_, {b, proj_->size(1), l});
    } else {
      check_tensor("delta", delta_, {b, d, l});
    }
    check_tensor("A", A_, {d, n});
    check_tensor("B", B_, {b, g, n, l});
    check_tensor("C", C_, {b, g, n, l});
    if (D_) check_tensor("D", *D_, {d});
    if (z_) check_tensor("z", *z_, {b, d, l});
    if (bias_) check_tensor("delta_bias", *bias_, {d});
    if (lam_) check_tensor("lam", *lam_, {b, d, l});
    method = method_id(key);
    TORCH_CHECK(method_takes_lam(method) == lam_.has_value(), "discbench CPU scan: method '", key,
                method_takes_lam(method) ? "' needs lam" : "' takes no lam");
    isa = &pick_isa(isa_name);
    np = (n + kStateAlign - 1) / kStateAlign * kStateAlign;
    u = token_rows(u_);
    delta = token_rows(delta_);
    // Padded state lanes get a = −1 (finite weights) and B = C = 0, so they stay 0 throughout.
    A = torch::full({d, np}, -1.0f, u.options());
    A.narrow(1, 0, n).copy_(A_);
    Bt = pack_tokens(B_, np, reverse);
    Ct = pack_tokens(C_, np, reverse);
    D = f32_opt(D_);
    if (z_) z = token_rows(*z_);
    delta_bias = f32_opt(bias_);
    if (lam_) lam = token_rows(*lam_);
    delta_proj = f32_opt(proj_);
  }

  int64_t n_ckpt() const { return (l + kCkptEvery - 1) / kCkptEvery; }

  DsScanParams params(bool softplus) const {
    DsScanParams p{};
    p.batch = b, p.dim = d, p.len = l, p.state_pad = np, p.groups = g, p.chan_per_group = d / g;
    p.n_ckpt = n_ckpt();
    p.u = u.data_ptr<float>(), p.delta = delta.data_ptr<float>(), p.A = A.data_ptr<float>();
    p.Bt = Bt.data_ptr<float>(), p.Ct = Ct.data_ptr<float>();
    p.D = ptr_or_null(D), p.z = ptr_or_null(z), p.delta_bias = ptr_or_null(delta_bias);
    p.lam = ptr_or_null(lam);
    p.u_strides = row_strides(u), p.delta_strides = row_strides(delta), p.z_strides = row_strides(z);
    p.lam_strides = row_strides(lam);
    p.delta_proj = ptr_or_null(delta_proj);
    p.delta_rank = delta_proj ? delta_proj->size(1) : 0;
    p.softplus = softplus;
    p.reverse = reverse;
    return p;
  }
};

// Returns [out (u's dtype), last_state (b, d, n) or empty, ckpt or empty, y before the gate or
// empty]; ckpt and y are what `backward` needs (only when `for_backward`). With `reverse` the
// scan runs from the last token to the first (the flipped scan of a bidirectional block) while
// inputs and output stay in token order: flip(scan(flip(inputs))) without the copies. With
// delta_proj (d, rank), delta is (b, rank, l) and Δ before its bias is delta_proj · delta, per
// batch element, computed inside the kernel (Mamba's dt_proj without writing Δ out).
std::vector<Tensor> forward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                            const Tensor& C, const OptTensor& D, const OptTensor& z,
                            const OptTensor& delta_bias, const OptTensor& lam, const OptTensor& delta_proj,
                            bool softplus, const std::string& method, bool reverse, bool return_last_state,
                            bool for_backward, const std::string& isa) {
  Call call(u, delta, A, B, C, D, z, delta_bias, lam, delta_proj, method, reverse, isa);
  auto opts = call.u.options();
  Tensor out = torch::empty({call.b, call.d, call.l}, opts);
  Tensor last = return_last_state ? torch::zeros({call.b, call.d, call.np}, opts) : Tensor();
  Tensor ckpt = for_backward ? torch::empty({call.b, call.d, call.n_ckpt(), call.np}, opts) : Tensor();
  Tensor ypre = for_backward && z ? torch::empty({call.b, call.d, call.l}, opts) : Tensor();
  DsScanParams p = call.params(softplus);
  p.out = out.data_ptr<float>();
  p.last_state = last.defined() ? last.data_ptr<float>() : nullptr;
  p.ckpt = ckpt.defined() ? ckpt.data_ptr<float>() : nullptr;
  p.ypre = ypre.defined() ? ypre.data_ptr<float>() : nullptr;
  const int64_t pairs = call.b * call.d;
  const ForwardFn fn = call.isa->forward;
  const int id = call.method;
  for_parts(pairs, parts_for(pairs), ds_scratch_floats(call.l, call.isa->width), [&](int64_t, int64_t begin, int64_t end, float* scratch) {
    fn(p, id, begin, end, scratch);
  });
  Tensor last_out = last.defined() ? last.narrow(2, 0, call.n).to(u.scalar_type()) : Tensor();
  return {out.to(u.scalar_type()), last_out, ckpt, ypre};
}

// Gradients [du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dlam], each in its input's dtype
// (undefined for an absent optional input; dlam (b, d, l) even for an expanded lam). With
// delta_proj, ddelta is the fp32 gradient of Δ before its bias, (b, d, l): the caller takes it
// through the projection (two small products).
// dlast: gradient of the returned last state, if any.
std::vector<Tensor> backward(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                             const Tensor& C, const OptTensor& D, const OptTensor& z,
                             const OptTensor& delta_bias, const OptTensor& lam, const OptTensor& delta_proj,
                             bool softplus, const std::string& method, bool reverse, const Tensor& ckpt,
                             const OptTensor& ypre, const Tensor& dout, const OptTensor& dlast,
                             const std::string& isa) {
  Call call(u, delta, A, B, C, D, z, delta_bias, lam, delta_proj, method, reverse, isa);
  check_tensor("dout", dout, {call.b, call.d, call.l});
  TORCH_CHECK(ckpt.sizes() == c10::IntArrayRef({call.b, call.d, call.n_ckpt(), call.np}),
              "discbench CPU scan: checkpoints do not match the inputs");
  TORCH_CHECK(!z || ypre, "discbench CPU scan: a gated backward needs the forward's y");
  auto opts = call.u.options();
  const int64_t b = call.b, d = call.d, l = call.l, g = call.g, np = call.np, pairs = b * d;
  const int64_t rows = l + kPadFront + kPadBack;
  const int64_t n_parts = parts_for(pairs);

  Tensor dout32 = f32(dout);
  Tensor dlast_pad;
  if (dlast) {
    check_tensor("dlast", *dlast, {b, d, call.n});
    dlast_pad = torch::zeros({b, d, np}, opts);
    dlast_pad.narrow(2, 0, call.n).copy_(*dlast);
  }
  Tensor ckpt32 = ckpt.contiguous();
  Tensor ypre32 = ypre ? ypre->contiguous() : Tensor();
  Tensor du = torch::empty({b, d, l}, opts), ddelta = torch::empty({b, d, l}, opts);
  Tensor dA_part = torch::empty({b, d, np}, opts);
  Tensor dB = torch::zeros({b, g, rows, np}, opts), dC = torch::zeros({b, g, rows, np}, opts);
  Tensor dD_part = torch::empty({b, d}, opts), ddb_part = torch::empty({b, d}, opts);
  Tensor dz = z ? torch::empty({b, d, l}, opts) : Tensor();
  Tensor dlam = lam ? torch::empty({b, d, l}, opts) : Tensor();
  Tensor slab_parts = torch::empty({n_parts, 2, 2, rows, np}, opts);  // a part zeroes the slots it uses
  Tensor slab_ids = torch::full({n_parts, 2}, -1, opts.dtype(torch::kInt64));

  DsScanParams p = call.params(softplus);
  p.ckpt = ckpt32.data_ptr<float>();
  p.ypre = ypre32.defined() ? ypre32.data_ptr<float>() : nullptr;
  p.dout = dout32.data_ptr<float>();
  p.dlast = dlast_pad.defined() ? dlast_pad.data_ptr<float>() : nullptr;
  p.du = du.data_ptr<float>(), p.ddelta = ddelta.data_ptr<float>();
  p.dA_part = dA_part.data_ptr<float>(), p.dB = dB.data_ptr<float>(), p.dC = dC.data_ptr<float>();
  p.dD_part = dD_part.data_ptr<float>(), p.ddb_part = ddb_part.data_ptr<float>();
  p.dz = dz.defined() ? dz.data_ptr<float>() : nullptr;
  p.dlam = dlam.defined() ? dlam.data_ptr<float>() : nullptr;
  p.slab_parts = slab_parts.data_ptr<float>();
  p.slab_part_ids = slab_ids.data_ptr<int64_t>();
  const BackwardFn fn = call.isa->backward;
  const int id = call.method;
  for_parts(pairs, n_parts, ds_scratch_floats(l, call.isa->width), [&](int64_t part, int64_t begin, int64_t end, float* scratch) {
    fn(p, id, part, begin, end, scratch);
  });
  // Shared slabs, summed in part order: the parts are fixed by the shape, so results depend
  // neither on which thread ran which part nor on how many threads there were.
  // Plain loops, not ATen ops: at small shapes (b = 64, l = 40) the 128 slots' indexing and
  // add_ calls cost more in dispatch than the additions themselves.
  const int64_t* ids = slab_ids.data_ptr<int64_t>();
  const int64_t slab = rows * np;
  float* dB_data = dB.data_ptr<float>();
  float* dC_data = dC.data_ptr<float>();
  const float* parts = slab_parts.data_ptr<float>();
  for (int64_t slot = 0; slot < n_parts * 2; ++slot) {
    if (ids[slot] < 0) continue;
    const float* from = parts + slot * 2 * slab;  // slab_parts[slot / 2][slot % 2] = [dB part, dC part]
    float* to_B = dB_data + ids[slot] * slab;
    float* to_C = dC_data + ids[slot] * slab;
    for (int64_t i = 0; i < slab; ++i) to_B[i] += from[i];
    for (int64_t i = 0; i < slab; ++i) to_C[i] += from[slab + i];
  }
  auto like = [](const Tensor& grad, const Tensor& input) { return grad.to(input.scalar_type()); };
  return {like(du, u),
          call.delta_proj ? ddelta : like(ddelta, delta),
          like(dA_part.sum(0).narrow(1, 0, call.n), A),
          like(unpack_tokens(dB, call.n, l, reverse), B).contiguous(),
          like(unpack_tokens(dC, call.n, l, reverse), C).contiguous(),
          D ? like(dD_part.sum(0), *D) : Tensor(),
          z ? like(dz, *z) : Tensor(),
          delta_bias ? like(ddb_part.sum(0), *delta_bias) : Tensor(),
          lam ? like(dlam, *lam) : Tensor()};
}

// ----------------------------------------------------------------------------- causal conv1d

// The validated arguments of the depthwise causal conv1d: x (b, d, l) read in place (any
// strides), weight (d, w), bias (d) or none, all fp32 for the kernels.
struct ConvCall {
  int64_t b, d, l, w;
  Tensor x, weight;
  OptTensor bias;
  const Isa* isa;

  ConvCall(const Tensor& x_, const Tensor& weight_, const OptTensor& bias_, const std::string& isa_name) {
    TORCH_CHECK(x_.dim() == 3, "discbench CPU causal conv1d: x must be (b, d, l), got shape ", x_.sizes());
    TORCH_CHECK(weight_.dim() == 2 && weight_.size(0) == x_.size(1) && weight_.size(1) >= 1,
                "discbench CPU causal conv1d: weight must be (d=", x_.size(1), ", width ≥ 1), got shape ",
                weight_.sizes());
    b = x_.size(0), d = x_.size(1), l = x_.size(2), w = weight_.size(1);
    check_tensor("x", x_, {b, d, l});
    check_tensor("weight", weight_, {d, w});
    if (bias_) check_tensor("bias", *bias_, {d});
    isa = &pick_isa(isa_name);
    x = x_.to(torch::kFloat32);  // strides kept: token-major x takes the _tm kernels
    weight = f32(weight_);
    bias = f32_opt(bias_);
  }

  DsConvParams params(bool silu, bool reverse) const {
    DsConvParams p{};
    p.batch = b, p.dim = d, p.len = l, p.width = w;
    p.x = x.data_ptr<float>(), p.weight = weight.data_ptr<float>(), p.bias = ptr_or_null(bias);
    p.x_strides = row_strides(x);
    p.silu = silu, p.reverse = reverse;
    return p;
  }

  // An fp32 (b, d, l) tensor laid out like x: token-major (b, l, d) memory when x's channels are
  // closer together than its tokens (a slice of Vim's (b, l, 2d) projection), else channel-major.
  Tensor empty_like_x() const {
    if (x.stride(1) < x.stride(2)) return torch::empty({b, l, d}, x.options()).transpose(1, 2);
    return torch::empty({b, d, l}, x.options());
  }

  bool token_major() const { return x.stride(1) == 1 && d > 1; }

  // Runs the row kernel over (batch, channel) rows, or in the token-major layout the _tm kernel
  // over (batch, block of 16 channels) units.
  template <class F>
  void run(bool tm, const F& fn) const {
    const int64_t units = tm ? b * ((d + kStateAlign - 1) / kStateAlign) : b * d;
    for_parts(units, parts_for(units), ds_conv_scratch_floats(l, w),
              [&](int64_t, int64_t begin, int64_t end, float* scratch) { fn(begin, end, scratch); });
  }
};

// silu(bias + depthwise causal conv1d(x)) (b, d, l) in x's dtype, laid out like x (empty_like_x);
// `reverse`: the conv runs from the last token to the first (token t sees t … t + w − 1), i.e. flip(conv(flip(x))).
Tensor conv_forward(const Tensor& x, const Tensor& weight, const OptTensor& bias, bool silu, bool reverse,
                    const std::string& isa) {
  ConvCall call(x, weight, bias, isa);
  Tensor out = call.empty_like_x();
  DsConvParams p = call.params(silu, reverse);
  p.out = out.data_ptr<float>();
  p.out_strides = row_strides(out);
  const bool tm = call.token_major();
  const ConvFn fn = tm ? call.isa->conv_forward_tm : call.isa->conv_forward;
  call.run(tm, [&](int64_t begin, int64_t end, float* scratch) { fn(p, begin, end, scratch); });
  return out.to(x.scalar_type());
}

// [dx, dweight, dbias (undefined without bias)], each in its input's dtype.
std::vector<Tensor> conv_backward(const Tensor& x, const Tensor& weight, const OptTensor& bias, bool silu,
                                  bool reverse, const Tensor& dout, const std::string& isa) {
  ConvCall call(x, weight, bias, isa);
  check_tensor("dout", dout, {call.b, call.d, call.l});
  auto opts = call.x.options();
  const bool tm = call.token_major();
  Tensor dout32 = dout.to(torch::kFloat32);
  if (tm && dout32.stride(1) != 1) dout32 = dout32.transpose(1, 2).contiguous().transpose(1, 2);
  Tensor dx = call.empty_like_x();
  Tensor dw_part = torch::empty({call.b, call.d, call.w}, opts), db_part = torch::empty({call.b, call.d}, opts);
  DsConvParams p = call.params(silu, reverse);
  p.dout = dout32.data_ptr<float>();
  p.dout_strides = row_strides(dout32);
  p.dx = dx.data_ptr<float>(), p.out_strides = row_strides(dx), p.dw_part = dw_part.data_ptr<float>(), p.db_part = db_part.data_ptr<float>();
  const ConvFn fn = tm ? call.isa->conv_backward_tm : call.isa->conv_backward;
  call.run(tm, [&](int64_t begin, int64_t end, float* scratch) { fn(p, begin, end, scratch); });
  return {dx.to(x.scalar_type()), dw_part.sum(0).to(weight.scalar_type()),
          bias ? db_part.sum(0).to(bias->scalar_type()) : Tensor()};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "discbench fused CPU selective scan (csrc/)";
  m.def("forward", &forward, "selective scan forward");
  m.def("backward", &backward, "selective scan backward");
  m.def("conv_forward", &conv_forward, "depthwise causal conv1d (+ SiLU) forward");
  m.def("conv_backward", &conv_backward, "depthwise causal conv1d (+ SiLU) backward");
  m.def("supported_isas", &supported_isas, "instruction sets this CPU runs, widest first");
  m.def("method_keys", []() {
    std::vector<std::string> keys;
#define DS_KEY(id, name, ...) keys.push_back(name);
    DS_METHOD_LIST(DS_KEY)
#undef DS_KEY
    return keys;
  });
}
