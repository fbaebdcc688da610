// SPDX-License-Identifier: BSD-3-Clause
#include "common.h"
#include "psfmatch/control.h"

namespace psfmatch {
namespace bindings {

void bindControl(py::module_& m) {
    py::enum_<ConditionNumberType>(m, "ConditionNumberType")
            .value("EIGENVALUE", ConditionNumberType::EIGENVALUE)
            .value("SVD", ConditionNumberType::SVD);
    py::enum_<LambdaType>(m, "LambdaType")
            .value("ABSOLUTE", LambdaType::ABSOLUTE)
            .value("RELATIVE", LambdaType::RELATIVE)
            .value("MINIMIZE_BIASED_RISK", LambdaType::MINIMIZE_BIASED_RISK)
            .value("MINIMIZE_UNBIASED_RISK", LambdaType::MINIMIZE_UNBIASED_RISK);
    py::enum_<LambdaStepType>(m, "LambdaStepType")
            .value("LINEAR", LambdaStepType::LINEAR)
            .value("LOG", LambdaStepType::LOG);
    py::enum_<SpatialModelType>(m, "SpatialModelType")
            .value("POLYNOMIAL", SpatialModelType::POLYNOMIAL)
            .value("CHEBYSHEV1", SpatialModelType::CHEBYSHEV1);

    py::class_<KernelControl> cls(m, "KernelControl", "The plain values the core reads from a PsfMatchConfig.");
    cls.def(py::init<>());
#define PSFMATCH_FIELD(name) cls.def_readwrite(#name, &KernelControl::name)
    PSFMATCH_FIELD(fitForBackground);
    PSFMATCH_FIELD(constantVarianceWeighting);
    PSFMATCH_FIELD(iterateSingleKernel);
    PSFMATCH_FIELD(calculateKernelUncertainty);
    PSFMATCH_FIELD(checkConditionNumber);
    PSFMATCH_FIELD(maxConditionNumber);
    PSFMATCH_FIELD(conditionNumberType);
    PSFMATCH_FIELD(useRegularization);
    PSFMATCH_FIELD(lambdaType);
    PSFMATCH_FIELD(lambdaValue);
    PSFMATCH_FIELD(lambdaScaling);
    PSFMATCH_FIELD(lambdaStepType);
    PSFMATCH_FIELD(lambdaMin);
    PSFMATCH_FIELD(lambdaMax);
    PSFMATCH_FIELD(lambdaStep);
    PSFMATCH_FIELD(badMaskBits);
    PSFMATCH_FIELD(edgeBit);
    PSFMATCH_FIELD(noDataBit);
    PSFMATCH_FIELD(candidateCoreRadius);
    PSFMATCH_FIELD(useCoreStats);
    PSFMATCH_FIELD(singleKernelClipping);
    PSFMATCH_FIELD(candidateResidualMeanMax);
    PSFMATCH_FIELD(candidateResidualStdMax);
    PSFMATCH_FIELD(kernelSumClipping);
    PSFMATCH_FIELD(maxKsumSigma);
    PSFMATCH_FIELD(spatialKernelClipping);
    PSFMATCH_FIELD(spatialKernelOrder);
    PSFMATCH_FIELD(spatialBgOrder);
    PSFMATCH_FIELD(spatialModelType);
    PSFMATCH_FIELD(usePcaForSpatialKernel);
    PSFMATCH_FIELD(subtractMeanForPca);
    PSFMATCH_FIELD(numPrincipalComponents);
    PSFMATCH_FIELD(nThreads);
#undef PSFMATCH_FIELD
}

}  // namespace bindings
}  // namespace psfmatch
