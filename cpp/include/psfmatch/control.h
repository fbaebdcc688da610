// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_CONTROL_H
#define PSFMATCH_CONTROL_H

#include <cstdint>

namespace psfmatch {

/// How the condition number of a normal matrix is measured (docs/algorithm.md §3.3).
enum class ConditionNumberType { EIGENVALUE, SVD };

/// How the regularization strength λ is chosen (docs/algorithm.md §2.6, docs/decisions.md D3).
enum class LambdaType { ABSOLUTE, RELATIVE, MINIMIZE_BIASED_RISK, MINIMIZE_UNBIASED_RISK };

/// How the λ scan of the risk-based modes steps between lambdaMin and lambdaMax.
enum class LambdaStepType { LINEAR, LOG };

/// The family of 2-D functions for the spatial variation (docs/algorithm.md §5.1).
enum class SpatialModelType { POLYNOMIAL, CHEBYSHEV1 };

/// Everything the C++ core reads from a configuration, as plain values.
///
/// Built from a PsfMatchConfig in exactly one place (`psfmatch.config.makeKernelControl`);
/// the field names are the config's. Mask planes arrive as an already-resolved bit mask.
struct KernelControl {
    bool fitForBackground = false;
    bool constantVarianceWeighting = true;
    bool iterateSingleKernel = false;
    bool calculateKernelUncertainty = false;

    bool checkConditionNumber = false;
    double maxConditionNumber = 5.0e7;
    ConditionNumberType conditionNumberType = ConditionNumberType::EIGENVALUE;

    bool useRegularization = false;
    LambdaType lambdaType = LambdaType::ABSOLUTE;
    double lambdaValue = 0.2;
    double lambdaScaling = 1.0e-4;
    LambdaStepType lambdaStepType = LambdaStepType::LOG;
    double lambdaMin = -1.0;
    double lambdaMax = 2.0;
    double lambdaStep = 0.1;

    std::int32_t badMaskBits = 0;  ///< OR of the badMaskPlanes bits
    std::int32_t edgeBit = 0;      ///< the EDGE plane's bit value (for "copy edge")
    std::int32_t noDataBit = 0;    ///< the NO_DATA plane's bit value (for NaN borders)
    int candidateCoreRadius = 3;
    bool useCoreStats = false;
    bool singleKernelClipping = true;
    double candidateResidualMeanMax = 0.25;
    double candidateResidualStdMax = 1.50;

    bool kernelSumClipping = true;
    double maxKsumSigma = 3.0;

    bool spatialKernelClipping = true;
    int spatialKernelOrder = 2;
    int spatialBgOrder = 1;
    SpatialModelType spatialModelType = SpatialModelType::CHEBYSHEV1;
    bool usePcaForSpatialKernel = false;
    bool subtractMeanForPca = true;
    int numPrincipalComponents = 5;

    int nThreads = 0;  ///< threads for pixel loops; 0 = all hardware threads
};

}  // namespace psfmatch

#endif
