// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_CONVOLVE_SPATIAL_H
#define PSFMATCH_CONVOLVE_SPATIAL_H

#include "psfmatch/convolve.h"
#include "psfmatch/spatial_function.h"

namespace psfmatch {

/// Convolution of a whole masked image with a spatially varying kernel.
///
/// Image plane, exact: out(x, y) = Σ_m a_m(x, y) (B_m ⊗ in)(x, y), regrouped as
/// Σ_c (Σ_k β_ck f_k(x, y)) (ky_c ⊗ kx_c ⊗ in)(x, y) over the distinct rank-one pieces of the
/// basis (a kernel without a decomposition is split exactly into its rows). Row by row, one
/// vertical pass per distinct ky serves all the pieces that share it, and each piece's
/// horizontal pass multiplies by its coefficient along the row; this equals evaluating K(x, y)
/// at every pixel and convolving. A float image is summed in float when the pieces cancel
/// little (Σ|coef_c|‖ky_c‖₁‖kx_c‖₁ ≤ 4 |Σ K|, error ≲ 1e-6 relative), otherwise in double.
///
/// Variance plane: K² on square tiles (256 px, halved while needed) is modelled as
/// Σ_r g_r(x, y) Q_r, the Q_r the principal components of K² sampled over the tile and
/// g_r = ⟨K²(x, y), Q_r⟩ — an exact quadratic form in the spatial terms, so it is evaluated at
/// every pixel — the Q_r applied as separable terms whose vertical factors they all share (the
/// leading eigenvectors of Σ_r Q_r Q_rᵀ, weighted), so one vertical pass serves every
/// component. At the tile's 25 sample points the relative L1 error of the modelled K² is
/// ≤ varianceTolerance (half to the components, the rest to the separable terms), which bounds
/// the relative error of a locally uniform variance.
/// Sums run in the pixel type.
///
/// Mask: OR over the union of the basis kernels' non-zero pixels. Border as `control` says.
/// (x0, y0) are the parent coordinates of pixel [0, 0], where the spatial functions are
/// evaluated. Results do not depend on control.nThreads.
template <typename T>
void convolveSpatial(const MaskedImageView<const T>& in, const MaskedImageView<T>& out, int x0, int y0,
                     const LinearCombinationKernel& kernel, const ConvolutionControl& control,
                     double varianceTolerance = 2.0e-4);

}  // namespace psfmatch

#endif
