// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_CONVOLVE_H
#define PSFMATCH_CONVOLVE_H

#include <cstdint>

#include <Eigen/Core>

#include "psfmatch/image.h"
#include "psfmatch/kernel.h"

namespace psfmatch {

/// Which algorithm convolves a plane. AUTO takes the separable passes when the kernel has a
/// decomposition that costs fewer multiply-adds than its non-zero pixels.
enum class ConvolutionMethod { AUTO, DIRECT, SEPARABLE };

/// How a masked image is convolved (docs/algorithm.md §0).
struct ConvolutionControl {
    bool doNormalize = false;      ///< divide by the kernel sum (variance by its square)
    bool doCopyEdge = false;       ///< border pixels: copy the input and set edgeBit
    std::int32_t edgeBit = 0;      ///< set on copied border pixels
    std::int32_t noDataBit = 0;    ///< set on NaN border pixels (the default border)
    ConvolutionMethod method = ConvolutionMethod::AUTO;
    int nThreads = 0;              ///< 0 = all hardware threads
};

/// The box, in local pixel indices, of the output pixels a (kw × kh) kernel can compute on an
/// (nx × ny) image: x in [cx, nx-1-(kw-1-cx)], likewise y. Empty if the image is too small.
Box2I goodBox(long nx, long ny, int kw, int kh);

/// True convolution of one plane: out(y, x) = scale · Σ_{j,i} K[j, i] · in(y - j + cy, x - i + cx),
/// the convention of scipy.signal.convolve (docs/decisions.md D1). Only the good box of `out` is written.
/// Sums run in double precision. Throws InvalidInputError if the shapes differ or the image is
/// smaller than the kernel.
template <typename Tin, typename Tout>
void convolvePlane(ImageView<const Tin> in, ImageView<Tout> out, const FixedKernel& kernel, double scale = 1.0,
                   ConvolutionMethod method = ConvolutionMethod::AUTO, int nThreads = 0);

/// The mask of a convolution: out(y, x) = OR of in over every pixel under a non-zero kernel pixel.
/// Only the good box of `out` is written.
void convolveMaskPlane(ImageView<const std::int32_t> in, ImageView<std::int32_t> out, const FixedKernel& kernel,
                       int nThreads = 0);

/// The border of a convolution with a (kw × kh) kernel: every pixel of `out` outside
/// goodBox(nx, ny, kw, kh), which no kernel position reaches. With control.doCopyEdge it gets
/// the input's image and variance and the input's mask | edgeBit; otherwise image NaN,
/// variance +inf and the input's mask | noDataBit. The good box of `out` is not touched.
/// `out` must have the shape of `in`. convolveMaskedImage and convolveSpatial end with it.
template <typename T>
void fillConvolutionBorder(const MaskedImageView<const T>& in, const MaskedImageView<T>& out, int kw, int kh,
                           const ConvolutionControl& control);

/// Convolution of a masked image (docs/algorithm.md §0): image with K, variance with K², mask
/// dilated under the non-zero pixels of K, and the border filled as `control` says.
/// `out` must have the shape of `in` and must not alias it.
template <typename T>
void convolveMaskedImage(const MaskedImageView<const T>& in, const MaskedImageView<T>& out, const FixedKernel& kernel,
                         const ConvolutionControl& control);

/// The same for an owned double-precision masked image (stamps); returns the result.
MaskedImage convolveMaskedImage(const MaskedImage& in, const FixedKernel& kernel, const ConvolutionControl& control);

/// The convolutions of one image plane with every kernel of a basis, restricted to the good
/// box: column k is (B_k ⊗ image)|_G flattened row by row. Separable basis kernels share their
/// 1-D passes (an x factor used by several kernels is applied once). This is the design
/// matrix C of the per-candidate least-squares problem (docs/algorithm.md §3.2).
Eigen::MatrixXd convolveBasisOnGoodBox(const ImageD& image, const KernelList& basis);

}  // namespace psfmatch

#endif
