// SPDX-License-Identifier: BSD-3-Clause
#include "common.h"
#include "psfmatch/kernel_candidate.h"

namespace psfmatch {
namespace bindings {

void bindKernelCandidate(py::module_& m) {
    py::class_<KernelCandidate, std::shared_ptr<KernelCandidate>> cls(m, "KernelCandidate");
    py::enum_<KernelCandidate::Status>(cls, "Status")
            .value("BAD", KernelCandidate::BAD)
            .value("GOOD", KernelCandidate::GOOD)
            .value("UNKNOWN", KernelCandidate::UNKNOWN)
            .export_values();
    py::enum_<KernelCandidate::CandidateSwitch>(cls, "CandidateSwitch")
            .value("ORIG", KernelCandidate::ORIG)
            .value("PCA", KernelCandidate::PCA)
            .value("RECENT", KernelCandidate::RECENT)
            .export_values();
    cls.def(py::init<double, double, MaskedImage, MaskedImage, const KernelControl&, double>(), py::arg("xCenter"),
            py::arg("yCenter"), py::arg("templateMaskedImage"), py::arg("scienceMaskedImage"), py::arg("control"),
            py::arg("rating") = std::numeric_limits<double>::quiet_NaN())
            .def("getXCenter", &KernelCandidate::getXCenter)
            .def("getYCenter", &KernelCandidate::getYCenter)
            .def("getCandidateRating", &KernelCandidate::getCandidateRating)
            .def("setCandidateRating", &KernelCandidate::setCandidateRating, py::arg("rating"))
            .def("getStatus", &KernelCandidate::getStatus)
            .def("setStatus", &KernelCandidate::setStatus, py::arg("status"))
            .def("getChi2", &KernelCandidate::getChi2)
            .def("setChi2", &KernelCandidate::setChi2, py::arg("chi2"))
            .def("getId", &KernelCandidate::getId)
            .def("isInitialized", &KernelCandidate::isInitialized)
            .def("getUsedRegularization", &KernelCandidate::getUsedRegularization)
            .def("getTemplateMaskedImage", &KernelCandidate::getTemplateMaskedImage)
            .def("getScienceMaskedImage", &KernelCandidate::getScienceMaskedImage)
            .def("getVarianceEstimate", &KernelCandidate::getVarianceEstimate)
            .def("build",
                 static_cast<void (KernelCandidate::*)(const KernelList&, const std::optional<Eigen::MatrixXd>&)>(
                         &KernelCandidate::build),
                 py::arg("basisList"), py::arg("hMat") = py::none(), py::call_guard<py::gil_scoped_release>())
            .def("getKernelSolution", &KernelCandidate::getKernelSolution, py::arg("which"))
            .def("getKernel", &KernelCandidate::getKernel, py::arg("which"))
            .def("getBackground", &KernelCandidate::getBackground, py::arg("which"))
            .def("getKsum", &KernelCandidate::getKsum, py::arg("which"))
            .def("getKernelImage", &KernelCandidate::getKernelImage, py::arg("which"))
            .def("getImage", &KernelCandidate::getImage)
            .def("getDifferenceImage",
                 py::overload_cast<KernelCandidate::CandidateSwitch>(&KernelCandidate::getDifferenceImage, py::const_),
                 py::arg("which"), py::call_guard<py::gil_scoped_release>())
            .def("getDifferenceImage",
                 py::overload_cast<const FixedKernel&, double>(&KernelCandidate::getDifferenceImage, py::const_),
                 py::arg("kernel"), py::arg("background"), py::call_guard<py::gil_scoped_release>());
}

}  // namespace bindings
}  // namespace psfmatch
