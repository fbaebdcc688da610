// SPDX-License-Identifier: BSD-3-Clause
#include "common.h"
#include "psfmatch/visitors.h"

namespace psfmatch {
namespace bindings {

void bindVisitors(py::module_& m) {
    py::class_<BuildSingleKernelVisitor, CandidateVisitor>(m, "BuildSingleKernelVisitor")
            .def(py::init<KernelList, const KernelControl&, std::optional<Eigen::MatrixXd>>(), py::arg("basisList"),
                 py::arg("control"), py::arg("hMat") = py::none())
            .def("setSkipBuilt", &BuildSingleKernelVisitor::setSkipBuilt, py::arg("skip"))
            .def("getSkipBuilt", &BuildSingleKernelVisitor::getSkipBuilt)
            .def("getNRejected", &BuildSingleKernelVisitor::getNRejected)
            .def("getNProcessed", &BuildSingleKernelVisitor::getNProcessed);

    py::class_<KernelSumVisitor, CandidateVisitor> ksum(m, "KernelSumVisitor");
    py::enum_<KernelSumVisitor::Mode>(ksum, "Mode")
            .value("AGGREGATE", KernelSumVisitor::AGGREGATE)
            .value("REJECT", KernelSumVisitor::REJECT)
            .export_values();
    ksum.def(py::init<const KernelControl&>(), py::arg("control"))
            .def("setMode", &KernelSumVisitor::setMode, py::arg("mode"))
            .def("getMode", &KernelSumVisitor::getMode)
            .def("resetKernelSum", &KernelSumVisitor::resetKernelSum)
            .def("processKsumDistribution", &KernelSumVisitor::processKsumDistribution)
            .def("getKsumList", &KernelSumVisitor::getKsumList)
            .def("getkSumMean", &KernelSumVisitor::getkSumMean)
            .def("getkSumStd", &KernelSumVisitor::getkSumStd)
            .def("getdkSumMax", &KernelSumVisitor::getdkSumMax)
            .def("getkSumNpts", &KernelSumVisitor::getkSumNpts)
            .def("getNRejected", &KernelSumVisitor::getNRejected);

    py::class_<SpatialKernelSolution, KernelSolution, std::shared_ptr<SpatialKernelSolution>>(m,
                                                                                            "SpatialKernelSolution")
            .def(py::init<KernelList, const Box2I&, const KernelControl&, bool>(), py::arg("basisList"),
                 py::arg("bbox"), py::arg("control"), py::arg("constantFirstTerm"))
            .def("addConstraint", &SpatialKernelSolution::addConstraint, py::arg("x"), py::arg("y"), py::arg("q"),
                 py::arg("w"))
            .def("solve", &SpatialKernelSolution::solve)
            .def("getSolutionPair", &SpatialKernelSolution::getSolutionPair)
            .def("getNt", &SpatialKernelSolution::getNt)
            .def("getNkt", &SpatialKernelSolution::getNkt)
            .def("getNbt", &SpatialKernelSolution::getNbt)
            .def("getConstantFirstTerm", &SpatialKernelSolution::getConstantFirstTerm);

    py::class_<BuildSpatialKernelVisitor, CandidateVisitor>(m, "BuildSpatialKernelVisitor")
            .def(py::init<KernelList, const Box2I&, const KernelControl&, bool>(), py::arg("basisList"),
                 py::arg("bbox"), py::arg("control"), py::arg("constantFirstTerm"))
            .def("solveLinearEquation", &BuildSpatialKernelVisitor::solveLinearEquation,
                 py::call_guard<py::gil_scoped_release>())
            .def("getSolutionPair", &BuildSpatialKernelVisitor::getSolutionPair)
            .def("getKernelSolution", &BuildSpatialKernelVisitor::getKernelSolution)
            .def("getNCandidates", &BuildSpatialKernelVisitor::getNCandidates);

    py::class_<AssessSpatialKernelVisitor, CandidateVisitor>(m, "AssessSpatialKernelVisitor")
            .def(py::init<LinearCombinationKernel, SpatialBackground, const KernelControl&>(),
                 py::arg("spatialKernel"), py::arg("spatialBackground"), py::arg("control"))
            .def("getNGood", &AssessSpatialKernelVisitor::getNGood)
            .def("getNRejected", &AssessSpatialKernelVisitor::getNRejected)
            .def("getNProcessed", &AssessSpatialKernelVisitor::getNProcessed);

    py::class_<KernelPca, std::shared_ptr<KernelPca>>(m, "KernelPca")
            .def(py::init<>())
            .def("addImage", &KernelPca::addImage, py::arg("image"), py::arg("flux"))
            .def("getNImages", &KernelPca::getNImages)
            .def("subtractMean", &KernelPca::subtractMean)
            .def("getMean", &KernelPca::getMean)
            .def("analyze", &KernelPca::analyze)
            .def("getEigenValues", &KernelPca::getEigenValues)
            .def("getEigenImages", &KernelPca::getEigenImages);

    py::class_<KernelPcaVisitor, CandidateVisitor>(m, "KernelPcaVisitor")
            .def(py::init<std::shared_ptr<KernelPca>>(), py::arg("pca"))
            .def("getPca", &KernelPcaVisitor::getPca);

    m.def(
            "candidateResiduals",
            [](const std::vector<std::shared_ptr<KernelCandidate>>& candidates, const LinearCombinationKernel& kernel,
               const SpatialBackground& background, const KernelControl& control, bool reuse) {
                return candidateResiduals(candidates, kernel, background, control, reuse);
            },
            py::arg("candidates"), py::arg("kernel"), py::arg("background"), py::arg("control"),
            py::arg("reuse") = true,
            "(n, 4) array: LOCAL mean, rms, SPATIAL mean, rms of each candidate's residuals (NaN if unusable); "
            "with reuse, pairs the visitors computed from the same inputs are taken, not recomputed.",
            py::call_guard<py::gil_scoped_release>());
    m.def(
            "candidateResidualsReused",
            [](const std::vector<std::shared_ptr<KernelCandidate>>& candidates, const LinearCombinationKernel& kernel,
               const SpatialBackground& background, const KernelControl& control) {
                Eigen::ArrayXXi reused;
                candidateResiduals(candidates, kernel, background, control, true, &reused);
                return Eigen::MatrixXi(reused.matrix());
            },
            py::arg("candidates"), py::arg("kernel"), py::arg("background"), py::arg("control"),
            "(n, 2) array of 0/1: which LOCAL and SPATIAL pairs candidateResiduals(reuse=True) takes from "
            "the candidates instead of recomputing (for tests and diagnostics).",
            py::call_guard<py::gil_scoped_release>());
}

}  // namespace bindings
}  // namespace psfmatch
