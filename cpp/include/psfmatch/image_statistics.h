// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_IMAGE_STATISTICS_H
#define PSFMATCH_IMAGE_STATISTICS_H

#include <cstdint>

#include "psfmatch/control.h"
#include "psfmatch/image.h"

namespace psfmatch {

/// Statistics of a difference image normalised by its noise, x·sqrt(1/var), over the pixels
/// with none of the bad mask bits and a finite inverse variance (docs/algorithm.md §3.6).
class ImageStatistics {
public:
    explicit ImageStatistics(const KernelControl& control) : _badBits(control.badMaskBits) {}

    /// Accumulates over the whole image, or, with core = r > 0, over rows [H/2-r, H/2+r] and
    /// columns [W/2-r, W/2+r] clipped to the image. Throws PsfMatchError if a sum is not finite.
    void apply(const MaskedImage& image, int core = 0);

    /// Σ/n of the normalised residuals; NaN if no pixel was used.
    double getMean() const;
    /// (Σx²/n − mean²)·n/(n−1); NaN for fewer than two pixels.
    double getVariance() const;
    double getRms() const;
    long getNpix() const { return _npix; }
    /// True when mean and rms are finite, |mean| ≤ candidateResidualMeanMax and
    /// rms ≤ candidateResidualStdMax.
    bool evaluateQuality(const KernelControl& control) const;

private:
    std::int32_t _badBits;
    double _xsum = 0.0;
    double _x2sum = 0.0;
    long _npix = 0;
};

}  // namespace psfmatch

#endif
