// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/visitors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <unordered_map>

#include <Eigen/Eigenvalues>

#include "psfmatch/errors.h"
#include "psfmatch/image_statistics.h"
#include "psfmatch/parallel.h"

namespace psfmatch {

namespace {

// The core half-width the residual statistics use (0: the whole stamp).
int residualCore(const KernelControl& control) { return control.useCoreStats ? control.candidateCoreRadius : 0; }

// Residual statistics of a difference image, on the core or the whole stamp.
ImageStatistics residualStatistics(const MaskedImage& diff, const KernelControl& control) {
    ImageStatistics stats(control);
    stats.apply(diff, residualCore(control));
    return stats;
}

// What a cache slot keeps of ImageStatistics, with the settings they were formed under.
ResidualStatistics remembered(const ImageStatistics& stats, const KernelControl& control) {
    ResidualStatistics r;
    r.mean = stats.getMean();
    r.rms = stats.getRms();
    r.badBits = control.badMaskBits;
    r.core = residualCore(control);
    return r;
}

bool sameSettings(const ResidualStatistics& r, const KernelControl& control) {
    return r.badBits == control.badMaskBits && r.core == residualCore(control);
}

// Bitwise equality of two dense Eigen objects of doubles (shape and every bit, so −0 ≠ +0
// and NaN = NaN of the same payload): the condition for a computation to repeat exactly.
template <typename A, typename B>
bool sameBits(const A& a, const B& b) {
    if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
    const Eigen::Index n = a.size();
    return n == 0 || std::memcmp(a.data(), b.data(), static_cast<std::size_t>(n) * sizeof(double)) == 0;
}

bool sameKernel(const FixedKernel& a, const FixedKernel& b) {
    if (!sameBits(a.getImage(), b.getImage()) || a.getTerms().size() != b.getTerms().size()) return false;
    for (std::size_t t = 0; t < a.getTerms().size(); ++t) {
        const SeparableTerm &u = a.getTerms()[t], &v = b.getTerms()[t];
        if (std::memcmp(&u.coef, &v.coef, sizeof(double)) != 0 || !sameBits(u.kx, v.kx) || !sameBits(u.ky, v.ky)) {
            return false;
        }
    }
    return true;
}

bool sameFunction(const SpatialFunction& a, const SpatialFunction& b) {
    const Box2I &p = a.getBBox(), &q = b.getBBox();
    return a.getType() == b.getType() && a.getOrder() == b.getOrder() && p.minX == q.minX && p.minY == q.minY &&
           p.maxX == q.maxX && p.maxY == q.maxY;
}

// True when (kernel, background) is, bit for bit, the model: then it evaluates to the same
// kernel and background at every position, and a candidate's residuals under it repeat.
bool sameModel(const LinearCombinationKernel& kernel, const SpatialBackground& background,
               const SpatialModel& model) {
    const KernelList &a = kernel.getBasisList(), &b = model.kernel.getBasisList();
    if (a.size() != b.size()) return false;
    for (std::size_t k = 0; k < a.size(); ++k) {
        if (!sameKernel(a[k], b[k])) return false;
    }
    return sameFunction(kernel.getSpatialFunction(), model.kernel.getSpatialFunction()) &&
           sameBits(kernel.getSpatialParameters(), model.kernel.getSpatialParameters()) &&
           sameFunction(background.getSpatialFunction(), model.background.getSpatialFunction()) &&
           sameBits(background.getParameters(), model.background.getParameters());
}

// Linear-interpolation quantile at q·(n−1) of sorted values.
double quantile(const std::vector<double>& sorted, double q) {
    const double pos = q * (sorted.size() - 1);
    const std::size_t lo = static_cast<std::size_t>(std::floor(pos));
    const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
    return sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]);
}

}  // namespace

BuildSingleKernelVisitor::BuildSingleKernelVisitor(KernelList basis, const KernelControl& control,
                                                   std::optional<Eigen::MatrixXd> hMat)
        : _basis(std::make_shared<const KernelList>(std::move(basis))),
          _control(control),
          _hMat(hMat ? std::make_shared<const Eigen::MatrixXd>(std::move(*hMat)) : nullptr) {
    checkBasisList(*_basis, "BuildSingleKernelVisitor");
}

