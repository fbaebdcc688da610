// SPDX-License-Identifier: BSD-3-Clause
#include "common.h"
#include "psfmatch/kernel_solution.h"
#include "psfmatch/stamp_convolve.h"

namespace psfmatch {
namespace bindings {

void bindKernelSolution(py::module_& m) {
    py::enum_<SolvedBy>(m, "SolvedBy")
            .value("NONE", SolvedBy::NONE)
            .value("LU", SolvedBy::LU)
            .value("EIGENVECTOR", SolvedBy::EIGENVECTOR);

    m.def("solveNormalEquations",
          [](const Eigen::MatrixXd& mat, const Eigen::VectorXd& b) {
              SolvedBy how = SolvedBy::NONE;
              Eigen::VectorXd a = solveNormalEquations(mat, b, &how);
              return std::make_pair(a, how);
          },
          py::arg("m"), py::arg("b"), "Solve M a = b; returns (a, SolvedBy).");
    m.def("conditionNumber", &conditionNumber, py::arg("m"), py::arg("conditionNumberType"));
    m.def("convolveBasisOnStamp",
          static_cast<Eigen::MatrixXd (*)(const ImageD&, const KernelList&)>(&convolveBasisOnStamp), py::arg("image"),
          py::arg("basis"),
          py::call_guard<py::gil_scoped_release>());
    m.def(
            "convolveStampPlane",
            [](const ImageD& in, const ImageD& kernelImage) {
                ImageD out = ImageD::Constant(in.rows(), in.cols(), std::numeric_limits<double>::quiet_NaN());
                convolveStampPlane(in, kernelImage, out);
                return out;
            },
            py::arg("image"), py::arg("kernelImage"),
            "The good box of kernelImage ⊗ image (NaN outside it), as a candidate's difference image sums it.",
            py::call_guard<py::gil_scoped_release>());

    py::class_<KernelSolution, std::shared_ptr<KernelSolution>>(m, "KernelSolution")
            .def("getId", &KernelSolution::getId)
            .def("getSolvedBy", &KernelSolution::getSolvedBy)
            .def("getM", &KernelSolution::getM)
            .def("getB", &KernelSolution::getB)
            .def("getSolution", &KernelSolution::getSolution)
            .def("getConditionNumber", &KernelSolution::getConditionNumber,
                 py::arg("conditionNumberType") = ConditionNumberType::EIGENVALUE);

    py::class_<StaticKernelSolution, KernelSolution, std::shared_ptr<StaticKernelSolution>>(m,
                                                                                            "StaticKernelSolution")
            .def(py::init<KernelList, bool>(), py::arg("basisList"), py::arg("fitForBackground"))
            .def("build", &StaticKernelSolution::build, py::arg("templateImage"), py::arg("scienceImage"),
                 py::arg("variance"), py::call_guard<py::gil_scoped_release>())
            .def("solve", &StaticKernelSolution::solve, py::call_guard<py::gil_scoped_release>())
            .def("getKernel", &StaticKernelSolution::getKernel)
            .def("getBackground", &StaticKernelSolution::getBackground)
            .def("getKsum", &StaticKernelSolution::getKsum)
            .def("getKernelSerial", &StaticKernelSolution::getKernelSerial)
            .def("getSolutionPair", &StaticKernelSolution::getSolutionPair)
            .def("getBasisList", &StaticKernelSolution::getBasis)
            .def("getCovariance", &StaticKernelSolution::getCovariance)
            .def("getKernelUncertaintyImage", &StaticKernelSolution::getKernelUncertaintyImage);

    py::class_<RegularizedKernelSolution, StaticKernelSolution, std::shared_ptr<RegularizedKernelSolution>>(
            m, "RegularizedKernelSolution")
            .def(py::init<KernelList, bool, Eigen::MatrixXd, const KernelControl&>(), py::arg("basisList"),
                 py::arg("fitForBackground"), py::arg("hMat"), py::arg("control"))
            .def("getLambda", &RegularizedKernelSolution::getLambda)
            .def("getH", &RegularizedKernelSolution::getH)
            .def("lambdaGrid", &RegularizedKernelSolution::lambdaGrid);
}

}  // namespace bindings
}  // namespace psfmatch
