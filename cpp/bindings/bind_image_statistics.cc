// SPDX-License-Identifier: BSD-3-Clause
#include "common.h"
#include "psfmatch/image_statistics.h"

namespace psfmatch {
namespace bindings {

void bindImageStatistics(py::module_& m) {
    py::class_<ImageStatistics>(m, "ImageStatistics")
            .def(py::init<const KernelControl&>(), py::arg("control"))
            .def("apply", &ImageStatistics::apply, py::arg("maskedImage"), py::arg("core") = 0)
            .def("getMean", &ImageStatistics::getMean)
            .def("getVariance", &ImageStatistics::getVariance)
            .def("getRms", &ImageStatistics::getRms)
            .def("getNpix", &ImageStatistics::getNpix)
            .def("evaluateQuality", &ImageStatistics::evaluateQuality, py::arg("control"));
}

}  // namespace bindings
}  // namespace psfmatch
