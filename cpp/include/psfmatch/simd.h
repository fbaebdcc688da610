// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_SIMD_H
#define PSFMATCH_SIMD_H

namespace psfmatch {

/// The instruction sets the hot loops are compiled for besides the portable baseline (SSE2
/// on x86-64), chosen at run time so that one wheel runs on any x86-64 machine.
enum class SimdLevel { BASELINE = 0, AVX2 = 1, AVX512 = 2 };

/// The widest level the kernels may use: the CPU's (AVX2 with FMA; AVX-512 F, VL, BW and DQ
/// with FMA), capped by the environment variable PSFMATCH_SIMD when it is "baseline", "avx2"
/// or "avx512" (other values are ignored). Read once, at the first call: set it before
/// psfmatch runs. For running the fallbacks on a machine that has more, and for comparing.
SimdLevel simdLevel();

/// "baseline", "avx2" or "avx512".
const char* simdLevelName(SimdLevel level);

}  // namespace psfmatch

#endif
