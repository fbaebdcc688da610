// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/simd.h"

#include <cstdlib>
#include <cstring>
#include <initializer_list>

namespace psfmatch {

namespace {

SimdLevel cpuLevel() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    const bool fma = __builtin_cpu_supports("fma") != 0;
    if (fma && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
        return SimdLevel::AVX512;
    }
    if (fma && __builtin_cpu_supports("avx2")) return SimdLevel::AVX2;
#endif
    return SimdLevel::BASELINE;
}

SimdLevel detect() {
    SimdLevel level = cpuLevel();
    if (const char* env = std::getenv("PSFMATCH_SIMD")) {
        for (SimdLevel cap : {SimdLevel::BASELINE, SimdLevel::AVX2, SimdLevel::AVX512}) {
            if (std::strcmp(env, simdLevelName(cap)) == 0 && cap < level) level = cap;
        }
    }
    return level;
}

}  // namespace

SimdLevel simdLevel() {
    static const SimdLevel level = detect();
    return level;
}

const char* simdLevelName(SimdLevel level) {
    switch (level) {
        case SimdLevel::AVX512:
            return "avx512";
        case SimdLevel::AVX2:
            return "avx2";
        case SimdLevel::BASELINE:
            break;
    }
    return "baseline";
}

}  // namespace psfmatch