void BuildSingleKernelVisitor::processCandidate(KernelCandidate& candidate) {
    if (_skipBuilt && candidate.isInitialized()) return;
    try {
        candidate.build(_basis, _hMat);
    } catch (const PsfMatchError&) {
        candidate.setStatus(KernelCandidate::BAD);
        ++_nRejected;
        return;
    }
    if (candidate.getStatus() == KernelCandidate::BAD) {
        ++_nRejected;
        return;
    }
    double mean, rms;
    try {
        const MaskedImage diff = candidate.getDifferenceImage(KernelCandidate::RECENT);
        ImageStatistics stats = residualStatistics(diff, _control);
        mean = stats.getMean();
        rms = stats.getRms();
        candidate.setChi2(stats.getVariance());
        candidate.setLocalResiduals(candidate.getKernelSolution(KernelCandidate::RECENT)->getKernelSerial(),
                                    remembered(stats, _control));
        if (!_control.useCoreStats) {
            // The reference computes core statistics here for its logs; a failure there is a
            // bad candidate too.
            ImageStatistics core(_control);
            core.apply(diff, _control.candidateCoreRadius);
        }
    } catch (const PsfMatchError&) {
        // docs/decisions.md D6: a statistics failure is a rejection and is counted as one.
        candidate.setStatus(KernelCandidate::BAD);
        ++_nRejected;
        return;
    }
    ++_nProcessed;
    if (std::isnan(mean) || std::isnan(rms)) {
        candidate.setStatus(KernelCandidate::BAD);
        ++_nRejected;
        return;
    }
    if (_control.singleKernelClipping &&
        (std::fabs(mean) > _control.candidateResidualMeanMax || rms > _control.candidateResidualStdMax)) {
        candidate.setStatus(KernelCandidate::BAD);
        ++_nRejected;
        return;
    }
    candidate.setStatus(KernelCandidate::GOOD);
}

void KernelSumVisitor::resetKernelSum() {
    _mode = AGGREGATE;
    _kSums.clear();
    _kSumMean = _kSumStd = _dkSumMax = 0.0;
    _kSumNpts = 0;
    _nRejected = 0;
}

void KernelSumVisitor::processCandidate(KernelCandidate& candidate) {
    const double kSum = candidate.getKsum(KernelCandidate::ORIG);
    if (_mode == AGGREGATE) {
        _kSums.push_back(kSum);
    } else if (_control.kernelSumClipping && std::fabs(kSum - _kSumMean) > _dkSumMax) {
        candidate.setStatus(KernelCandidate::BAD);
        ++_nRejected;
    }
}

void KernelSumVisitor::processKsumDistribution() {
    const std::size_t n = _kSums.size();
    if (n == 0) throw PsfMatchError("Unable to determine kernel sum; 0 candidates");
    if (n == 1) {
        _kSumMean = _kSums.front();
        _kSumStd = 0.0;
        _kSumNpts = 1;
    } else {
        std::vector<double> sorted = _kSums;
        std::sort(sorted.begin(), sorted.end());
        double centre = quantile(sorted, 0.5);
        double halfWidth = 3.0 * 0.741301109 * (quantile(sorted, 0.75) - quantile(sorted, 0.25));
        double mean = 0.0, std = 0.0;
        long kept = 0;
        for (int iter = 0; iter < 3; ++iter) {
            // The mean as v0 + Σ(v − v0)/n, so identical values give that value exactly.
            const double v0 = sorted.front();
            double sum = 0.0, sum2 = 0.0;
            kept = 0;
            for (double v : sorted) {
                if (std::fabs(v - centre) <= halfWidth) {
                    sum += v - v0;
                    ++kept;
                }
            }
            mean = kept > 0 ? v0 + sum / kept : std::nan("");
            for (double v : sorted) {
                if (std::fabs(v - centre) <= halfWidth) sum2 += (v - mean) * (v - mean);
            }
            std = kept > 1 ? std::sqrt(sum2 / (kept - 1)) : std::nan("");
            centre = mean;
            halfWidth = 3.0 * std;
        }
        if (std::isnan(mean) || std::isnan(std)) {
            throw PsfMatchError("Unable to determine kernel sum: clipped statistics are NaN");
        }
        _kSumMean = mean;
        _kSumStd = std;
        _kSumNpts = static_cast<int>(kept);
    }
    _dkSumMax = _control.maxKsumSigma * _kSumStd;
}

SpatialKernelSolution::SpatialKernelSolution(KernelList basis, const Box2I& bbox, const KernelControl& control,
                                             bool constantFirstTerm)
        : _basis(std::move(basis)),
          _control(control),
          _constantFirstTerm(constantFirstTerm),
          _kernelFunction(control.spatialModelType, control.spatialKernelOrder, bbox),
          _backgroundFunction(control.spatialModelType, control.fitForBackground ? control.spatialBgOrder : 0,
                              bbox) {
    checkBasisList(_basis, "SpatialKernelSolution");
    const int nb = static_cast<int>(_basis.size());
    const int nkt = _kernelFunction.getNParameters();
    _nbt = control.fitForBackground ? _backgroundFunction.getNParameters() : 0;
    _nt = (_constantFirstTerm ? (nb - 1) * nkt + 1 : nb * nkt) + _nbt;
    _mMat = Eigen::MatrixXd::Zero(_nt, _nt);
    _bVec = Eigen::VectorXd::Zero(_nt);
}

