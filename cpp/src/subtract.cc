// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/subtract.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "psfmatch/errors.h"
#include "psfmatch/parallel.h"

namespace psfmatch {

namespace {

template <typename V>
void checkShape(const V& view, long ny, long nx, const char* name) {
    if (view.ny != ny || view.nx != nx) {
        throw InvalidInputError(std::string("subtractMatched: ") + name + " is " + std::to_string(view.ny) + " x " +
                                std::to_string(view.nx) + " (rows x columns), the reference image " +
                                std::to_string(ny) + " x " + std::to_string(nx));
    }
}

}  // namespace

template <typename T>
void subtractMatched(const MaskedImageView<const T>& reference, const MaskedImageView<const T>& matched,
                     const ImageView<const std::int32_t>& targetMask, const SpatialBackground* background, int x0,
                     int y0, const SubtractionControl& control, const MaskedImageView<T>& out) {
    const long ny = reference.image.ny, nx = reference.image.nx;
    checkShape(reference.mask, ny, nx, "the reference mask");
    checkShape(reference.variance, ny, nx, "the reference variance");
    checkShape(matched.image, ny, nx, "the matched image");
    checkShape(matched.mask, ny, nx, "the matched mask");
    checkShape(matched.variance, ny, nx, "the matched variance");
    checkShape(targetMask, ny, nx, "the target mask");
    checkShape(out.image, ny, nx, "the output image");
    checkShape(out.mask, ny, nx, "the output mask");
    checkShape(out.variance, ny, nx, "the output variance");
    const bool scienceConvolved = control.scienceConvolved;
    const double kappa = control.kappa;
    if (scienceConvolved && !(std::isfinite(kappa) && kappa != 0.0)) {
        throw InvalidInputError("subtractMatched: the kernel sum kappa must be finite and non-zero, got " +
                                std::to_string(kappa));
    }
    // The variance divisor is rounded to T once, as a float array divided by a Python float is.
    const T kappa2 = static_cast<T>(kappa * kappa);
    const std::int32_t edge = control.edgeBit;
    const std::int32_t borderBits = control.edgeBit | control.noDataBit;
    const T nan = std::numeric_limits<T>::quiet_NaN();
    const T inf = std::numeric_limits<T>::infinity();

    // Columns [innerX0, innerX1) of the rows [innerY0, innerY1) are inside the inner box.
    long innerX0 = 0, innerX1 = nx, innerY0 = 0, innerY1 = ny;
    if (control.innerBox) {
        const Box2I& box = *control.innerBox;
        innerX0 = std::clamp<long>(static_cast<long>(box.minX) - x0, 0, nx);
        innerX1 = std::clamp<long>(static_cast<long>(box.maxX) - x0 + 1, innerX0, nx);
        innerY0 = std::clamp<long>(static_cast<long>(box.minY) - y0, 0, ny);
        innerY1 = std::clamp<long>(static_cast<long>(box.maxY) - y0 + 1, innerY0, ny);
    }
    const Eigen::MatrixXd columns = background ? background->columnFactors(x0, nx) : Eigen::MatrixXd();

    parallelFor(ny, control.nThreads, [&](long begin, long end) {
        std::vector<double> bRow(background ? nx : 0);
        for (long y = begin; y < end; ++y) {
            if (background) background->evaluateRow(static_cast<double>(y0 + y), columns, bRow.data());
            const T* ri = reference.image.row(y);
            const T* rv = reference.variance.row(y);
            const std::int32_t* rm = reference.mask.row(y);
            const T* mi = matched.image.row(y);
            const T* mv = matched.variance.row(y);
            const std::int32_t* mm = matched.mask.row(y);
            const std::int32_t* tm = targetMask.row(y);
            T* di = out.image.row(y);
            T* dv = out.variance.row(y);
            std::int32_t* dm = out.mask.row(y);
            const bool rowInside = y >= innerY0 && y < innerY1;
            for (long x = 0; x < nx; ++x) {
                T d, v;
                if (!scienceConvolved) {
                    d = ri[x] - mi[x];
                    if (background) d = static_cast<T>(static_cast<double>(d) - bRow[x]);
                    v = rv[x] + mv[x];
                } else {
                    // Without a background b is the literal 0.0 of the expression this replaces
                    // (which turns −0 into +0).
                    double e = static_cast<double>(mi[x]);
                    e += background ? bRow[x] : 0.0;
                    e -= static_cast<double>(ri[x]);
                    e /= kappa;
                    d = static_cast<T>(e);
                    v = (mv[x] + rv[x]) / kappa2;
                }
                // The convolution's own border: EDGE that the target did not already carry.
                const bool border = ((mm[x] & edge) != 0 && (tm[x] & edge) == 0) ||
                                    !(rowInside && x >= innerX0 && x < innerX1);
                di[x] = border ? nan : d;
                dv[x] = border ? inf : v;
                dm[x] = (rm[x] | mm[x]) | (border ? borderBits : 0);
            }
        }
    });
}

template void subtractMatched<float>(const MaskedImageView<const float>&, const MaskedImageView<const float>&,
                                     const ImageView<const std::int32_t>&, const SpatialBackground*, int, int,
                                     const SubtractionControl&, const MaskedImageView<float>&);
template void subtractMatched<double>(const MaskedImageView<const double>&, const MaskedImageView<const double>&,
                                      const ImageView<const std::int32_t>&, const SpatialBackground*, int, int,
                                      const SubtractionControl&, const MaskedImageView<double>&);

}  // namespace psfmatch
