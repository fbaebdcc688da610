// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_KERNEL_CANDIDATE_H
#define PSFMATCH_KERNEL_CANDIDATE_H

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>

#include <Eigen/Core>

#include "psfmatch/control.h"
#include "psfmatch/image.h"
#include "psfmatch/kernel.h"
#include "psfmatch/kernel_solution.h"
#include "psfmatch/spatial_function.h"
#include "psfmatch/stamp_source.h"

namespace psfmatch {

/// The (mean, rms) of a difference stamp's normalised residuals (ImageStatistics), with the
/// settings they depend on besides the kernel and background: the bad mask bits and the core
/// half-width (0: the whole stamp).
struct ResidualStatistics {
    double mean = std::numeric_limits<double>::quiet_NaN();
    double rms = std::numeric_limits<double>::quiet_NaN();
    std::int32_t badBits = 0;
    int core = 0;
};

/// A spatial kernel and background as one model: what AssessSpatialKernelVisitor judges
/// candidates by, shared by every candidate it judged.
struct SpatialModel {
    LinearCombinationKernel kernel;
    SpatialBackground background;
};

/// One star's template and science stamps and the kernel that matches them (docs/algorithm.md §1.1).
class KernelCandidate : public std::enable_shared_from_this<KernelCandidate> {
public:
    enum Status { BAD = 0, GOOD = 1, UNKNOWN = 2 };
    /// Which solution an accessor reads: ORIG (first fit), PCA (latest refit), RECENT (PCA if
    /// present, else ORIG).
    enum CandidateSwitch { ORIG = 0, PCA = 1, RECENT = 2 };

    /// A candidate at parent position (xCenter, yCenter) with stamps of one shape and origin.
    /// A NaN rating means "rate by the mean of image·sqrt(1/variance) over the science core";
    /// if that fails the candidate starts BAD. Throws InvalidInputError for mismatched stamps.
    KernelCandidate(double xCenter, double yCenter, MaskedImage templateStamp, MaskedImage scienceStamp,
                    const KernelControl& control, double rating = std::numeric_limits<double>::quiet_NaN());
    /// A candidate whose stamps are `box` (parent coordinates) of a source shared with other
    /// candidates, cut when needed (no copy is kept). Throws InvalidInputError for a null
    /// source or a box outside it.
    KernelCandidate(double xCenter, double yCenter, std::shared_ptr<const StampSource> stamps, const Box2I& box,
                    const KernelControl& control, double rating = std::numeric_limits<double>::quiet_NaN());

    double getXCenter() const { return _xCenter; }
    double getYCenter() const { return _yCenter; }
    double getCandidateRating() const { return _rating; }
    void setCandidateRating(double rating) { _rating = rating; }
    Status getStatus() const { return _status; }
    void setStatus(Status status) { _status = status; }
    /// The residual variance of the latest fit a visitor measured (BuildSingleKernelVisitor);
    /// NaN until then.
    double getChi2() const { return _chi2; }
    void setChi2(double chi2) { _chi2 = chi2; }
    int getId() const { return _id; }
    bool isInitialized() const { return _isInitialized; }
    bool getUsedRegularization() const { return _useRegularization; }
    bool getFitForBackground() const { return _control.fitForBackground; }
    const KernelControl& getControl() const { return _control; }
    /// The template and science stamps (copies, in double; cut from the source each call).
    MaskedImage getTemplateMaskedImage() const { return _stamps->cut(false, _box); }
    MaskedImage getScienceMaskedImage() const { return _stamps->cut(true, _box); }
    /// The stamps' box in parent coordinates.
    const Box2I& getStampBBox() const { return _box; }
    /// The weights' variance of the latest build (after constant weighting, if on).
    ImageD getVarianceEstimate() const;

