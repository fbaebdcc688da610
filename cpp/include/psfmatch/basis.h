// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_BASIS_H
#define PSFMATCH_BASIS_H

#include <vector>

#include <Eigen/Core>

#include "psfmatch/kernel.h"

namespace psfmatch {

/// The Alard–Lupton basis (docs/algorithm.md §2.1), renormalised by renormalizeKernelList.
///
/// For each Gaussian i (σ = sigmas[i], degree d = degrees[i]) and each monomial u^p v^q with
/// p + q ≤ d, in the order 1, u, v, u², uv, v², …: the unit-sum Gaussian G_σ(u, v) sampled at
/// pixel centres times (u/halfWidth)^p (v/halfWidth)^q, on a (2·halfWidth+1)² grid. Every
/// kernel carries its exact separable decomposition. Throws InvalidInputError if
/// halfWidth < 1, a σ ≤ 0, a degree < 0, or the list lengths differ from nGauss.
KernelList makeAlardLuptonBasisList(int halfWidth, int nGauss, const std::vector<double>& sigmas,
                                    const std::vector<int>& degrees);

/// The renormalisation of docs/algorithm.md §2.2: B₀ → B₀/ΣB₀ (unit sum); each later kernel with
/// |Σ| > FLT_EPSILON becomes B/ΣB − B₀ (zero sum); every later kernel is then scaled to unit
/// L2 norm. An empty list gives an empty list; ΣB₀ = 0 throws InvalidInputError.
KernelList renormalizeKernelList(const KernelList& kernels);

/// width·height delta functions; kernel k = row·width + col is 1 at (col, row) (§2.4).
KernelList makeDeltaFunctionBasisList(int width, int height);

/// Which finite-difference operator the regularization penalises (§2.5).
enum class RegularizationType { CENTRAL_DIFFERENCE, FORWARD_DIFFERENCE };

/// H = BᵀB for a width×height delta-function kernel (docs/algorithm.md §2.5), plus an all-zero last
/// row and column when fitForBackground. Central difference: 5- or 9-point Laplacian inside,
/// borderPenalty on the outermost ring. Forward difference: the orders in `orders` (each 1..3),
/// tapering at the right and top edges. Throws InvalidInputError for a stencil other than 5 or
/// 9, an order outside 1..3, a negative borderPenalty or a non-positive size.
Eigen::MatrixXd makeRegularizationMatrix(int width, int height, RegularizationType type, int stencil,
                                         const std::vector<int>& orders, double borderPenalty,
                                         bool fitForBackground);

}  // namespace psfmatch

#endif
