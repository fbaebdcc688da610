// SPDX-License-Identifier: BSD-3-Clause
#include <string>

#include "common.h"
#include "psfmatch/errors.h"
#include "psfmatch/kernel_candidate.h"

namespace psfmatch {
namespace bindings {

namespace {

/// Copies box (parent coordinates) of a 2-D plane whose pixel [0, 0] is at xy0 into `out`
/// (converted to double), or InvalidInputError. T is the plane's dtype.
template <typename T, typename Out>
bool copyBox(const py::array& plane, std::pair<int, int> xy0, const Box2I& box, Out& out) {
    if (!py::isinstance<py::array_t<T>>(plane)) return false;
    const auto a = plane.unchecked<T, 2>();
    const long ya = box.minY - xy0.second, xa = box.minX - xy0.first;
    if (ya < 0 || xa < 0 || ya + box.getHeight() > a.shape(0) || xa + box.getWidth() > a.shape(1)) {
        throw InvalidInputError("KernelCandidate: the stamp box is not inside the image");
    }
    out.resize(box.getHeight(), box.getWidth());
    for (long y = 0; y < box.getHeight(); ++y) {
        for (long x = 0; x < box.getWidth(); ++x) out(y, x) = a(ya + y, xa + x);
    }
    return true;
}

/// The stamp `box` of an image's planes (image and variance float32 or float64, mask int32).
MaskedImage cutStamp(const py::array& image, const py::array& mask, const py::array& variance,
                     std::pair<int, int> xy0, const Box2I& box, const char* name) {
    for (const py::array* plane : {&image, &mask, &variance}) {
        if (plane->ndim() != 2) {
            throw InvalidInputError(std::string("KernelCandidate: the ") + name + " planes must be 2-D");
        }
    }
    MaskedImage stamp;
    stamp.x0 = box.minX;
    stamp.y0 = box.minY;
    const bool ok = (copyBox<float>(image, xy0, box, stamp.image) || copyBox<double>(image, xy0, box, stamp.image)) &&
                    (copyBox<float>(variance, xy0, box, stamp.variance) ||
                     copyBox<double>(variance, xy0, box, stamp.variance)) &&
                    copyBox<std::int32_t>(mask, xy0, box, stamp.mask);
    if (!ok) {
        throw InvalidInputError(std::string("KernelCandidate: the ") + name +
                                " planes must be float32 or float64 (image, variance) and int32 (mask)");
    }
    return stamp;
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
    cls.def(py::init<double, double, MaskedImage, MaskedImage, const KernelControl&, double>(), py::arg("xCenter"),
            py::arg("yCenter"), py::arg("templateMaskedImage"), py::arg("scienceMaskedImage"), py::arg("control"),
            py::arg("rating") = std::numeric_limits<double>::quiet_NaN())
            // The stamps as a box of two images' planes (parent coordinates, both images'
            // pixel [0, 0] at xy0), cut and converted here: for a caller that has checked
            // the images (ImagePsfMatchTask), without a Python object per stamp.
            .def(py::init([](double x, double y, const py::array& templateImage, const py::array& templateMask,
                             const py::array& templateVariance, const py::array& scienceImage,
                             const py::array& scienceMask, const py::array& scienceVariance,
                             std::pair<int, int> xy0, const Box2I& box, const KernelControl& control,
                             double rating) {
                     return std::make_shared<KernelCandidate>(
                             x, y, cutStamp(templateImage, templateMask, templateVariance, xy0, box, "template"),
                             cutStamp(scienceImage, scienceMask, scienceVariance, xy0, box, "science"), control,
                             rating);
                 }),
                 py::arg("xCenter"), py::arg("yCenter"), py::arg("templateImage"), py::arg("templateMask"),
                 py::arg("templateVariance"), py::arg("scienceImage"), py::arg("scienceMask"),
                 py::arg("scienceVariance"), py::arg("xy0"), py::arg("box"), py::arg("control"),
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
