// SPDX-License-Identifier: BSD-3-Clause
#include "common.h"
#include "psfmatch/basis.h"

namespace psfmatch {
namespace bindings {

void bindBasis(py::module_& m) {
    m.def("makeAlardLuptonBasisList", &makeAlardLuptonBasisList, py::arg("halfWidth"), py::arg("nGauss"),
          py::arg("sigGauss"), py::arg("degGauss"));
    m.def("renormalizeKernelList", &renormalizeKernelList, py::arg("kernelList"));
    m.def("makeDeltaFunctionBasisList", &makeDeltaFunctionBasisList, py::arg("width"), py::arg("height"));
    py::enum_<RegularizationType>(m, "RegularizationType")
            .value("CENTRAL_DIFFERENCE", RegularizationType::CENTRAL_DIFFERENCE)
            .value("FORWARD_DIFFERENCE", RegularizationType::FORWARD_DIFFERENCE);
    m.def("makeRegularizationMatrix", &makeRegularizationMatrix, py::arg("width"), py::arg("height"),
          py::arg("regularizationType"), py::arg("stencil"), py::arg("orders"), py::arg("borderPenalty"),
          py::arg("fitForBackground"));
}

}  // namespace bindings
}  // namespace psfmatch
