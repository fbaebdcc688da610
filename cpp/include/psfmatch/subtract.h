// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_SUBTRACT_H
#define PSFMATCH_SUBTRACT_H

#include <cstdint>
#include <optional>

#include "psfmatch/image.h"
#include "psfmatch/spatial_function.h"

namespace psfmatch {

/// What `subtractMatched` computes besides the planes it is given.
struct SubtractionControl {
    /// false: the image subtracted from is the reference R (the science image, or its
    /// preconvolution P ⊗ S), D = R − M − b and V = V_R + V_M. true: the science image was
    /// convolved (R is the template), D = (M + b − R)/κ and V = (V_M + V_R)/κ².
    bool scienceConvolved = false;
    /// κ, the matching kernel's sum at the image centre (used only when scienceConvolved).
    double kappa = 1.0;
    std::int32_t edgeBit = 0;    ///< the EDGE plane's bit value
    std::int32_t noDataBit = 0;  ///< the NO_DATA plane's bit value
    /// Score mode: pixels outside this box (parent coordinates) are border too.
    std::optional<Box2I> innerBox;
    int nThreads = 0;  ///< threads over rows; 0 = all hardware threads
};

/// The difference image of a PSF-matched pair in one pass over the pixels (docs/algorithm.md §7.3 step 5, §7.4 step 7).
///
/// `reference` is the image subtracted from (see SubtractionControl::scienceConvolved), `matched`
/// the convolved image M, `targetMask` the mask of the image before it was convolved; all
/// (ny × nx) with pixel [0, 0] at parent (x0, y0). `background`, if not null, is b(x, y),
/// evaluated at every pixel from its row and column factors (no full-size image of it is made).
///
/// Arithmetic, pixel by pixel, is that of the plain float expressions it replaces: R − M in T,
/// then − b in double rounded once to T; with scienceConvolved, ((M + b) − R)/κ in double rounded
/// once, and V_M + V_R in T divided by κ·κ rounded to T. The mask is R's | M's. A border pixel —
/// EDGE in M's mask but not in the target's (the convolution's own border), or outside the inner
/// box — gets D = NaN, V = +inf and EDGE | NO_DATA added to its mask.
///
/// Writes into `out` (same shape, not overlapping the inputs). Results do not depend on
/// control.nThreads. Throws InvalidInputError if any plane differs in shape from reference.image,
/// or if scienceConvolved and κ is not finite or is zero.
template <typename T>
void subtractMatched(const MaskedImageView<const T>& reference, const MaskedImageView<const T>& matched,
                     const ImageView<const std::int32_t>& targetMask, const SpatialBackground* background, int x0,
                     int y0, const SubtractionControl& control, const MaskedImageView<T>& out);

}  // namespace psfmatch

#endif
