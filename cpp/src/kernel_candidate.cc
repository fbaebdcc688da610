// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/kernel_candidate.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "psfmatch/convolve.h"
#include "psfmatch/errors.h"
#include "psfmatch/image_statistics.h"

namespace psfmatch {

namespace {

std::atomic<int> nextCandidateId{0};

double median(const ImageD& a) {
    std::vector<double> v(a.data(), a.data() + a.size());
    const std::size_t n = v.size();
    std::nth_element(v.begin(), v.begin() + n / 2, v.end());
    const double hi = v[n / 2];
    if (n % 2 == 1) return hi;
    const double lo = *std::max_element(v.begin(), v.begin() + n / 2);
    return 0.5 * (lo + hi);
}

// The stamp difference image (getDifferenceImage) convolves two 21×21-ish planes over a
// ~23×23 good box per call, a few thousand calls per fit: direct sums, register-blocked over
// 4·NB output columns, on AVX2 when the CPU has it. Each output pixel is the sum over the
// kernel's non-zero pixels in row-major order of weight·input, each product rounded and then
// added (no fused multiply-add on any path), so every ISA gives the same bits, and they are
// those of convolvePlane's direct method.
struct StampTap {
    long offset;  ///< of the input pixel from the output pixel's position, in the input
    double weight;
};

using Double4 = double __attribute__((vector_size(32)));

// out[4b + k] = Σ_t taps[t].weight · src[taps[t].offset + 4b + k], b < NB, k < 4.
template <int NB>
inline __attribute__((always_inline)) void tapBlocks(const double* src, const StampTap* taps, long nTaps,
                                                      double* out) {
    Double4 acc[NB];
    for (int b = 0; b < NB; ++b) acc[b] = Double4{0.0, 0.0, 0.0, 0.0};
    for (long t = 0; t < nTaps; ++t) {
        const double* s = src + taps[t].offset;
        const double w = taps[t].weight;
        const Double4 wv = {w, w, w, w};
        for (int b = 0; b < NB; ++b) {
            Double4 v;
            std::memcpy(&v, s + 4 * b, sizeof v);
            acc[b] += wv * v;
        }
    }
    for (int b = 0; b < NB; ++b) std::memcpy(out + 4 * b, &acc[b], sizeof acc[b]);
}

// The good box rows [y0, y1] and columns [x0, x0 + gnx) of `out` (row stride `outStride`)
// from `in` (row stride `inStride`): blocks of 12 columns, then of 4; a width that is not a
// multiple of 4 ends on a block overlapping the previous one (its pixels are recomputed to
// the same values); fewer than 4 columns, one at a time.
inline __attribute__((always_inline)) void convolveStampImpl(const double* in, long inStride, double* out,
                                                              long outStride, long y0, long y1, long x0, long gnx,
                                                              const StampTap* taps, long nTaps) {
    for (long y = y0; y <= y1; ++y) {
        const double* src = in + y * inStride + x0;
        double* dst = out + y * outStride + x0;
        if (gnx < 4) {
            for (long x = 0; x < gnx; ++x) {
                double acc = 0.0;
                for (long t = 0; t < nTaps; ++t) acc += taps[t].weight * src[x + taps[t].offset];
                dst[x] = acc;
            }
            continue;
        }
        long x = 0;
        for (; x + 12 <= gnx; x += 12) tapBlocks<3>(src + x, taps, nTaps, dst + x);
        for (; x + 4 <= gnx; x += 4) tapBlocks<1>(src + x, taps, nTaps, dst + x);
        if (x < gnx) tapBlocks<1>(src + gnx - 4, taps, nTaps, dst + gnx - 4);
    }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
__attribute__((target("avx2"))) void convolveStampAvx2(const double* in, long inStride, double* out, long outStride,
                                                      long y0, long y1, long x0, long gnx, const StampTap* taps,
                                                      long nTaps) {
    convolveStampImpl(in, inStride, out, outStride, y0, y1, x0, gnx, taps, nTaps);
}
bool haveAvx2() {
    static const bool have = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0;
    }();
    return have;
}
#endif

void convolveStampBaseline(const double* in, long inStride, double* out, long outStride, long y0, long y1, long x0,
                           long gnx, const StampTap* taps, long nTaps) {
    convolveStampImpl(in, inStride, out, outStride, y0, y1, x0, gnx, taps, nTaps);
}

// out|_G = (weights ⊗ in)|_G, G the good box of the kernel (out and in of one shape).
void convolveStamp(const ImageD& in, const ImageD& weights, const Box2I& g, ImageD& out) {
    const long stride = in.cols();
    const int cx = static_cast<int>((weights.cols() - 1) / 2), cy = static_cast<int>((weights.rows() - 1) / 2);
    std::vector<StampTap> taps;
    taps.reserve(static_cast<std::size_t>(weights.size()));
    for (long j = 0; j < weights.rows(); ++j) {
        for (long i = 0; i < weights.cols(); ++i) {
            if (weights(j, i) != 0.0) taps.push_back({(cy - j) * stride + (cx - i), weights(j, i)});
        }
    }
    const long n = static_cast<long>(taps.size());
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if (haveAvx2()) {
        convolveStampAvx2(in.data(), stride, out.data(), stride, g.minY, g.maxY, g.minX, g.getWidth(), taps.data(), n);
        return;
    }
#endif
    convolveStampBaseline(in.data(), stride, out.data(), stride, g.minY, g.maxY, g.minX, g.getWidth(), taps.data(), n);
}

void checkVariance(const ImageD& v) {
    if (v.isNaN().any()) throw InvalidInputError("KernelCandidate.build: the variance estimate has NaN pixels");
    const double vmin = v.minCoeff();
    if (vmin < 0.0) throw InvalidInputError("KernelCandidate.build: variance less than 0 in the stamp");
    if (vmin == 0.0) throw InvalidInputError("KernelCandidate.build: variance of 0 in the stamp, cannot weight");
}

}  // namespace

KernelCandidate::KernelCandidate(double xCenter, double yCenter, MaskedImage templateStamp,
                                 MaskedImage scienceStamp, const KernelControl& control, double rating)
        : _xCenter(xCenter),
          _yCenter(yCenter),
          _template(std::move(templateStamp)),
          _science(std::move(scienceStamp)),
          _control(control),
          _rating(rating),
          _id(nextCandidateId++) {
    _template.checkConsistent("KernelCandidate template stamp");
    _science.checkConsistent("KernelCandidate science stamp");
    if (_template.getWidth() != _science.getWidth() || _template.getHeight() != _science.getHeight()) {
        throw InvalidInputError("KernelCandidate: template stamp is " + std::to_string(_template.getWidth()) + "x" +
                                std::to_string(_template.getHeight()) + " but science stamp is " +
                                std::to_string(_science.getWidth()) + "x" + std::to_string(_science.getHeight()));
    }
    if (std::isnan(_rating)) {
        try {
            ImageStatistics stats(_control);
            stats.apply(_science, _control.candidateCoreRadius);
            _rating = stats.getMean();
        } catch (const PsfMatchError&) {
            _rating = std::numeric_limits<double>::quiet_NaN();
        }
        if (!std::isfinite(_rating)) _status = BAD;
    }
}

std::shared_ptr<StaticKernelSolution> KernelCandidate::solveOnce(const KernelList& basis,
                                                                 const std::optional<Eigen::MatrixXd>& hMat,
                                                                 const ImageD& variance) const {
    std::shared_ptr<StaticKernelSolution> solution;
    if (hMat) {
        solution = std::make_shared<RegularizedKernelSolution>(basis, _control.fitForBackground, *hMat, _control);
    } else {
        solution = std::make_shared<StaticKernelSolution>(basis, _control.fitForBackground);
    }
    solution->build(_template.image, _science.image, variance);
    return solution;
}

void KernelCandidate::build(const KernelList& basis, const std::optional<Eigen::MatrixXd>& hMat) {
    // A new solution makes the remembered LOCAL residuals stale (the serial would say so too).
    // The SPATIAL ones depend on the stamps and the model only, not on this fit.
    _localSerial = 0;
    _localResiduals = ResidualStatistics();
    ImageD variance = _science.variance + _template.variance;
    if (_control.constantVarianceWeighting) {
        const double med = median(variance);
        variance.setConstant(med > 0.0 ? med : 1.0);
    }
    checkVariance(variance);

    std::shared_ptr<StaticKernelSolution> solution = solveOnce(basis, hMat, variance);
    auto store = [&](std::shared_ptr<StaticKernelSolution> s) {
        if (!_isInitialized) {
            _kernelSolutionOrig = std::move(s);
            _isInitialized = true;
        } else {
            _kernelSolutionPca = std::move(s);
        }
    };
    _useRegularization = hMat.has_value();
    _varianceEstimate = variance;
    if (_control.checkConditionNumber &&
        solution->getConditionNumber(_control.conditionNumberType) > _control.maxConditionNumber) {
        _status = BAD;
        store(std::move(solution));
        return;
    }
    solution->solve();
    if (_control.iterateSingleKernel && !_control.constantVarianceWeighting) {
        // Weight the second pass by the variance the first solution's difference image has.
        ConvolutionControl cc;
        cc.noDataBit = _control.noDataBit;
        cc.nThreads = 1;
        variance = convolveMaskedImage(_template, solution->getKernel(), cc).variance + _science.variance;
        checkVariance(variance);
        solution = solveOnce(basis, hMat, variance);
        solution->solve();
        _varianceEstimate = variance;
    }
    store(std::move(solution));
}

void KernelCandidate::setLocalResiduals(std::uint64_t kernelSerial, const ResidualStatistics& stats) {
    _localSerial = kernelSerial;
    _localResiduals = stats;
}

void KernelCandidate::setSpatialResiduals(std::shared_ptr<const SpatialModel> model,
                                          const ResidualStatistics& stats) {
    _spatialModel = std::move(model);
    _spatialResiduals = stats;
}

std::shared_ptr<StaticKernelSolution> KernelCandidate::getKernelSolution(CandidateSwitch which) const {
    switch (which) {
        case ORIG:
            if (_kernelSolutionOrig) return _kernelSolutionOrig;
            throw PsfMatchError("KernelCandidate " + std::to_string(_id) + ": no ORIG kernel solution (not built)");
        case PCA:
            if (_kernelSolutionPca) return _kernelSolutionPca;
            throw PsfMatchError("KernelCandidate " + std::to_string(_id) + ": no PCA kernel solution");
        case RECENT:
            if (_kernelSolutionPca) return _kernelSolutionPca;
            if (_kernelSolutionOrig) return _kernelSolutionOrig;
            throw PsfMatchError("KernelCandidate " + std::to_string(_id) + ": no kernel solution (not built)");
    }
    throw InvalidInputError("KernelCandidate: unknown solution selector");
}

const FixedKernel& KernelCandidate::getKernel(CandidateSwitch which) const {
    return getKernelSolution(which)->getKernel();
}

double KernelCandidate::getBackground(CandidateSwitch which) const {
    return getKernelSolution(which)->getBackground();
}

double KernelCandidate::getKsum(CandidateSwitch which) const { return getKernelSolution(which)->getKsum(); }

ImageD KernelCandidate::getKernelImage(CandidateSwitch which) const { return getKernel(which).getImage(); }

MaskedImage KernelCandidate::getDifferenceImage(CandidateSwitch which) const {
    auto solution = getKernelSolution(which);
    return getDifferenceImage(solution->getKernel(), solution->getBackground());
}

MaskedImage KernelCandidate::getDifferenceImage(const FixedKernel& kernel, double background) const {
    const long ny = _template.getHeight(), nx = _template.getWidth();
    if (nx < kernel.getWidth() || ny < kernel.getHeight()) {
        throw InvalidInputError("getDifferenceImage: stamp of " + std::to_string(nx) + "x" + std::to_string(ny) +
                                " pixels is smaller than the " + std::to_string(kernel.getWidth()) + "x" +
                                std::to_string(kernel.getHeight()) + " kernel");
    }
    // K ⊗ T and K² ⊗ Var_T on the good box, the mask of T dilated under K's non-zero pixels;
    // outside the box NaN, +inf and NO_DATA (convolveMaskedImage's border); then the science
    // stamp minus, variance plus, mask or-ed.
    const Box2I g = goodBox(nx, ny, kernel.getWidth(), kernel.getHeight());
    MaskedImage diff(ny, nx, _template.x0, _template.y0);
    diff.image.setConstant(std::numeric_limits<double>::quiet_NaN());
    diff.variance.setConstant(std::numeric_limits<double>::infinity());
    const ImageD& k = kernel.getImage();
    convolveStamp(_template.image, k, g, diff.image);
    convolveStamp(_template.variance, k.square(), g, diff.variance);
    if ((_template.mask != 0).any()) {
        convolveMaskPlane(viewOf(_template.mask), viewOf(diff.mask), kernel, 1);
    }
    for (long y = 0; y < ny; ++y) {
        for (long x = 0; x < nx; ++x) {
            if (y < g.minY || y > g.maxY || x < g.minX || x > g.maxX) {
                diff.mask(y, x) = _template.mask(y, x) | _control.noDataBit;
            }
        }
    }
    diff.image = _science.image - diff.image - background;
    diff.variance += _science.variance;
    diff.mask = diff.mask.binaryExpr(_science.mask, [](std::int32_t a, std::int32_t b) { return a | b; });
    return diff;
}

}  // namespace psfmatch
