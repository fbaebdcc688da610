// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/kernel_candidate.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <vector>

#include "psfmatch/convolve.h"
#include "psfmatch/errors.h"
#include "psfmatch/image_statistics.h"
#include "psfmatch/stamp_convolve.h"

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
          _stamps(std::make_shared<const OwnedStamps>(std::move(templateStamp), std::move(scienceStamp))),
          _box(_stamps->getBBox()),
          _control(control),
          _rating(rating),
          _id(nextCandidateId++) {
    rateIfUnrated();
}

KernelCandidate::KernelCandidate(double xCenter, double yCenter, std::shared_ptr<const StampSource> stamps,
                                 const Box2I& box, const KernelControl& control, double rating)
        : _xCenter(xCenter),
          _yCenter(yCenter),
          _stamps(std::move(stamps)),
          _box(box),
          _control(control),
          _rating(rating),
          _id(nextCandidateId++) {
    if (!_stamps) throw InvalidInputError("KernelCandidate: null stamp source");
    _stamps->checkInside(box);
    rateIfUnrated();
}

const MaskedImage& KernelCandidate::stamp(bool science, MaskedImage& buffer) const {
    if (const MaskedImage* own = _stamps->find(science, _box)) return *own;
    buffer = _stamps->cut(science, _box);
    return buffer;
}

void KernelCandidate::rateIfUnrated() {
    if (!std::isnan(_rating)) return;
    try {
        ImageStatistics stats(_control);
        MaskedImage buffer;
        stats.apply(stamp(true, buffer), _control.candidateCoreRadius);
        _rating = stats.getMean();
    } catch (const PsfMatchError&) {
        _rating = std::numeric_limits<double>::quiet_NaN();
    }
    if (!std::isfinite(_rating)) _status = BAD;
}

std::shared_ptr<StaticKernelSolution> KernelCandidate::solveOnce(const std::shared_ptr<const KernelList>& basis,
                                                                 const std::shared_ptr<const Eigen::MatrixXd>& hMat,
                                                                 const ImageD& templateImage,
                                                                 const ImageD& scienceImage,
                                                                 const ImageD& variance) const {
    std::shared_ptr<StaticKernelSolution> solution;
    if (hMat) {
        solution = std::make_shared<RegularizedKernelSolution>(basis, _control.fitForBackground, hMat, _control);
    } else {
        solution = std::make_shared<StaticKernelSolution>(basis, _control.fitForBackground);
    }
    solution->build(templateImage, scienceImage, variance);
    return solution;
}

void KernelCandidate::build(const KernelList& basis, const std::optional<Eigen::MatrixXd>& hMat) {
    build(std::make_shared<const KernelList>(basis), hMat ? std::make_shared<const Eigen::MatrixXd>(*hMat) : nullptr);
}

void KernelCandidate::build(std::shared_ptr<const KernelList> basis, std::shared_ptr<const Eigen::MatrixXd> hMat) {
    if (!basis) throw InvalidInputError("KernelCandidate.build: null kernel basis");
    // A new solution makes the remembered LOCAL residuals stale (the serial would say so too).
    // The SPATIAL ones depend on the stamps and the model only, not on this fit.
    _localSerial = 0;
    _localResiduals = ResidualStatistics();
    MaskedImage templateBuffer, scienceBuffer;
    const MaskedImage& templ = stamp(false, templateBuffer);
    const MaskedImage& science = stamp(true, scienceBuffer);
    ImageD variance = science.variance + templ.variance;
    if (_control.constantVarianceWeighting) {
        const double med = median(variance);
        variance.setConstant(med > 0.0 ? med : 1.0);
    }
    checkVariance(variance);

    std::shared_ptr<StaticKernelSolution> solution = solveOnce(basis, hMat, templ.image, science.image, variance);
    auto store = [&](std::shared_ptr<StaticKernelSolution> s) {
        if (!_isInitialized) {
            _kernelSolutionOrig = std::move(s);
            _isInitialized = true;
        } else {
            _kernelSolutionPca = std::move(s);
        }
    };
    _useRegularization = hMat != nullptr;
    if (_control.constantVarianceWeighting) {
        _varianceConstant = variance(0, 0);
        _varianceEstimate = ImageD();
    } else {
        _varianceConstant = std::numeric_limits<double>::quiet_NaN();
        _varianceEstimate = variance;
    }
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
        variance = convolveMaskedImage(templ, solution->getKernel(), cc).variance + science.variance;
        checkVariance(variance);
        solution = solveOnce(basis, hMat, templ.image, science.image, variance);
        solution->solve();
        _varianceEstimate = variance;
    }
    store(std::move(solution));
}

ImageD KernelCandidate::getVarianceEstimate() const {
    if (!std::isnan(_varianceConstant)) {
        return ImageD::Constant(_box.getHeight(), _box.getWidth(), _varianceConstant);
    }
    return _varianceEstimate;
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
    const long ny = _box.getHeight(), nx = _box.getWidth();
    if (nx < kernel.getWidth() || ny < kernel.getHeight()) {
        throw InvalidInputError("getDifferenceImage: stamp of " + std::to_string(nx) + "x" + std::to_string(ny) +
                                " pixels is smaller than the " + std::to_string(kernel.getWidth()) + "x" +
                                std::to_string(kernel.getHeight()) + " kernel");
    }
    // K ⊗ T and K² ⊗ Var_T on the good box, the mask of T dilated under K's non-zero pixels;
    // outside the box NaN, +inf and NO_DATA (convolveMaskedImage's border); then the science
    // stamp minus, variance plus, mask or-ed.
    const Box2I g = goodBox(nx, ny, kernel.getWidth(), kernel.getHeight());
    MaskedImage templateBuffer, scienceBuffer;
    const MaskedImage& templ = stamp(false, templateBuffer);
    const MaskedImage& science = stamp(true, scienceBuffer);
    MaskedImage diff(ny, nx, templ.x0, templ.y0);
    diff.image.setConstant(std::numeric_limits<double>::quiet_NaN());
    diff.variance.setConstant(std::numeric_limits<double>::infinity());
    const ImageD& k = kernel.getImage();
    convolveStampPlane(templ.image, k, diff.image);
    convolveStampPlane(templ.variance, k.square(), diff.variance);
    if ((templ.mask != 0).any()) {
        convolveMaskPlane(viewOf(templ.mask), viewOf(diff.mask), kernel, 1);
    }
    for (long y = 0; y < ny; ++y) {
        for (long x = 0; x < nx; ++x) {
            if (y < g.minY || y > g.maxY || x < g.minX || x > g.maxX) {
                diff.mask(y, x) = templ.mask(y, x) | _control.noDataBit;
            }
        }
    }
    diff.image = science.image - diff.image - background;
    diff.variance += science.variance;
    diff.mask = diff.mask.binaryExpr(science.mask, [](std::int32_t a, std::int32_t b) { return a | b; });
    return diff;
}

}  // namespace psfmatch
