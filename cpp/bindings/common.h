// SPDX-License-Identifier: BSD-3-Clause
// Shared by the binding files: the MaskedImage conversion and one bind function per topic.
#ifndef PSFMATCH_BINDINGS_COMMON_H
#define PSFMATCH_BINDINGS_COMMON_H

#include <pybind11/eigen.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "psfmatch/image.h"

namespace py = pybind11;

namespace pybind11 {
namespace detail {

/// psfmatch::MaskedImage <-> psfmatch.image.MaskedImage (the public Python class). Python to
/// C++ copies the planes to double; C++ to Python builds a new Python MaskedImage.
template <>
struct type_caster<psfmatch::MaskedImage> {
    PYBIND11_TYPE_CASTER(psfmatch::MaskedImage, _("psfmatch.MaskedImage"));

    bool load(handle src, bool) {
        if (!hasattr(src, "image") || !hasattr(src, "mask") || !hasattr(src, "variance") ||
            !hasattr(src, "getXY0")) {
            return false;
        }
        auto image = py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(src.attr("image"));
        auto variance =
                py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(src.attr("variance"));
        auto mask = py::array_t<std::int32_t, py::array::c_style | py::array::forcecast>::ensure(src.attr("mask"));
        if (!image || !variance || !mask || image.ndim() != 2 || variance.ndim() != 2 || mask.ndim() != 2) {
            return false;
        }
        const long ny = image.shape(0), nx = image.shape(1);
        if (variance.shape(0) != ny || variance.shape(1) != nx || mask.shape(0) != ny || mask.shape(1) != nx) {
            return false;
        }
        value.image = Eigen::Map<const psfmatch::ImageD>(image.data(), ny, nx);
        value.variance = Eigen::Map<const psfmatch::ImageD>(variance.data(), ny, nx);
        value.mask = Eigen::Map<const psfmatch::MaskArray>(mask.data(), ny, nx);
        auto xy0 = src.attr("getXY0")().cast<std::pair<int, int>>();
        value.x0 = xy0.first;
        value.y0 = xy0.second;
        return true;
    }

    static handle cast(const psfmatch::MaskedImage& mi, return_value_policy, handle) {
        // Imported at the first cast and kept (never released), so a cast costs no import.
        PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<py::object> storage;
        const py::object& cls =
                storage.call_once_and_store_result([] {
                           return py::module_::import("psfmatch.image").attr("MaskedImage");
                       }).get_stored();
        py::object out = cls(py::cast(mi.image), py::cast(mi.mask), py::cast(mi.variance),
                             py::make_tuple(mi.x0, mi.y0));
        return out.release();
    }
};

}  // namespace detail
}  // namespace pybind11

namespace psfmatch {
namespace bindings {

void bindErrors(py::module_& m);
void bindControl(py::module_& m);
void bindImage(py::module_& m);
void bindKernel(py::module_& m);
void bindConvolve(py::module_& m);
void bindBasis(py::module_& m);
void bindKernelSolution(py::module_& m);
void bindImageStatistics(py::module_& m);
void bindKernelCandidate(py::module_& m);
void bindSpatial(py::module_& m);
void bindSpatialCell(py::module_& m);
void bindVisitors(py::module_& m);
void bindSubtract(py::module_& m);

}  // namespace bindings
}  // namespace psfmatch

#endif
