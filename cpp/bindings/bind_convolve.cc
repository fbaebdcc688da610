// SPDX-License-Identifier: BSD-3-Clause
#include <string>

#include "common.h"
#include "psfmatch/convolve.h"
#include "psfmatch/simd.h"

namespace psfmatch {
namespace bindings {

namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

template <typename T>
ImageView<T> mutableView(CArray<T>& a) {
    return ImageView<T>(a.mutable_data(), a.shape(0), a.shape(1), a.shape(1));
}

template <typename T>
ImageView<const T> constView(const CArray<T>& a) {
    return ImageView<const T>(a.data(), a.shape(0), a.shape(1), a.shape(1));
}

template <typename T>
py::tuple convolveArrays(const CArray<T>& image, const CArray<std::int32_t>& mask, const CArray<T>& variance,
                         const FixedKernel& kernel, const ConvolutionControl& control) {
    CArray<T> outImage({image.shape(0), image.shape(1)});
    CArray<T> outVariance({image.shape(0), image.shape(1)});
    CArray<std::int32_t> outMask({image.shape(0), image.shape(1)});
    {
        py::gil_scoped_release release;
        MaskedImageView<const T> in{constView(image), constView(mask), constView(variance)};
        MaskedImageView<T> out{mutableView(outImage), mutableView(outMask), mutableView(outVariance)};
        convolveMaskedImage<T>(in, out, kernel, control);
    }
    return py::make_tuple(outImage, outMask, outVariance);
}

template <typename T>
CArray<T> convolvePlaneArray(const CArray<T>& image, const FixedKernel& kernel, ConvolutionMethod method,
                             int nThreads) {
    CArray<T> out({image.shape(0), image.shape(1)});
    {
        py::gil_scoped_release release;
        std::fill(out.mutable_data(), out.mutable_data() + out.size(), std::numeric_limits<T>::quiet_NaN());
        convolvePlane<T, T>(constView(image), mutableView(out), kernel, 1.0, method, nThreads);
    }
    return out;
}

}  // namespace

void bindConvolve(py::module_& m) {
    m.def(
            "simdLevel", [] { return std::string(simdLevelName(simdLevel())); },
            "The instruction set the convolution kernels run with: \"avx512\", \"avx2\" or \"baseline\" "
            "(the CPU's, capped by the environment variable PSFMATCH_SIMD, read once).");
    py::enum_<ConvolutionMethod>(m, "ConvolutionMethod")
            .value("AUTO", ConvolutionMethod::AUTO)
            .value("DIRECT", ConvolutionMethod::DIRECT)
            .value("SEPARABLE", ConvolutionMethod::SEPARABLE);

    py::class_<ConvolutionControl>(m, "ConvolutionControl")
            .def(py::init<>())
            .def_readwrite("doNormalize", &ConvolutionControl::doNormalize)
            .def_readwrite("doCopyEdge", &ConvolutionControl::doCopyEdge)
            .def_readwrite("edgeBit", &ConvolutionControl::edgeBit)
            .def_readwrite("noDataBit", &ConvolutionControl::noDataBit)
            .def_readwrite("method", &ConvolutionControl::method)
            .def_readwrite("nThreads", &ConvolutionControl::nThreads);

    // Arrays arrive C-contiguous with one dtype per call; psfmatch.convolve checks them first.
    m.def("convolveMaskedImageArrays", &convolveArrays<float>, py::arg("image").noconvert(),
          py::arg("mask").noconvert(), py::arg("variance").noconvert(), py::arg("kernel"), py::arg("control"));
    m.def("convolveMaskedImageArrays", &convolveArrays<double>, py::arg("image").noconvert(),
          py::arg("mask").noconvert(), py::arg("variance").noconvert(), py::arg("kernel"), py::arg("control"));
    m.def("convolvePlane", &convolvePlaneArray<float>, py::arg("image").noconvert(), py::arg("kernel"),
          py::arg("method") = ConvolutionMethod::AUTO, py::arg("nThreads") = 0,
          "K ⊗ image on the good box; NaN outside it.");
    m.def("convolvePlane", &convolvePlaneArray<double>, py::arg("image").noconvert(), py::arg("kernel"),
          py::arg("method") = ConvolutionMethod::AUTO, py::arg("nThreads") = 0);
    m.def(
            "goodBox",
            [](long nx, long ny, int kw, int kh) {
                Box2I b = goodBox(nx, ny, kw, kh);
                return b;
            },
            py::arg("nx"), py::arg("ny"), py::arg("kernelWidth"), py::arg("kernelHeight"));
    m.def("convolveBasisOnGoodBox", &convolveBasisOnGoodBox, py::arg("image"), py::arg("basis"),
          py::call_guard<py::gil_scoped_release>());
}

}  // namespace bindings
}  // namespace psfmatch
