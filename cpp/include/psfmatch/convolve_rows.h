// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_CONVOLVE_ROWS_H
#define PSFMATCH_CONVOLVE_ROWS_H

/// Internal: the 1-D row kernels every separable convolution in psfmatch is built from.
///
/// They are compiled for several instruction sets (SSE2, AVX2+FMA, AVX-512) and the best one the
/// CPU supports is chosen once at run time, so a portable build still runs wide vector code.
/// Each output value is one fixed sequence of multiply-adds over the taps in the order given,
/// whatever the row length or the position in the row, so a result never depends on how rows
/// or columns are split between threads or chunks.

#include <vector>

namespace psfmatch {
namespace detail {

/// The non-zero taps of a 1-D factor: out[x] += weight[t] · in[x − offset[t]] (along x) or
/// in row (y − offset[t]) (along y). Zero taps are dropped: a delta factor costs one tap.
template <typename Acc>
struct Taps {
    std::vector<long> offset;
    std::vector<Acc> weight;
    int size() const { return static_cast<int>(offset.size()); }
};

/// Vertical pass: out[x] = Σ_t w[t] · (top − off[t]·stride)[x] for x in [0, n).
/// `top` points at the input row of offset 0 (row y + cy for a kernel of centre cy).
void verticalPass(const float* top, long stride, const Taps<float>& taps, long n, float* out);
void verticalPass(const double* top, long stride, const Taps<double>& taps, long n, double* out);

/// Horizontal pass fused with a per-pixel coefficient and accumulation:
///   acc[x] += (Σ_p gamma[p] · poly[p·polyStride + x]) · Σ_t w[t] · src[x − off[t]]
/// for x in [0, n). With np = 0 the coefficient is 1.
void horizontalAccumulate(const float* src, const Taps<float>& taps, const float* poly, long polyStride,
                          const float* gamma, int np, long n, float* acc);
void horizontalAccumulate(const double* src, const Taps<double>& taps, const double* poly, long polyStride,
                          const double* gamma, int np, long n, double* acc);


}  // namespace detail
}  // namespace psfmatch

#endif
