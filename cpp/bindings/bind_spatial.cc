// SPDX-License-Identifier: BSD-3-Clause
#include "common.h"
#include "psfmatch/convolve_spatial.h"
#include "psfmatch/errors.h"
#include "psfmatch/spatial_function.h"

namespace psfmatch {
namespace bindings {

namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

template <typename T>
py::tuple convolveSpatialArrays(const CArray<T>& image, const CArray<std::int32_t>& mask, const CArray<T>& variance,
                                std::pair<int, int> xy0, const LinearCombinationKernel& kernel,
                                const ConvolutionControl& control, double varianceTolerance) {
    const long ny = image.shape(0), nx = image.shape(1);
    CArray<T> outImage({ny, nx}), outVariance({ny, nx});
    CArray<std::int32_t> outMask({ny, nx});
    {
        py::gil_scoped_release release;
        MaskedImageView<const T> in{ImageView<const T>(image.data(), ny, nx, nx),
                                    ImageView<const std::int32_t>(mask.data(), ny, nx, nx),
                                    ImageView<const T>(variance.data(), ny, nx, nx)};
        MaskedImageView<T> out{ImageView<T>(outImage.mutable_data(), ny, nx, nx),
                               ImageView<std::int32_t>(outMask.mutable_data(), ny, nx, nx),
                               ImageView<T>(outVariance.mutable_data(), ny, nx, nx)};
        convolveSpatial<T>(in, out, xy0.first, xy0.second, kernel, control, varianceTolerance);
    }
    return py::make_tuple(outImage, outMask, outVariance);
}

}  // namespace

void bindSpatial(py::module_& m) {
    py::class_<SpatialFunction>(m, "SpatialFunction")
            .def(py::init<SpatialModelType, int, const Box2I&>(), py::arg("spatialModelType"), py::arg("order"),
                 py::arg("bbox"))
            .def("getType", &SpatialFunction::getType)
            .def("getOrder", &SpatialFunction::getOrder)
            .def("getBBox", &SpatialFunction::getBBox)
            .def("getNParameters", &SpatialFunction::getNParameters)
            .def("terms", &SpatialFunction::terms, py::arg("x"), py::arg("y"))
            .def("__call__", &SpatialFunction::evaluate, py::arg("x"), py::arg("y"), py::arg("parameters"));

    py::class_<LinearCombinationKernel>(m, "LinearCombinationKernel")
            .def(py::init<KernelList, SpatialFunction, Eigen::MatrixXd>(), py::arg("basisList"),
                 py::arg("spatialFunction"), py::arg("spatialParameters"))
            .def("getBasisList", &LinearCombinationKernel::getBasisList)
            .def("getSpatialFunction", &LinearCombinationKernel::getSpatialFunction)
            .def("getSpatialParameters", &LinearCombinationKernel::getSpatialParameters)
            .def("getNBasisKernels", &LinearCombinationKernel::getNBasisKernels)
            .def("getNSpatialParameters", &LinearCombinationKernel::getNSpatialParameters)
            .def("isSpatiallyVarying", &LinearCombinationKernel::isSpatiallyVarying)
            .def("getDimensions",
                 [](const LinearCombinationKernel& k) { return std::make_pair(k.getWidth(), k.getHeight()); })
            .def("getCtr", [](const LinearCombinationKernel& k) { return std::make_pair(k.getCtrX(), k.getCtrY()); })
            .def("getKernelParameters", &LinearCombinationKernel::getKernelParameters, py::arg("x"), py::arg("y"))
            .def("computeKernel", &LinearCombinationKernel::computeKernel, py::arg("x"), py::arg("y"))
            .def("getSum", &LinearCombinationKernel::getSum, py::arg("x"), py::arg("y"))
            .def(
                    "computeImage",
                    [](const LinearCombinationKernel& k, double x, double y, bool doNormalize) {
                        FixedKernel fixed = k.computeKernel(x, y);
                        const double sum = fixed.getSum();
                        ImageD image = fixed.getImage();
                        if (doNormalize) {
                            if (sum == 0.0) throw InvalidInputError("computeImage: cannot normalise a zero-sum kernel");
                            image /= sum;
                        }
                        return std::make_pair(image, sum);
                    },
                    py::arg("x"), py::arg("y"), py::arg("doNormalize") = false,
                    "(image, kernel sum) of the kernel at parent position (x, y).");

    py::class_<SpatialBackground>(m, "SpatialBackground")
            .def(py::init<SpatialFunction, Eigen::VectorXd>(), py::arg("spatialFunction"), py::arg("parameters"))
            .def("getSpatialFunction", &SpatialBackground::getSpatialFunction)
            .def("getParameters", &SpatialBackground::getParameters)
            .def("__call__", &SpatialBackground::operator(), py::arg("x"), py::arg("y"))
            .def("evaluate", &SpatialBackground::evaluate, py::arg("bbox"),
                 "b at every pixel of bbox (parent coordinates), shape (height, width).",
                 py::call_guard<py::gil_scoped_release>());

    m.def("convolveSpatialArrays", &convolveSpatialArrays<float>, py::arg("image").noconvert(),
          py::arg("mask").noconvert(), py::arg("variance").noconvert(), py::arg("xy0"), py::arg("kernel"),
          py::arg("control"), py::arg("varianceTolerance") = 2.0e-4);
    m.def("convolveSpatialArrays", &convolveSpatialArrays<double>, py::arg("image").noconvert(),
          py::arg("mask").noconvert(), py::arg("variance").noconvert(), py::arg("xy0"), py::arg("kernel"),
          py::arg("control"), py::arg("varianceTolerance") = 2.0e-4);
}

}  // namespace bindings
}  // namespace psfmatch
