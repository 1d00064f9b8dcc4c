// The scalar build of the scan kernels (lane width 1); see ds_scan_kernel.h.
// Nothing but ds_params.h (C types only) is included outside the target pragma, so no
// inline function of a shared header is ever emitted with this build's instructions.
#include "ds_params.h"
#define DS_VEC_WIDTH 1
namespace ds_scalar {
#include "ds_simd.h"
#include "ds_methods.h"
#include "ds_scan_kernel.h"
#include "ds_conv_kernel.h"
}  // namespace ds_scalar