long SpatialKernelSolution::blockStart(long m) const {
    const long nkt = _kernelFunction.getNParameters();
    if (!_constantFirstTerm) return m * nkt;
    return m == 0 ? 0 : 1 + (m - 1) * nkt;
}

void SpatialKernelSolution::addConstraint(double x, double y, const Eigen::MatrixXd& q, const Eigen::VectorXd& w) {
    const long nb = static_cast<long>(_basis.size());
    const long nq = nb + (_control.fitForBackground ? 1 : 0);
    if (q.rows() != nq || q.cols() != nq || w.size() != nq) {
        throw InvalidInputError("SpatialKernelSolution: a candidate's normal system is " + std::to_string(q.rows()) +
                                "x" + std::to_string(q.cols()) + ", expected " + std::to_string(nq));
    }
    const Eigen::VectorXd pK = _kernelFunction.terms(x, y);
    const Eigen::VectorXd one = Eigen::VectorXd::Ones(1);
    // Column m of P holds the spatial terms of parameter m in the rows of its θ block; then
    // P Q Pᵀ is, block by block, Q(m, n) · p_m p_nᵀ.
    std::vector<Eigen::VectorXd> p(nq);
    std::vector<long> start(nq);
    for (long m = 0; m < nb; ++m) {
        p[m] = (_constantFirstTerm && m == 0) ? one : pK;
        start[m] = blockStart(m);
    }
    if (_control.fitForBackground) {
        p[nb] = _backgroundFunction.terms(x, y);
        start[nb] = _nt - _nbt;
    }
    // Plain loops, not Eigen block expressions: there are nq² (~800) blocks of a few elements,
    // where the expressions' per-block overhead dominated. Each element is still
    // (q(m, n)·p_m[i])·p_n[j] added to M, the rounding the expression had.
    for (long m = 0; m < nq; ++m) {
        _bVec.segment(start[m], p[m].size()) += w[m] * p[m];
    }
    const long ld = _mMat.rows();  // column-major
    std::vector<double> qp;
    for (long n = 0; n < nq; ++n) {
        const Eigen::VectorXd& pn = p[n];
        for (long m = 0; m < nq; ++m) {
            const Eigen::VectorXd& pm = p[m];
            const long rows = pm.size();
            qp.resize(static_cast<std::size_t>(rows));
            const double qmn = q(m, n);
            for (long i = 0; i < rows; ++i) qp[i] = qmn * pm[i];
            for (long j = 0; j < pn.size(); ++j) {
                double* col = _mMat.data() + (start[n] + j) * ld + start[m];
                const double pj = pn[j];
                for (long i = 0; i < rows; ++i) col[i] += qp[i] * pj;
            }
        }
    }
}

void SpatialKernelSolution::solve() {
    // Solve the equilibrated system (D M D) θ' = D b, θ = D θ', D = diag(M_ii^-1/2): the same
    // solution, but the polynomial model's raw monomials of parent coordinates (1 … x² ~ 1e5)
    // give M a diagonal spanning ~10 orders of magnitude, and a plain LU then loses most of its
    // digits (polynomial and Chebyshev fits of one field disagreed by O(1) in kernel pixels).
    Eigen::VectorXd d = _mMat.diagonal();
    for (long i = 0; i < d.size(); ++i) d[i] = (d[i] > 0.0 && std::isfinite(d[i])) ? 1.0 / std::sqrt(d[i]) : 1.0;
    const Eigen::MatrixXd scaled = d.asDiagonal() * _mMat * d.asDiagonal();
    _aVec = d.cwiseProduct(solveNormalEquations(scaled, d.cwiseProduct(_bVec), &_solvedBy));
    if (!_aVec.allFinite()) {
        throw PsfMatchError("spatial kernel solution has NaN coefficients (condition number " +
                            std::to_string(conditionNumber(_mMat, ConditionNumberType::EIGENVALUE)) + ")");
    }
    const long nb = static_cast<long>(_basis.size());
    const long nkt = _kernelFunction.getNParameters();
    Eigen::MatrixXd params = Eigen::MatrixXd::Zero(nb, nkt);
    for (long m = 0; m < nb; ++m) {
        if (_constantFirstTerm && m == 0) {
            params(0, 0) = _aVec[0];
        } else {
            params.row(m) = _aVec.segment(blockStart(m), nkt).transpose();
        }
    }
    _kernel.emplace(_basis, _kernelFunction, params);
    if (_control.fitForBackground) {
        _background.emplace(_backgroundFunction, _aVec.tail(_nbt));
    } else {
        _background.emplace(_backgroundFunction, Eigen::VectorXd::Zero(1));
    }
}

