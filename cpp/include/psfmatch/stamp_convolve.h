// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_STAMP_CONVOLVE_H
#define PSFMATCH_STAMP_CONVOLVE_H

#include <Eigen/Core>

#include "psfmatch/image.h"
#include "psfmatch/kernel.h"

namespace psfmatch {

/// Convolutions of one candidate's stamps (tens of pixels on a side, a few thousand calls per
/// fit), single-threaded. Every output pixel is a sum over the kernel's non-zero pixels in
/// row-major order (a 1-D factor's in index order) of weight · input, each product rounded and
/// then added, never fused: the result is the same on every CPU, and it is the one the plain
/// loops of convolvePlane's direct method and convolveBasisOnGoodBox compute. The work is
/// register-blocked over up to 24 output columns, on AVX2 when the CPU has it.

/// out|_G = (kernelImage ⊗ in)|_G, G = goodBox of the kernel (true convolution, the convention
/// of convolvePlane); pixels of `out` outside G are left alone. `out` has the shape of `in`
/// and must not alias it. Throws InvalidInputError for mismatched shapes or an even-sized or
/// too large kernel image.
void convolveStampPlane(const ImageD& in, const ImageD& kernelImage, ImageD& out);

/// The design matrix of the per-candidate fit (docs/algorithm.md §3.2), bit for bit what
/// convolveBasisOnGoodBox returns: column k is (B_k ⊗ image)|_G flattened row by row, a
/// separable kernel's terms each as an x pass over every row then a y pass (passes shared by
/// kernels with equal factors), summed coef-weighted in term order; a kernel without a
/// decomposition by direct sums. Throws InvalidInputError for an empty or ragged basis or a
/// stamp smaller than the kernels.
Eigen::MatrixXd convolveBasisOnStamp(const ImageD& image, const KernelList& basis);
/// The same into `out`, which must be npix × basis.size(); its intermediate images live in
/// per-thread scratch that later calls reuse.
void convolveBasisOnStamp(const ImageD& image, const KernelList& basis, Eigen::Ref<Eigen::MatrixXd> out);

}  // namespace psfmatch

#endif
