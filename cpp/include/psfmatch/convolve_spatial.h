// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_CONVOLVE_SPATIAL_H
#define PSFMATCH_CONVOLVE_SPATIAL_H

#include "psfmatch/convolve.h"
#include "psfmatch/spatial_function.h"

namespace psfmatch {

/// Convolution of a whole masked image with a spatially varying kernel.
///
/// Image plane, exact: out(x, y) = Σ_m a_m(x, y) (B_m ⊗ in)(x, y), regrouped as
/// Σ_c (Σ_k β_ck f_k(x, y)) (R_c ⊗ in)(x, y) over the distinct separable components R_c of the
/// basis (a basis kernel without a decomposition is one component), so each component is
/// convolved once. This equals evaluating K(x, y) at every pixel and convolving.
///
/// Variance plane: K² is held constant over square tiles. A tile is split until
/// ‖K²(corner) − K²(centre)‖₁ ≤ varianceTolerance · ‖K²(centre)‖₁ at all four corners, which bounds
/// the relative error of a locally uniform variance by the tolerance. Within a tile K² is
/// applied through a truncated SVD whose dropped part has L1 norm ≤ varianceTolerance/10.
///
/// Mask: OR over the union of the basis kernels' non-zero pixels. Border as `control` says.
/// (x0, y0) are the parent coordinates of pixel [0, 0], where the spatial functions are
/// evaluated.
template <typename T>
void convolveSpatial(const MaskedImageView<const T>& in, const MaskedImageView<T>& out, int x0, int y0,
                     const LinearCombinationKernel& kernel, const ConvolutionControl& control,
                     double varianceTolerance = 1.0e-3);

}  // namespace psfmatch

#endif