    /// Fits a kernel with `basis` (and regularization H if given, a delta-function basis).
    /// The first call fills ORIG and initialises; later calls fill PCA. Sets BAD if the
    /// condition number check fails; never sets GOOD. Throws on bad variance or a NaN solution.
    void build(const KernelList& basis, const std::optional<Eigen::MatrixXd>& hMat = std::nullopt);
    /// The same with a basis (and H, or null) that the solutions share instead of copying.
    void build(std::shared_ptr<const KernelList> basis, std::shared_ptr<const Eigen::MatrixXd> hMat);

    std::shared_ptr<StaticKernelSolution> getKernelSolution(CandidateSwitch which) const;
    const FixedKernel& getKernel(CandidateSwitch which) const;
    double getBackground(CandidateSwitch which) const;
    double getKsum(CandidateSwitch which) const;
    /// The unnormalised kernel image of a solution.
    ImageD getKernelImage(CandidateSwitch which) const;
    /// The ORIG kernel image.
    ImageD getImage() const { return getKernelImage(ORIG); }
    /// D = S − (K ⊗ T + b) over the stamp with a solution's kernel and background.
    MaskedImage getDifferenceImage(CandidateSwitch which) const;
    /// The same with any kernel and background.
    MaskedImage getDifferenceImage(const FixedKernel& kernel, double background) const;

    /// Residual statistics remembered by the visitors that computed them, so that the
    /// metric_* metadata (candidateResiduals) need not compute them again. LOCAL: those of
    /// the RECENT solution whose getKernelSerial() is `kernelSerial`. SPATIAL: those of
    /// `model` evaluated at the candidate's centre. Each slot holds the latest; build()
    /// clears the LOCAL one. Reading them is the caller's business: a slot says what it was computed
    /// with, and only the caller knows what it wants.
    void setLocalResiduals(std::uint64_t kernelSerial, const ResidualStatistics& stats);
    void setSpatialResiduals(std::shared_ptr<const SpatialModel> model, const ResidualStatistics& stats);
    /// The LOCAL slot: (kernel serial, statistics); serial 0 when empty.
    std::pair<std::uint64_t, ResidualStatistics> getLocalResiduals() const {
        return {_localSerial, _localResiduals};
    }
    /// The SPATIAL slot: (model, statistics); a null model when empty.
    std::pair<std::shared_ptr<const SpatialModel>, ResidualStatistics> getSpatialResiduals() const {
        return {_spatialModel, _spatialResiduals};
    }

private:
    std::shared_ptr<StaticKernelSolution> solveOnce(const std::shared_ptr<const KernelList>& basis,
                                                    const std::shared_ptr<const Eigen::MatrixXd>& hMat,
                                                    const ImageD& templateImage, const ImageD& scienceImage,
                                                    const ImageD& variance) const;
    /// Rates the candidate by its science stamp if the rating is NaN (both constructors).
    void rateIfUnrated();
    /// A stamp for one computation: the source's own if it keeps it, else cut into `buffer`.
    const MaskedImage& stamp(bool science, MaskedImage& buffer) const;
    double _xCenter, _yCenter;
    // The stamps are the box of a source, which may be shared by every candidate of a cell set.
    std::shared_ptr<const StampSource> _stamps;
    Box2I _box;
    KernelControl _control;
    double _rating;
    Status _status = UNKNOWN;
    double _chi2 = std::numeric_limits<double>::quiet_NaN();  // NaN: no χ² yet
    int _id;
    bool _isInitialized = false;
    bool _useRegularization = false;
    // The variance the last fit was weighted by: a constant (constantVarianceWeighting, the
    // default) is kept as its value, not as a stamp-sized image (15 KB a candidate).
    ImageD _varianceEstimate;
    double _varianceConstant = std::numeric_limits<double>::quiet_NaN();
    std::shared_ptr<StaticKernelSolution> _kernelSolutionOrig, _kernelSolutionPca;
    std::uint64_t _localSerial = 0;
    ResidualStatistics _localResiduals;
    std::shared_ptr<const SpatialModel> _spatialModel;
    ResidualStatistics _spatialResiduals;
};

}  // namespace psfmatch

#endif
