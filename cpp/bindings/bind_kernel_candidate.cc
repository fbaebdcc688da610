// SPDX-License-Identifier: BSD-3-Clause
#include <array>
#include <cstdint>
#include <memory>
#include <string>

#include "common.h"
#include "psfmatch/errors.h"
#include "psfmatch/kernel_candidate.h"
#include "psfmatch/stamp_source.h"

namespace psfmatch {
namespace bindings {

namespace {

/// A numpy array as a PlaneRef (its dtype float32, float64 or int32), or InvalidInputError.
PlaneRef planeOf(const py::array& a, const char* what) {
    if (a.ndim() != 2) throw InvalidInputError(std::string("StampPlanes: the ") + what + " must be 2-D");
    PlaneRef p;
    if (py::isinstance<py::array_t<float>>(a)) {
        p.type = PlaneRef::FLOAT32;
    } else if (py::isinstance<py::array_t<double>>(a)) {
        p.type = PlaneRef::FLOAT64;
    } else if (py::isinstance<py::array_t<std::int32_t>>(a)) {
        p.type = PlaneRef::INT32;
    } else {
        throw InvalidInputError(std::string("StampPlanes: the ") + what + " has dtype " +
                                py::str(a.dtype()).cast<std::string>() +
                                "; image and variance must be float32 or float64, the mask int32");
    }
    p.data = a.data();
    p.ny = a.shape(0);
    p.nx = a.shape(1);
    p.rowStride = a.strides(0);
    p.colStride = a.strides(1);
    return p;
}

}  // namespace

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
    // Two images' planes that candidates cut their stamps from in place (see StampPlanes).
    // The arrays are held (a reference each) until the last candidate using them is gone;
    // that may happen on any thread, so the release takes the GIL.
    py::class_<StampPlanes, std::shared_ptr<StampPlanes>>(m, "StampPlanes")
            .def(py::init([](const py::array& templateImage, const py::array& templateMask,
                             const py::array& templateVariance, const py::array& scienceImage,
                             const py::array& scienceMask, const py::array& scienceVariance,
                             std::pair<int, int> xy0) {
                     const std::array<PlaneRef, 3> t = {planeOf(templateImage, "template image"),
                                                        planeOf(templateMask, "template mask"),
                                                        planeOf(templateVariance, "template variance")};
                     const std::array<PlaneRef, 3> s = {planeOf(scienceImage, "science image"),
                                                        planeOf(scienceMask, "science mask"),
                                                        planeOf(scienceVariance, "science variance")};
                     auto* held = new py::tuple(py::make_tuple(templateImage, templateMask, templateVariance,
                                                               scienceImage, scienceMask, scienceVariance));
                     std::shared_ptr<const void> owner(held, [](py::tuple* h) {
                         py::gil_scoped_acquire gil;
                         delete h;
                     });
                     return std::make_shared<StampPlanes>(t, s, xy0.first, xy0.second, std::move(owner));
                 }),
                 py::arg("templateImage"), py::arg("templateMask"), py::arg("templateVariance"),
                 py::arg("scienceImage"), py::arg("scienceMask"), py::arg("scienceVariance"), py::arg("xy0"))
            .def("getBBox", &StampPlanes::getBBox);
    cls.def(py::init<double, double, MaskedImage, MaskedImage, const KernelControl&, double>(), py::arg("xCenter"),
            py::arg("yCenter"), py::arg("templateMaskedImage"), py::arg("scienceMaskedImage"), py::arg("control"),
            py::arg("rating") = std::numeric_limits<double>::quiet_NaN())
            // The stamps as a box of shared planes (parent coordinates), cut when needed.
            .def(py::init([](double x, double y, std::shared_ptr<StampPlanes> planes, const Box2I& box,
                             const KernelControl& control, double rating) {
                     return std::make_shared<KernelCandidate>(x, y, std::move(planes), box, control, rating);
                 }),
                 py::arg("xCenter"), py::arg("yCenter"), py::arg("planes"), py::arg("box"), py::arg("control"),
                 py::arg("rating") = std::numeric_limits<double>::quiet_NaN())
            .def("getXCenter", &KernelCandidate::getXCenter)
            .def("getYCenter", &KernelCandidate::getYCenter)
            .def("getCandidateRating", &KernelCandidate::getCandidateRating)
            .def("setCandidateRating", &KernelCandidate::setCandidateRating, py::arg("rating"))
            .def("getStatus", &KernelCandidate::getStatus)
            .def("setStatus", &KernelCandidate::setStatus, py::arg("status"))
            .def("getChi2", &KernelCandidate::getChi2,
                 "The residual variance of the latest fit measured by BuildSingleKernelVisitor; NaN "
                 "until then (test with math.isfinite).")
            .def("setChi2", &KernelCandidate::setChi2, py::arg("chi2"))
            .def("getId", &KernelCandidate::getId)
            .def("isInitialized", &KernelCandidate::isInitialized)
            .def("getUsedRegularization", &KernelCandidate::getUsedRegularization)
            .def("getTemplateMaskedImage", &KernelCandidate::getTemplateMaskedImage)
            .def("getScienceMaskedImage", &KernelCandidate::getScienceMaskedImage)
            .def("getStampBBox", &KernelCandidate::getStampBBox)
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
