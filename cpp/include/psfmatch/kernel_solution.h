// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_KERNEL_SOLUTION_H
#define PSFMATCH_KERNEL_SOLUTION_H

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

#include <Eigen/Core>

#include "psfmatch/control.h"
#include "psfmatch/image.h"
#include "psfmatch/kernel.h"

namespace psfmatch {

/// How a normal system was solved (docs/algorithm.md §1.2, §3.3).
enum class SolvedBy { NONE, LU, EIGENVECTOR };

/// Solves the symmetric system M a = b: LU with full pivoting, or, if LU reports M singular, the
/// eigen-decomposition pseudo-inverse: eigenvalues zero to rounding (|e| ≤ n·ε·|e|max) are
/// dropped, all others are inverted, so a rank-deficient system gets its minimum-norm solution.
/// Throws SingularMatrixError if neither gives a finite answer. `how` (optional) receives the
/// method used.
Eigen::VectorXd solveNormalEquations(const Eigen::MatrixXd& m, const Eigen::VectorXd& b, SolvedBy* how = nullptr);

/// λ_max/λ_min of the symmetric eigenvalues (EIGENVALUE; may be negative) or σ_max/σ_min of the
/// singular values (SVD).
double conditionNumber(const Eigen::MatrixXd& m, ConditionNumberType type);

/// The common part of every solution: normal matrix M, vector b, solution a, how it was solved,
/// and a process-wide increasing id.
class KernelSolution {
public:
    KernelSolution();
    virtual ~KernelSolution() = default;
    KernelSolution(const KernelSolution&) = delete;
    KernelSolution& operator=(const KernelSolution&) = delete;

    int getId() const { return _id; }
    SolvedBy getSolvedBy() const { return _solvedBy; }
    /// The (unregularized) normal matrix M = CᵀWC.
    const Eigen::MatrixXd& getM() const { return _mMat; }
    /// The normal vector b = CᵀWs.
    const Eigen::VectorXd& getB() const { return _bVec; }
    /// The solution vector; throws PsfMatchError before a successful solve.
    const Eigen::VectorXd& getSolution() const;
    double getConditionNumber(ConditionNumberType type) const { return conditionNumber(_mMat, type); }

protected:
    void requireSolved(const char* what) const;
    Eigen::MatrixXd _mMat;
    Eigen::VectorXd _bVec;
    Eigen::VectorXd _aVec;
    SolvedBy _solvedBy = SolvedBy::NONE;

private:
    int _id;
};

/// The per-candidate solution (docs/algorithm.md §3.2–§3.4): a spatially constant kernel
/// K = Σ a_k B_k and, optionally, a constant background, fitted by weighted least squares on
/// the good box of a stamp pair.
class StaticKernelSolution : public KernelSolution {
public:
    StaticKernelSolution(KernelList basis, bool fitForBackground);
    /// The same sharing one basis among solutions: every candidate's solution keeps its basis,
    /// and a private copy of 27 AL kernels is ~110 KB per candidate. Throws InvalidInputError
    /// for a null basis.
    StaticKernelSolution(std::shared_ptr<const KernelList> basis, bool fitForBackground);

    /// Forms M = CᵀWC and b = CᵀWs with C_k = (B_k ⊗ template)|_G (plus a column of ones for the
    /// background), W = 1/variance|_G and s = science|_G. Planes must share one shape.
    void build(const ImageD& templateImage, const ImageD& scienceImage, const ImageD& variance);
    /// Solves the system and forms the kernel, background and kernel sum. Throws PsfMatchError
    /// on a NaN coefficient or background.
    virtual void solve();

    const KernelList& getBasis() const { return *_basis; }
    bool getFitForBackground() const { return _fitForBackground; }
    const FixedKernel& getKernel() const;
    double getBackground() const;
    double getKsum() const;
    std::pair<FixedKernel, double> getSolutionPair() const { return {getKernel(), getBackground()}; }
    /// A process-wide serial number of the kernel and background, renewed by every solve():
    /// two equal serials mean the same kernel and background (0 before the first solve).
    std::uint64_t getKernelSerial() const { return _kernelSerial; }

    /// Covariance of the solution vector: the inverse of the matrix that was solved (and its
    /// regularized sandwich for a regularized solution). Valid when the weights are inverse
    /// variances (constantVarianceWeighting off, or a uniform noise field).
    virtual Eigen::MatrixXd getCovariance() const;
    /// The 1-σ uncertainty of each kernel pixel: sqrt(Σ_jk B_j Cov_jk B_k).
    ImageD getKernelUncertaintyImage() const;

protected:
    void makeKernel();
    /// Whether build() must keep the design matrix for solve() (in _cMat).
    virtual bool keepsDesignMatrix() const { return false; }
    std::shared_ptr<const KernelList> _basis;
    bool _fitForBackground;
    Eigen::MatrixXd _cMat;   ///< design matrix weighted by sqrt(W), if keepsDesignMatrix(); dropped by solve()
    Eigen::VectorXd _sVec;   ///< science pixels weighted by sqrt(W); dropped after solve()
    std::optional<FixedKernel> _kernel;
    double _background = 0.0;
    double _kSum = 0.0;
    std::uint64_t _kernelSerial = 0;
};

/// A delta-function solution with the regularization (M + λH) a = b (docs/algorithm.md §2.6).
/// λ follows control.lambdaType: absolute, relative (lambdaScaling·tr M/tr H), or the λ of
/// least biased/unbiased risk over the lambdaMin..lambdaMax scan (docs/decisions.md D3).
class RegularizedKernelSolution : public StaticKernelSolution {
public:
    RegularizedKernelSolution(KernelList basis, bool fitForBackground, Eigen::MatrixXd hMat,
                              const KernelControl& control);
    /// The same sharing the basis and H (441² doubles for a 21×21 delta-function basis) among
    /// solutions. Throws InvalidInputError for a null basis or H.
    RegularizedKernelSolution(std::shared_ptr<const KernelList> basis, bool fitForBackground,
                              std::shared_ptr<const Eigen::MatrixXd> hMat, const KernelControl& control);
    void solve() override;
    double getLambda() const { return _lambda; }
    const Eigen::MatrixXd& getH() const { return *_hMat; }
    Eigen::MatrixXd getCovariance() const override;
    /// The λ values a risk scan visits (empty for absolute/relative).
    std::vector<double> lambdaGrid() const;

protected:
    /// The risk-based λ scans need C (its SVD).
    bool keepsDesignMatrix() const override {
        return _control.lambdaType == LambdaType::MINIMIZE_BIASED_RISK ||
               _control.lambdaType == LambdaType::MINIMIZE_UNBIASED_RISK;
    }

private:
    double estimateRisk(double lambda, const Eigen::MatrixXd& vvt, const Eigen::MatrixXd& mPinv) const;
    std::shared_ptr<const Eigen::MatrixXd> _hMat;
    KernelControl _control;
    double _lambda = 0.0;
};

}  // namespace psfmatch

#endif