std::pair<LinearCombinationKernel, SpatialBackground> SpatialKernelSolution::getSolutionPair() const {
    requireSolved("getSolutionPair");
    return {*_kernel, *_background};
}

BuildSpatialKernelVisitor::BuildSpatialKernelVisitor(KernelList basis, const Box2I& bbox,
                                                     const KernelControl& control, bool constantFirstTerm)
        : _basis(std::move(basis)), _bbox(bbox), _control(control), _constantFirstTerm(constantFirstTerm) {
    reset();
}

void BuildSpatialKernelVisitor::reset() {
    _solution = std::make_shared<SpatialKernelSolution>(_basis, _bbox, _control, _constantFirstTerm);
    _nCandidates = 0;
}

void BuildSpatialKernelVisitor::processCandidate(KernelCandidate& candidate) {
    if (!candidate.isInitialized()) {
        candidate.setStatus(KernelCandidate::BAD);
        return;
    }
    auto solution = candidate.getKernelSolution(KernelCandidate::RECENT);
    _solution->addConstraint(candidate.getXCenter(), candidate.getYCenter(), solution->getM(), solution->getB());
    ++_nCandidates;
}

void AssessSpatialKernelVisitor::processCandidate(KernelCandidate& candidate) {
    if (!candidate.isInitialized()) {
        candidate.setStatus(KernelCandidate::BAD);
        return;
    }
    const double x = candidate.getXCenter(), y = candidate.getYCenter();
    const FixedKernel kernel = _model->kernel.computeKernel(x, y);
    const MaskedImage diff = candidate.getDifferenceImage(kernel, _model->background(x, y));
    double mean, rms;
    try {
        ImageStatistics stats = residualStatistics(diff, _control);
        mean = stats.getMean();
        rms = stats.getRms();
        candidate.setSpatialResiduals(_model, remembered(stats, _control));
    } catch (const PsfMatchError&) {
        candidate.setStatus(KernelCandidate::BAD);
        ++_nRejected;
        return;
    }
    ++_nProcessed;
    if (std::isnan(mean) || std::isnan(rms)) {
        candidate.setStatus(KernelCandidate::BAD);
        ++_nRejected;
        return;
    }
    if (_control.spatialKernelClipping &&
        (std::fabs(mean) > _control.candidateResidualMeanMax || rms > _control.candidateResidualStdMax)) {
        candidate.setStatus(KernelCandidate::BAD);
        ++_nRejected;
        return;
    }
    candidate.setStatus(KernelCandidate::GOOD);
    ++_nGood;
}

void KernelPca::addImage(const ImageD& image, double flux) {
    if (!_images.empty() && (image.rows() != _images.front().rows() || image.cols() != _images.front().cols())) {
        throw InvalidInputError("KernelPca.addImage: images differ in shape");
    }
    if (flux == 0.0) throw InvalidInputError("KernelPca.addImage: flux must be non-zero");
    _images.push_back(image);
    _fluxes.push_back(flux);
}

void KernelPca::subtractMean() {
    if (_images.empty()) throw PsfMatchError("KernelPca.subtractMean: no images");
    _mean = ImageD::Zero(_images.front().rows(), _images.front().cols());
    for (const auto& im : _images) _mean += im;
    _mean /= static_cast<double>(_images.size());
    for (auto& im : _images) im -= _mean;
}

void KernelPca::analyze() {
    const long n = static_cast<long>(_images.size());
    if (n == 0) throw PsfMatchError("KernelPca.analyze: no images");
    _eigenValues.clear();
    _eigenImages.clear();
    if (n == 1) {
        _eigenValues.push_back(1.0);
        _eigenImages.push_back(_images.front());
    } else {
        Eigen::MatrixXd r(n, n);
        for (long i = 0; i < n; ++i) {
            for (long j = 0; j <= i; ++j) {
                r(i, j) = r(j, i) = (_images[i] * _images[j]).sum() / (_fluxes[i] * _fluxes[j]) / n;
            }
        }
        Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(r);
        const double fMean = std::accumulate(_fluxes.begin(), _fluxes.end(), 0.0) / n;
        const long nKeep = std::min<long>(n, 100);
        for (long k = 0; k < nKeep; ++k) {
            const long col = n - 1 - k;  // eigenvalues ascend
            _eigenValues.push_back(es.eigenvalues()[col]);
            ImageD image = ImageD::Zero(_images.front().rows(), _images.front().cols());
            for (long j = 0; j < n; ++j) image += es.eigenvectors()(j, col) * (fMean / _fluxes[j]) * _images[j];
            _eigenImages.push_back(std::move(image));
        }
    }
    for (auto& image : _eigenImages) {
        const double lo = image.minCoeff(), hi = image.maxCoeff();
        const double extreme = std::fabs(lo) > hi ? lo : hi;
        if (extreme != 0.0) image /= extreme;
    }
}

