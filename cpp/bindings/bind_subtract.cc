// SPDX-License-Identifier: BSD-3-Clause
#include <optional>
#include <string>

#include "common.h"
#include "psfmatch/errors.h"
#include "psfmatch/subtract.h"

namespace psfmatch {
namespace bindings {

namespace {

/// A view of a 2-D, C-contiguous, native-order array of exactly type T, or InvalidInputError.
template <typename T>
ImageView<const T> checkedView(const py::array& a, const char* name) {
    if (a.ndim() != 2) {
        throw InvalidInputError(std::string("subtractMatched: ") + name + " must be 2-D, got " +
                                std::to_string(a.ndim()) + " dimensions");
    }
    if (!a.dtype().equal(py::dtype::of<T>())) {
        throw InvalidInputError(std::string("subtractMatched: ") + name + " has dtype " +
                                py::str(a.dtype()).cast<std::string>() + ", expected " +
                                py::str(py::dtype::of<T>()).cast<std::string>() +
                                " (native byte order) like the reference image");
    }
    if (!(a.flags() & py::array::c_style)) {
        throw InvalidInputError(std::string("subtractMatched: ") + name + " must be C-contiguous");
    }
    return ImageView<const T>(static_cast<const T*>(a.data()), a.shape(0), a.shape(1), a.shape(1));
}

/// A writable view of a 2-D, C-contiguous, native-order array of exactly type T (an output
/// written in place), or InvalidInputError.
template <typename T>
ImageView<T> writableView(const py::array& a, const char* name) {
    const ImageView<const T> view = checkedView<T>(a, name);
    if (!a.writeable()) {
        throw InvalidInputError(std::string("subtractMatched: ") + name + " must be writable to be overwritten in place");
    }
    return ImageView<T>(static_cast<T*>(const_cast<void*>(a.data())), view.ny, view.nx, view.nx);
}

template <typename T>
py::tuple subtractTyped(const py::array& referenceImage, const py::array& referenceMask,
                        const py::array& referenceVariance, const py::array& matchedImage,
                        const py::array& matchedMask, const py::array& matchedVariance, const py::array& targetMask,
                        std::pair<int, int> xy0, const SubtractionControl& control,
                        const std::optional<SpatialBackground>& background, bool inPlace) {
    MaskedImageView<const T> reference{checkedView<T>(referenceImage, "referenceImage"),
                                       checkedView<std::int32_t>(referenceMask, "referenceMask"),
                                       checkedView<T>(referenceVariance, "referenceVariance")};
    MaskedImageView<const T> matched{checkedView<T>(matchedImage, "matchedImage"),
                                     checkedView<std::int32_t>(matchedMask, "matchedMask"),
                                     checkedView<T>(matchedVariance, "matchedVariance")};
    const ImageView<const std::int32_t> target = checkedView<std::int32_t>(targetMask, "targetMask");
    if (inPlace) {
        // Every output pixel depends on the inputs at that pixel only, each read before it is
        // written: the matched planes can take the difference.
        const MaskedImageView<T> out{writableView<T>(matchedImage, "matchedImage"),
                                     writableView<std::int32_t>(matchedMask, "matchedMask"),
                                     writableView<T>(matchedVariance, "matchedVariance")};
        {
            py::gil_scoped_release release;
            subtractMatched<T>(reference, matched, target, background ? &*background : nullptr, xy0.first,
                               xy0.second, control, out);
        }
        return py::make_tuple(matchedImage, matchedMask, matchedVariance);
    }
    const long ny = reference.image.ny, nx = reference.image.nx;
    py::array_t<T, py::array::c_style> outImage({ny, nx}), outVariance({ny, nx});
    py::array_t<std::int32_t, py::array::c_style> outMask({ny, nx});
    {
        py::gil_scoped_release release;
        MaskedImageView<T> out{ImageView<T>(outImage.mutable_data(), ny, nx, nx),
                               ImageView<std::int32_t>(outMask.mutable_data(), ny, nx, nx),
                               ImageView<T>(outVariance.mutable_data(), ny, nx, nx)};
        subtractMatched<T>(reference, matched, target, background ? &*background : nullptr, xy0.first, xy0.second,
                           control, out);
    }
    return py::make_tuple(outImage, outMask, outVariance);
}

}  // namespace

void bindSubtract(py::module_& m) {
    py::class_<SubtractionControl>(m, "SubtractionControl")
            .def(py::init<>())
            .def_readwrite("scienceConvolved", &SubtractionControl::scienceConvolved)
            .def_readwrite("kappa", &SubtractionControl::kappa)
            .def_readwrite("edgeBit", &SubtractionControl::edgeBit)
            .def_readwrite("noDataBit", &SubtractionControl::noDataBit)
            .def_readwrite("innerBox", &SubtractionControl::innerBox)
            .def_readwrite("nThreads", &SubtractionControl::nThreads);

    // One entry for both pixel types: the reference image's dtype (float32 or float64) chooses,
    // every other plane must match it exactly (the caller promotes mixed inputs first).
    m.def(
            "subtractMatched",
            [](const py::array& referenceImage, const py::array& referenceMask, const py::array& referenceVariance,
               const py::array& matchedImage, const py::array& matchedMask, const py::array& matchedVariance,
               const py::array& targetMask, std::pair<int, int> xy0, const SubtractionControl& control,
               const std::optional<SpatialBackground>& background, bool inPlace) {
                if (referenceImage.dtype().equal(py::dtype::of<float>())) {
                    return subtractTyped<float>(referenceImage, referenceMask, referenceVariance, matchedImage,
                                                matchedMask, matchedVariance, targetMask, xy0, control, background,
                                                inPlace);
                }
                if (referenceImage.dtype().equal(py::dtype::of<double>())) {
                    return subtractTyped<double>(referenceImage, referenceMask, referenceVariance, matchedImage,
                                                 matchedMask, matchedVariance, targetMask, xy0, control, background,
                                                inPlace);
                }
                throw InvalidInputError("subtractMatched: referenceImage has dtype " +
                                        py::str(referenceImage.dtype()).cast<std::string>() +
                                        ", expected float32 or float64 (native byte order)");
            },
            py::arg("referenceImage"), py::arg("referenceMask"), py::arg("referenceVariance"),
            py::arg("matchedImage"), py::arg("matchedMask"), py::arg("matchedVariance"), py::arg("targetMask"),
            py::arg("xy0"), py::arg("control"), py::arg("background") = py::none(), py::arg("inPlace") = false,
            "(image, mask, variance) of the difference of a PSF-matched pair, in one threaded pass; with "
            "inPlace, written over the matched planes (which must be writable) and returned.");
}

}  // namespace bindings
}  // namespace psfmatch
