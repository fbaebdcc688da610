// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_VISITORS_H
#define PSFMATCH_VISITORS_H

#include <atomic>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include <Eigen/Core>

#include "psfmatch/control.h"
#include "psfmatch/kernel_solution.h"
#include "psfmatch/spatial_cell.h"
#include "psfmatch/spatial_function.h"

namespace psfmatch {

/// Fits each visited candidate's own kernel and clips it on its residuals (docs/algorithm.md §3.6).
class BuildSingleKernelVisitor : public CandidateVisitor {
public:
    BuildSingleKernelVisitor(KernelList basis, const KernelControl& control,
                             std::optional<Eigen::MatrixXd> hMat = std::nullopt);
    void reset() override { _nRejected = _nProcessed = 0; }
    void processCandidate(KernelCandidate& candidate) override;
    /// Candidates are independent: cells are visited on control.nThreads threads.
    int getNThreads() const override { return _control.nThreads; }
    void setSkipBuilt(bool skip) { _skipBuilt = skip; }
    bool getSkipBuilt() const { return _skipBuilt; }
    int getNRejected() const { return _nRejected; }
    int getNProcessed() const { return _nProcessed; }

private:
    std::shared_ptr<const KernelList> _basis;  ///< shared by every solution the visitor makes
    KernelControl _control;
    std::shared_ptr<const Eigen::MatrixXd> _hMat;  ///< null without regularization
    bool _skipBuilt = true;
    std::atomic<int> _nRejected{0};
    std::atomic<int> _nProcessed{0};
};

/// Clipped statistics of the candidates' kernel sums, and rejection of outliers (§4).
/// Its accumulators survive reset(); clear them with resetKernelSum().
class KernelSumVisitor : public CandidateVisitor {
public:
    enum Mode { AGGREGATE = 0, REJECT = 1 };
    explicit KernelSumVisitor(const KernelControl& control) : _control(control) {}
    void setMode(Mode mode) { _mode = mode; }
    Mode getMode() const { return _mode; }
    void processCandidate(KernelCandidate& candidate) override;
    void resetKernelSum();
    /// mean, std (clipped, from 3·0.7413·IQR about the median, then 3 iterations) and
    /// dkSumMax = maxKsumSigma·std. Throws PsfMatchError with no sums or NaN statistics.
    void processKsumDistribution();
    const std::vector<double>& getKsumList() const { return _kSums; }
    double getkSumMean() const { return _kSumMean; }
    double getkSumStd() const { return _kSumStd; }
    double getdkSumMax() const { return _dkSumMax; }
    int getkSumNpts() const { return _kSumNpts; }
    int getNRejected() const { return _nRejected; }

private:
    KernelControl _control;
    Mode _mode = AGGREGATE;
    std::vector<double> _kSums;
    double _kSumMean = 0.0, _kSumStd = 0.0, _dkSumMax = 0.0;
    int _kSumNpts = 0;
    int _nRejected = 0;
};

/// The normal system of the spatial fit and its solution (§5.2–§5.4).
class SpatialKernelSolution : public KernelSolution {
public:
    SpatialKernelSolution(KernelList basis, const Box2I& bbox, const KernelControl& control, bool constantFirstTerm);
    /// Adds one candidate's normal equations, its spatial terms frozen at its centre.
    void addConstraint(double x, double y, const Eigen::MatrixXd& q, const Eigen::VectorXd& w);
    /// Solves and forms the spatial kernel and background. Throws PsfMatchError on NaN.
    void solve();
    std::pair<LinearCombinationKernel, SpatialBackground> getSolutionPair() const;
    int getNt() const { return _nt; }
    int getNkt() const { return _kernelFunction.getNParameters(); }
    int getNbt() const { return _nbt; }
    bool getConstantFirstTerm() const { return _constantFirstTerm; }

private:
    long blockStart(long m) const;
    KernelList _basis;
    KernelControl _control;
    bool _constantFirstTerm;
    SpatialFunction _kernelFunction;
    SpatialFunction _backgroundFunction;
    int _nbt;
    int _nt;
    std::optional<LinearCombinationKernel> _kernel;
    std::optional<SpatialBackground> _background;
};

/// Accumulates every visited candidate into one spatial fit (§5.3).
class BuildSpatialKernelVisitor : public CandidateVisitor {
public:
    BuildSpatialKernelVisitor(KernelList basis, const Box2I& bbox, const KernelControl& control,
                              bool constantFirstTerm);
    void reset() override;
    void processCandidate(KernelCandidate& candidate) override;
    void solveLinearEquation() { _solution->solve(); }
    std::pair<LinearCombinationKernel, SpatialBackground> getSolutionPair() const {
        return _solution->getSolutionPair();
    }
    std::shared_ptr<SpatialKernelSolution> getKernelSolution() const { return _solution; }
    int getNCandidates() const { return _nCandidates; }

private:
    KernelList _basis;
    Box2I _bbox;
    KernelControl _control;
    bool _constantFirstTerm;
    std::shared_ptr<SpatialKernelSolution> _solution;
    int _nCandidates = 0;
};

/// Clips candidates that the spatial model fits badly (§5.5).
class AssessSpatialKernelVisitor : public CandidateVisitor {
public:
    /// Each judged candidate remembers its residual statistics under this model
    /// (KernelCandidate::setSpatialResiduals), for candidateResiduals.
    AssessSpatialKernelVisitor(LinearCombinationKernel kernel, SpatialBackground background,
                               const KernelControl& control)
            : _model(std::make_shared<const SpatialModel>(SpatialModel{std::move(kernel), std::move(background)})),
              _control(control) {}
    void reset() override { _nGood = _nRejected = _nProcessed = 0; }
    void processCandidate(KernelCandidate& candidate) override;
    /// Candidates are independent: cells are visited on control.nThreads threads.
    int getNThreads() const override { return _control.nThreads; }
    int getNGood() const { return _nGood; }
    int getNRejected() const { return _nRejected; }
    int getNProcessed() const { return _nProcessed; }

private:
    std::shared_ptr<const SpatialModel> _model;
    KernelControl _control;
    std::atomic<int> _nGood{0}, _nRejected{0}, _nProcessed{0};
};

/// Principal components of a set of kernel images (§5.7).
class KernelPca {
public:
    void addImage(const ImageD& image, double flux);
    int getNImages() const { return static_cast<int>(_images.size()); }
    /// Subtracts the mean image from every image and keeps it.
    void subtractMean();
    const ImageD& getMean() const { return _mean; }
    /// Eigen-images of R_ij = ⟨I_i, I_j⟩/(f_i f_j)/N by decreasing eigenvalue (at most 100),
    /// each scaled so its largest-magnitude pixel is +1.
    void analyze();
    const std::vector<double>& getEigenValues() const { return _eigenValues; }
    const std::vector<ImageD>& getEigenImages() const { return _eigenImages; }

private:
    std::vector<ImageD> _images;
    std::vector<double> _fluxes;
    ImageD _mean;
    std::vector<double> _eigenValues;
    std::vector<ImageD> _eigenImages;
};

/// Adds each candidate's ORIG kernel image, normalised to unit sum, to a KernelPca.
class KernelPcaVisitor : public CandidateVisitor {
public:
    explicit KernelPcaVisitor(std::shared_ptr<KernelPca> pca) : _pca(std::move(pca)) {}
    void processCandidate(KernelCandidate& candidate) override;
    std::shared_ptr<KernelPca> getPca() const { return _pca; }

private:
    std::shared_ptr<KernelPca> _pca;
};

/// The residual statistics behind the metric_* metadata (docs/algorithm.md §6.1), one row per
/// candidate in the order given: (mean, rms) of the normalised residuals of its own RECENT kernel
/// and background (LOCAL), then of `kernel` and `background` evaluated at its centre (SPATIAL),
/// each from ImageStatistics over the stamp, or its core when control.useCoreStats. A pair is NaN
/// where ImageStatistics::apply throws (a non-finite sum). Candidates are independent: they are
/// processed on control.nThreads threads and the result does not depend on the count. Each
/// candidate must be initialised (have a RECENT solution).
///
/// With `reuse`, a pair a visitor already computed is taken from the candidate instead of
/// computed again, when it was provably computed from the same inputs: LOCAL by
/// BuildSingleKernelVisitor for the RECENT solution's kernel serial, SPATIAL by
/// AssessSpatialKernelVisitor with a model equal bit for bit to (kernel, background), both
/// with the same badMaskBits and core. The values are then identical to a computation.
/// `reused` (optional) receives an n × 2 array, 1 where the LOCAL (column 0) or SPATIAL
/// (column 1) pair was reused.
Eigen::MatrixXd candidateResiduals(const std::vector<std::shared_ptr<KernelCandidate>>& candidates,
                                   const LinearCombinationKernel& kernel, const SpatialBackground& background,
                                   const KernelControl& control, bool reuse = true,
                                   Eigen::ArrayXXi* reused = nullptr);

}  // namespace psfmatch

#endif
