// SPDX-License-Identifier: BSD-3-Clause
#include "common.h"

namespace psfmatch {
namespace bindings {

void bindImage(py::module_& m) {
    py::class_<Box2I>(m, "Box2I", "An integer pixel box in parent coordinates, inclusive of both corners.")
            .def(py::init<>())
            .def(py::init([](std::pair<int, int> corner, std::pair<int, int> dimensions) {
                     return Box2I(corner.first, corner.second, dimensions.first, dimensions.second);
                 }),
                 py::arg("corner"), py::arg("dimensions"))
            .def("getMinX", [](const Box2I& b) { return b.minX; })
            .def("getMinY", [](const Box2I& b) { return b.minY; })
            .def("getMaxX", [](const Box2I& b) { return b.maxX; })
            .def("getMaxY", [](const Box2I& b) { return b.maxY; })
            .def("getWidth", &Box2I::getWidth)
            .def("getHeight", &Box2I::getHeight)
            .def("getDimensions", [](const Box2I& b) { return std::make_pair(b.getWidth(), b.getHeight()); })
            .def("getBegin", [](const Box2I& b) { return std::make_pair(b.minX, b.minY); })
            .def("getEnd", [](const Box2I& b) { return std::make_pair(b.maxX + 1, b.maxY + 1); })
            .def("getCenter",
                 [](const Box2I& b) { return std::make_pair(0.5 * (b.minX + b.maxX), 0.5 * (b.minY + b.maxY)); })
            .def("isEmpty", &Box2I::isEmpty)
            .def("contains", &Box2I::contains, py::arg("x"), py::arg("y"))
            .def("__eq__", &Box2I::operator==)
            .def("__repr__", [](const Box2I& b) {
                return "Box2I(corner=(" + std::to_string(b.minX) + ", " + std::to_string(b.minY) +
                       "), dimensions=(" + std::to_string(b.getWidth()) + ", " + std::to_string(b.getHeight()) + "))";
            });
}

}  // namespace bindings
}  // namespace psfmatch
