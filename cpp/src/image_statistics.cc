// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/image_statistics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "psfmatch/errors.h"

namespace psfmatch {

void ImageStatistics::apply(const MaskedImage& image, int core) {
    image.checkConsistent("ImageStatistics.apply");
    _xsum = _x2sum = 0.0;
    _npix = 0;
    long y0 = 0, y1 = image.getHeight() - 1, x0 = 0, x1 = image.getWidth() - 1;
    if (core > 0) {
        const long cy = image.getHeight() / 2, cx = image.getWidth() / 2;
        y0 = std::max(0L, cy - core);
        y1 = std::min(image.getHeight() - 1, cy + core);
        x0 = std::max(0L, cx - core);
        x1 = std::min(image.getWidth() - 1, cx + core);
    }
    for (long y = y0; y <= y1; ++y) {
        for (long x = x0; x <= x1; ++x) {
            if (image.mask(y, x) & _badBits) continue;
            const double ivar = 1.0 / image.variance(y, x);
            if (!std::isfinite(ivar)) continue;
            const double v = image.image(y, x);
            _xsum += v * std::sqrt(ivar);
            _x2sum += v * v * ivar;
            ++_npix;
        }
    }
    if (!std::isfinite(_xsum) || !std::isfinite(_x2sum)) {
        throw PsfMatchError("ImageStatistics: NaN or infinite value in the residual sums");
    }
}

double ImageStatistics::getMean() const {
    return _npix > 0 ? _xsum / _npix : std::numeric_limits<double>::quiet_NaN();
}

double ImageStatistics::getVariance() const {
    if (_npix <= 1) return std::numeric_limits<double>::quiet_NaN();
    const double mean = getMean();
    return (_x2sum / _npix - mean * mean) * _npix / (_npix - 1.0);
}

double ImageStatistics::getRms() const { return std::sqrt(getVariance()); }

bool ImageStatistics::evaluateQuality(const KernelControl& control) const {
    const double mean = getMean(), rms = getRms();
    if (std::isnan(mean) || std::isnan(rms)) return false;
    return std::fabs(mean) <= control.candidateResidualMeanMax && rms <= control.candidateResidualStdMax;
}

}  // namespace psfmatch
