// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/kernel_solution.h"

#include <atomic>
#include <cmath>
#include <limits>
#include <string>

#include <Eigen/Eigenvalues>
#include <Eigen/LU>
#include <Eigen/SVD>

#include "psfmatch/convolve.h"
#include "psfmatch/errors.h"
#include "psfmatch/stamp_convolve.h"

namespace psfmatch {

namespace {

std::atomic<int> nextSolutionId{0};
std::atomic<std::uint64_t> nextKernelSerial{1};

// The eigen pseudo-inverse of a symmetric matrix. Eigenvalues that are zero to rounding
// (|e| ≤ n·ε·|e|max, the numerical-rank rule of LAPACK and numpy.linalg.matrix_rank) are
// dropped: the reference drops only exact zeros, which in floating point inverts rounding
// noise and turns a rank-deficient system (e.g. fewer stars than spatial terms) into garbage
// instead of its minimum-norm solution. With maxCondition > 0, eigenvalues with
// |e|max/e > maxCondition are dropped too (the truncated pseudo-inverse of the risk estimate).
Eigen::MatrixXd eigenPseudoInverse(const Eigen::MatrixXd& m, double maxCondition) {
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(m);
    Eigen::VectorXd e = es.eigenvalues();
    Eigen::VectorXd inv = Eigen::VectorXd::Zero(e.size());
    const double eMax = e.cwiseAbs().maxCoeff();
    const double rankTolerance = static_cast<double>(e.size()) * std::numeric_limits<double>::epsilon() * eMax;
    for (long i = 0; i < e.size(); ++i) {
        if (std::fabs(e[i]) <= rankTolerance) continue;
        if (maxCondition > 0.0 && eMax / e[i] > maxCondition) continue;
        inv[i] = 1.0 / e[i];
    }
    return es.eigenvectors() * inv.asDiagonal() * es.eigenvectors().transpose();
}

}  // namespace

Eigen::VectorXd solveNormalEquations(const Eigen::MatrixXd& m, const Eigen::VectorXd& b, SolvedBy* how) {
    if (m.rows() != m.cols() || m.rows() != b.size()) {
        throw InvalidInputError("solveNormalEquations: matrix and vector sizes do not match");
    }
    if (!m.allFinite() || !b.allFinite()) {
        throw SingularMatrixError("unable to determine kernel solution: the normal equations contain NaN or inf");
    }
    Eigen::FullPivLU<Eigen::MatrixXd> lu(m);
    if (lu.isInvertible()) {
        Eigen::VectorXd a = lu.solve(b);
        if (a.allFinite()) {
            if (how) *how = SolvedBy::LU;
            return a;
        }
    }
    Eigen::VectorXd a = eigenPseudoInverse(m, 0.0) * b;
    if (!a.allFinite()) throw SingularMatrixError("unable to determine kernel solution");
    if (how) *how = SolvedBy::EIGENVECTOR;
    return a;
}

double conditionNumber(const Eigen::MatrixXd& m, ConditionNumberType type) {
    if (m.size() == 0) throw InvalidInputError("conditionNumber: empty matrix");
    if (type == ConditionNumberType::EIGENVALUE) {
        Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(m, Eigen::EigenvaluesOnly);
        const Eigen::VectorXd& e = es.eigenvalues();  // ascending
        return e[e.size() - 1] / e[0];
    }
    Eigen::JacobiSVD<Eigen::MatrixXd> svd(m);
    const Eigen::VectorXd& s = svd.singularValues();  // descending
    return s[0] / s[s.size() - 1];
}

KernelSolution::KernelSolution() : _id(nextSolutionId++) {}

void KernelSolution::requireSolved(const char* what) const {
    if (_solvedBy == SolvedBy::NONE) {
        throw PsfMatchError(std::string(what) + ": the kernel solution has not been solved");
    }
}

const Eigen::VectorXd& KernelSolution::getSolution() const {
    requireSolved("getSolution");
    return _aVec;
}

StaticKernelSolution::StaticKernelSolution(KernelList basis, bool fitForBackground)
        : StaticKernelSolution(std::make_shared<const KernelList>(std::move(basis)), fitForBackground) {}

StaticKernelSolution::StaticKernelSolution(std::shared_ptr<const KernelList> basis, bool fitForBackground)
        : _basis(std::move(basis)), _fitForBackground(fitForBackground) {
    if (!_basis) throw InvalidInputError("StaticKernelSolution: null kernel basis");
    checkBasisList(*_basis, "StaticKernelSolution");
}

void StaticKernelSolution::build(const ImageD& templateImage, const ImageD& scienceImage, const ImageD& variance) {
    if (scienceImage.rows() != templateImage.rows() || scienceImage.cols() != templateImage.cols() ||
        variance.rows() != templateImage.rows() || variance.cols() != templateImage.cols()) {
        throw InvalidInputError("StaticKernelSolution.build: template, science and variance differ in shape");
    }
    const FixedKernel& k0 = _basis->front();
    const Box2I g = goodBox(templateImage.cols(), templateImage.rows(), k0.getWidth(), k0.getHeight());
    const long gnx = g.getWidth(), npix = g.isEmpty() ? 0 : gnx * g.getHeight();
    const long nb = static_cast<long>(_basis->size());
    const long nt = nb + (_fitForBackground ? 1 : 0);

    // C lives in per-thread scratch unless solve() needs it: a fresh ~120 KB matrix per
    // candidate makes the allocator hand pages back to the system and fault them in again,
    // a large part of the single-kernel pass.
    thread_local Eigen::MatrixXd scratch;
    Eigen::MatrixXd& c = keepsDesignMatrix() ? _cMat : scratch;
    c.resize(npix, nt);
    convolveBasisOnStamp(templateImage, *_basis, c.leftCols(nb));

    Eigen::VectorXd sqrtW(npix), s(npix);
    for (long y = 0; y < g.getHeight(); ++y) {
        for (long x = 0; x < gnx; ++x) {
            sqrtW[y * gnx + x] = 1.0 / std::sqrt(variance(g.minY + y, g.minX + x));
            s[y * gnx + x] = scienceImage(g.minY + y, g.minX + x);
        }
    }
    c.leftCols(nb) = sqrtW.asDiagonal() * c.leftCols(nb);  // row scaling: no aliasing
    if (_fitForBackground) c.col(nb) = sqrtW;
    _sVec = sqrtW.cwiseProduct(s);
    _mMat = Eigen::MatrixXd::Zero(nt, nt);
    _mMat.selfadjointView<Eigen::Lower>().rankUpdate(c.transpose());
    _mMat.triangularView<Eigen::StrictlyUpper>() = _mMat.transpose();
    _bVec = c.transpose() * _sVec;
    _solvedBy = SolvedBy::NONE;
}

void StaticKernelSolution::solve() {
    if (_mMat.size() == 0) throw PsfMatchError("StaticKernelSolution.solve: build() was not called");
    _aVec = solveNormalEquations(_mMat, _bVec, &_solvedBy);
    makeKernel();
}

void StaticKernelSolution::makeKernel() {
    // Renewed before anything changes, so a kernel or background half-made by a throw below
    // never carries the serial of an earlier one.
    _kernelSerial = nextKernelSerial++;
    const long nb = static_cast<long>(_basis->size());
    if (!_aVec.head(nb).allFinite()) throw PsfMatchError("unable to determine kernel solution: NaN coefficient");
    _kernel = linearCombination(*_basis, _aVec.head(nb));
    _kSum = _kernel->getSum();
    _background = _fitForBackground ? _aVec[nb] : 0.0;
    if (std::isnan(_background)) throw PsfMatchError("unable to determine kernel solution: NaN background");
    _cMat.resize(0, 0);
    _sVec.resize(0);
}

const FixedKernel& StaticKernelSolution::getKernel() const {
    requireSolved("getKernel");
    return *_kernel;
}

double StaticKernelSolution::getBackground() const {
    requireSolved("getBackground");
    return _background;
}

double StaticKernelSolution::getKsum() const {
    requireSolved("getKsum");
    return _kSum;
}

Eigen::MatrixXd StaticKernelSolution::getCovariance() const {
    requireSolved("getCovariance");
    Eigen::FullPivLU<Eigen::MatrixXd> lu(_mMat);
    if (lu.isInvertible()) return lu.inverse();
    return eigenPseudoInverse(_mMat, 0.0);
}

ImageD StaticKernelSolution::getKernelUncertaintyImage() const {
    const Eigen::MatrixXd cov = getCovariance();
    const long nb = static_cast<long>(_basis->size());
    const long npix = _basis->front().getImage().size();
    Eigen::MatrixXd b(npix, nb);
    for (long k = 0; k < nb; ++k) {
        b.col(k) = Eigen::Map<const Eigen::VectorXd>((*_basis)[k].getImage().data(), npix);
    }
    const Eigen::VectorXd var = (b * cov.topLeftCorner(nb, nb)).cwiseProduct(b).rowwise().sum();
    ImageD out(_basis->front().getHeight(), _basis->front().getWidth());
    Eigen::Map<Eigen::VectorXd>(out.data(), npix) = var.cwiseMax(0.0).cwiseSqrt();
    return out;
}

RegularizedKernelSolution::RegularizedKernelSolution(KernelList basis, bool fitForBackground,
                                                     Eigen::MatrixXd hMat, const KernelControl& control)
        : RegularizedKernelSolution(std::make_shared<const KernelList>(std::move(basis)), fitForBackground,
                                    std::make_shared<const Eigen::MatrixXd>(std::move(hMat)), control) {}

RegularizedKernelSolution::RegularizedKernelSolution(std::shared_ptr<const KernelList> basis, bool fitForBackground,
                                                     std::shared_ptr<const Eigen::MatrixXd> hMat,
                                                     const KernelControl& control)
        : StaticKernelSolution(std::move(basis), fitForBackground), _hMat(std::move(hMat)), _control(control) {
    if (!_hMat) throw InvalidInputError("RegularizedKernelSolution: null regularization matrix");
    const long nt = static_cast<long>(_basis->size()) + (fitForBackground ? 1 : 0);
    if (_hMat->rows() != nt || _hMat->cols() != nt) {
        throw InvalidInputError("RegularizedKernelSolution: H is " + std::to_string(_hMat->rows()) + "x" +
                                std::to_string(_hMat->cols()) + " but the solution has " + std::to_string(nt) +
                                " parameters");
    }
}

std::vector<double> RegularizedKernelSolution::lambdaGrid() const {
    std::vector<double> grid;
    if (_control.lambdaType != LambdaType::MINIMIZE_BIASED_RISK &&
        _control.lambdaType != LambdaType::MINIMIZE_UNBIASED_RISK) {
        return grid;
    }
    if (!(_control.lambdaStep > 0.0) || !(_control.lambdaMax >= _control.lambdaMin)) {
        throw InvalidInputError("lambda scan needs lambdaStep > 0 and lambdaMax >= lambdaMin");
    }
    // lambdaMin + k·lambdaStep up to lambdaMax inclusive. Indexing avoids accumulated rounding;
    // the 1e-9-step slack keeps lambdaMax when it lies on the grid but never steps past it.
    const long nSteps =
            static_cast<long>(std::floor((_control.lambdaMax - _control.lambdaMin) / _control.lambdaStep + 1e-9));
    for (long k = 0; k <= nSteps; ++k) {
        const double v = _control.lambdaMin + static_cast<double>(k) * _control.lambdaStep;
        grid.push_back(_control.lambdaStepType == LambdaStepType::LOG ? std::pow(10.0, v) : v);
    }
    return grid;
}

double RegularizedKernelSolution::estimateRisk(double lambda, const Eigen::MatrixXd& vvt,
                                               const Eigen::MatrixXd& mPinv) const {
    const Eigen::MatrixXd mLambda = _mMat + lambda * *_hMat;
    Eigen::FullPivLU<Eigen::MatrixXd> lu(mLambda);
    const Eigen::MatrixXd mLambdaInv = lu.isInvertible() ? Eigen::MatrixXd(lu.inverse()) : eigenPseudoInverse(mLambda, 0.0);
    const Eigen::VectorXd a = mLambdaInv * _bVec;
    const double term1 = a.dot(vvt * a);
    const double term2a = (vvt * mLambdaInv).trace();
    const double term2b = a.dot(mPinv * _bVec);
    return term1 + 2.0 * (term2a - term2b);
}

void RegularizedKernelSolution::solve() {
    if (_mMat.size() == 0) throw PsfMatchError("RegularizedKernelSolution.solve: build() was not called");
    switch (_control.lambdaType) {
        case LambdaType::ABSOLUTE:
            _lambda = _control.lambdaValue;
            break;
        case LambdaType::RELATIVE: {
            const double trH = _hMat->trace();
            if (trH == 0.0) throw InvalidInputError("relative lambda: the regularization matrix has zero trace");
            _lambda = _control.lambdaScaling * _mMat.trace() / trH;
            break;
        }
        case LambdaType::MINIMIZE_BIASED_RISK:
        case LambdaType::MINIMIZE_UNBIASED_RISK: {
            if (_cMat.size() == 0) throw PsfMatchError("risk-based lambda needs the design matrix: call build() first");
            Eigen::BDCSVD<Eigen::MatrixXd> svd(_cMat, Eigen::ComputeThinV);
            const Eigen::MatrixXd vvt = svd.matrixV() * svd.matrixV().transpose();
            const double cut =
                    _control.lambdaType == LambdaType::MINIMIZE_BIASED_RISK ? _control.maxConditionNumber : 0.0;
            const Eigen::MatrixXd mPinv = eigenPseudoInverse(_mMat, cut);
            double bestRisk = std::numeric_limits<double>::infinity();
            for (double lambda : lambdaGrid()) {
                const double risk = estimateRisk(lambda, vvt, mPinv);
                if (risk < bestRisk) {
                    bestRisk = risk;
                    _lambda = lambda;
                }
            }
            if (!std::isfinite(bestRisk)) throw PsfMatchError("risk-based lambda: no finite risk in the scan");
            break;
        }
    }
    _aVec = solveNormalEquations(_mMat + _lambda * *_hMat, _bVec, &_solvedBy);
    makeKernel();
}

Eigen::MatrixXd RegularizedKernelSolution::getCovariance() const {
    requireSolved("getCovariance");
    const Eigen::MatrixXd mLambda = _mMat + _lambda * *_hMat;
    Eigen::FullPivLU<Eigen::MatrixXd> lu(mLambda);
    const Eigen::MatrixXd inv = lu.isInvertible() ? Eigen::MatrixXd(lu.inverse()) : eigenPseudoInverse(mLambda, 0.0);
    return inv * _mMat * inv;
}

}  // namespace psfmatch
