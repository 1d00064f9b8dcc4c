// The avx512 build of the scan kernels (lane width 16); see ds_scan_kernel.h.
// Nothing but ds_params.h (C types only) is included outside the target pragma, so no
// inline function of a shared header is ever emitted with this build's instructions.
#include "ds_params.h"
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,bmi2")
#define DS_VEC_WIDTH 16
namespace ds_avx512 {
#include "ds_simd.h"
#include "ds_methods.h"
#include "ds_scan_kernel.h"
#include "ds_conv_kernel.h"
}  // namespace ds_avx512
#pragma GCC pop_options