void KernelPcaVisitor::processCandidate(KernelCandidate& candidate) {
    try {
        const double kSum = candidate.getKsum(KernelCandidate::ORIG);
        _pca->addImage(candidate.getKernelImage(KernelCandidate::ORIG) / kSum, 1.0);
    } catch (const PsfMatchError&) {
        // Candidates without a usable ORIG solution are skipped (docs/algorithm.md §5.7).
    }
}

Eigen::MatrixXd candidateResiduals(const std::vector<std::shared_ptr<KernelCandidate>>& candidates,
                                   const LinearCombinationKernel& kernel, const SpatialBackground& background,
                                   const KernelControl& control, bool reuse, Eigen::ArrayXXi* reused) {
    const long n = static_cast<long>(candidates.size());
    for (long i = 0; i < n; ++i) {
        if (!candidates[i]) throw InvalidInputError("candidateResiduals: candidate " + std::to_string(i) + " is None");
        if (!candidates[i]->isInitialized()) {
            throw InvalidInputError("candidateResiduals: candidate " + std::to_string(i) + " (id " +
                                    std::to_string(candidates[i]->getId()) + ") has no kernel solution");
        }
    }
    // Which remembered spatial models are this one: compared once per distinct model (usually
    // one, the last assessment's), serially, before the threads start.
    std::unordered_map<const SpatialModel*, bool> isThisModel;
    if (reuse) {
        for (const auto& c : candidates) {
            const SpatialModel* model = c->getSpatialResiduals().first.get();
            if (model && isThisModel.find(model) == isThisModel.end()) {
                isThisModel[model] = sameModel(kernel, background, *model);
            }
        }
    }
    const double nan = std::numeric_limits<double>::quiet_NaN();
    Eigen::MatrixXd out(n, 4);
    if (reused) *reused = Eigen::ArrayXXi::Zero(n, 2);
    // (mean, rms) into out(i, column), column + 1; NaN where the statistics cannot be formed.
    auto record = [&](long i, long column, const MaskedImage& diff) {
        try {
            ImageStatistics stats = residualStatistics(diff, control);
            out(i, column) = stats.getMean();
            out(i, column + 1) = stats.getRms();
        } catch (const PsfMatchError&) {
            out(i, column) = out(i, column + 1) = nan;
        }
    };
    // A remembered pair stands in for the computation when it was formed from the same
    // stamps (a candidate's never change), the same kernel and background (LOCAL: the serial
    // of the RECENT solution; SPATIAL: the same model) and the same statistics settings:
    // then the computation would repeat the same operations on the same values.
    auto recall = [&](long i, long column, const ResidualStatistics& r) {
        if (!sameSettings(r, control)) return false;
        out(i, column) = r.mean;
        out(i, column + 1) = r.rms;
        if (reused) (*reused)(i, column / 2) = 1;
        return true;
    };
    parallelFor(n, control.nThreads, [&](long begin, long end) {
        for (long i = begin; i < end; ++i) {
            const KernelCandidate& candidate = *candidates[i];
            const auto local = candidate.getLocalResiduals();
            const bool localFresh =
                    reuse && local.first != 0 &&
                    local.first == candidate.getKernelSolution(KernelCandidate::RECENT)->getKernelSerial() &&
                    recall(i, 0, local.second);
            if (!localFresh) record(i, 0, candidate.getDifferenceImage(KernelCandidate::RECENT));
            const auto spatial = candidate.getSpatialResiduals();
            const bool spatialFresh =
                    reuse && spatial.first && isThisModel.at(spatial.first.get()) && recall(i, 2, spatial.second);
            if (!spatialFresh) {
                const double x = candidate.getXCenter(), y = candidate.getYCenter();
                record(i, 2, candidate.getDifferenceImage(kernel.computeKernel(x, y), background(x, y)));
            }
        }
    });
    return out;
}

}  // namespace psfmatch
