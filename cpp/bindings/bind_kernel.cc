// SPDX-License-Identifier: BSD-3-Clause
#include "common.h"
#include "psfmatch/errors.h"
#include "psfmatch/kernel.h"

namespace psfmatch {
namespace bindings {

void bindKernel(py::module_& m) {
    py::class_<SeparableTerm>(m, "SeparableTerm", "coef · ky ⊗ kx: one separable term of a kernel.")
            .def(py::init([](double coef, Eigen::VectorXd kx, Eigen::VectorXd ky) {
                     return SeparableTerm{coef, std::move(kx), std::move(ky)};
                 }),
                 py::arg("coef"), py::arg("kx"), py::arg("ky"))
            .def_readonly("coef", &SeparableTerm::coef)
            .def_readonly("kx", &SeparableTerm::kx)
            .def_readonly("ky", &SeparableTerm::ky);

    py::class_<FixedKernel>(m, "FixedKernel", "A kernel image with odd dimensions, centre ((W-1)/2, (H-1)/2).")
            .def(py::init<ImageD>(), py::arg("image"))
            .def(py::init<std::vector<SeparableTerm>>(), py::arg("terms"))
            .def("getWidth", &FixedKernel::getWidth)
            .def("getHeight", &FixedKernel::getHeight)
            .def("getDimensions", [](const FixedKernel& k) { return std::make_pair(k.getWidth(), k.getHeight()); })
            .def("getCtr", [](const FixedKernel& k) { return std::make_pair(k.getCtrX(), k.getCtrY()); })
            .def("getSum", &FixedKernel::getSum)
            .def("getImage", &FixedKernel::getImage)
            .def("isSeparable", &FixedKernel::isSeparable)
            .def("getTerms", &FixedKernel::getTerms)
            .def("scaled", &FixedKernel::scaled, py::arg("factor"))
            .def("squared", &FixedKernel::squared)
            .def("getNBasisKernels", [](const FixedKernel&) { return 1; })
            .def("getNSpatialParameters", [](const FixedKernel&) { return 0; })
            .def(
                    "computeImage",
                    [](const FixedKernel& k, py::object, py::object, bool doNormalize) {
                        const double sum = k.getSum();
                        ImageD image = k.getImage();
                        if (doNormalize) {
                            if (sum == 0.0) throw InvalidInputError("computeImage: cannot normalise a zero-sum kernel");
                            image /= sum;
                        }
                        return std::make_pair(image, sum);
                    },
                    py::arg("x") = py::none(), py::arg("y") = py::none(), py::arg("doNormalize") = false,
                    "(image, kernel sum); a fixed kernel is the same everywhere, so x and y are ignored.")
            .def("__repr__", [](const FixedKernel& k) {
                return "FixedKernel(" + std::to_string(k.getWidth()) + "x" + std::to_string(k.getHeight()) +
                       ", sum=" + std::to_string(k.getSum()) + (k.isSeparable() ? ", separable)" : ")");
            });

    m.def("linearCombination", &linearCombination, py::arg("basis"), py::arg("coefficients"));
}

}  // namespace bindings
}  // namespace psfmatch
