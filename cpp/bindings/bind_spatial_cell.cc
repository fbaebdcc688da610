// SPDX-License-Identifier: BSD-3-Clause
#include "common.h"
#include "psfmatch/errors.h"
#include "psfmatch/spatial_cell.h"

namespace psfmatch {
namespace bindings {

namespace {

// The candidate as the Python object that owns it (the one the user inserted, if alive).
py::object asPython(KernelCandidate& candidate) { return py::cast(candidate.shared_from_this()); }

/// Lets Python classes derive from CandidateVisitor.
class PyCandidateVisitor : public CandidateVisitor {
public:
    using CandidateVisitor::CandidateVisitor;
    void reset() override { PYBIND11_OVERRIDE(void, CandidateVisitor, reset, ); }
    void processCandidate(KernelCandidate& candidate) override {
        py::gil_scoped_acquire gil;
        py::function override = py::get_override(static_cast<const CandidateVisitor*>(this), "processCandidate");
        if (!override) throw PsfMatchError("CandidateVisitor subclass does not define processCandidate");
        override(asPython(candidate));
    }
};

/// Any Python object with reset() and processCandidate(candidate) works as a visitor.
class DuckVisitor : public CandidateVisitor {
public:
    explicit DuckVisitor(py::object obj) : _obj(std::move(obj)) {}
    void reset() override {
        py::gil_scoped_acquire gil;
        if (py::hasattr(_obj, "reset")) _obj.attr("reset")();
    }
    void processCandidate(KernelCandidate& candidate) override {
        py::gil_scoped_acquire gil;
        // Pass the shared candidate so Python sees the same object it inserted.
        _obj.attr("processCandidate")(asPython(candidate));
    }

private:
    py::object _obj;
};

// Runs a visit with the GIL released (C++ visitors then run free; Python ones take it back).
template <typename F>
void withVisitor(py::object visitor, F&& visit) {
    if (py::isinstance<CandidateVisitor>(visitor)) {
        CandidateVisitor& v = visitor.cast<CandidateVisitor&>();
        py::gil_scoped_release release;
        visit(v);
        return;
    }
    if (!py::hasattr(visitor, "processCandidate")) {
        throw InvalidInputError("a visitor needs a processCandidate(candidate) method");
    }
    DuckVisitor v(visitor);
    py::gil_scoped_release release;
    visit(v);
}

}  // namespace

void bindSpatialCell(py::module_& m) {
    py::class_<CandidateVisitor, PyCandidateVisitor>(m, "CandidateVisitor")
            .def(py::init<>())
            .def("reset", &CandidateVisitor::reset)
            .def("processCandidate", &CandidateVisitor::processCandidate, py::arg("candidate"));

    py::class_<SpatialCell, std::shared_ptr<SpatialCell>>(m, "SpatialCell")
            .def(py::init<std::string, const Box2I&>(), py::arg("label"), py::arg("bbox"))
            .def("getLabel", &SpatialCell::getLabel)
            .def("getBBox", &SpatialCell::getBBox)
            .def("insertCandidate", &SpatialCell::insertCandidate, py::arg("candidate"))
            .def("empty", &SpatialCell::empty)
            .def("size", &SpatialCell::size, py::arg("ignoreBad") = true)
            .def("__len__", [](const SpatialCell& c) { return c.size(true); })
            .def("getCandidates", &SpatialCell::getCandidates, py::arg("ignoreBad") = true)
            .def("__iter__",
                 [](const SpatialCell& c) { return py::iter(py::cast(c.getCandidates(true))); })
            .def(
                    "visitCandidates",
                    [](SpatialCell& cell, py::object visitor, int nMaxPerCell, bool ignoreExceptions) {
                        withVisitor(visitor, [&](CandidateVisitor& v) {
                            cell.visitCandidates(v, nMaxPerCell, ignoreExceptions);
                        });
                    },
                    py::arg("visitor"), py::arg("nMaxPerCell") = -1, py::arg("ignoreExceptions") = false);

    py::class_<SpatialCellSet, std::shared_ptr<SpatialCellSet>>(m, "SpatialCellSet")
            .def(py::init<const Box2I&, int, int>(), py::arg("region"), py::arg("xSize"), py::arg("ySize"))
            .def("getBBox", &SpatialCellSet::getBBox)
            .def("getCellList", &SpatialCellSet::getCellList)
            .def("insertCandidate", &SpatialCellSet::insertCandidate, py::arg("candidate"))
            .def("getAllCandidates", &SpatialCellSet::getAllCandidates, py::arg("ignoreBad") = true)
            .def(
                    "visitCandidates",
                    [](SpatialCellSet& cells, py::object visitor, int nMaxPerCell, bool ignoreExceptions,
                       py::object progress) {
                        // The callback takes the GIL for its call (the visit runs without it).
                        SpatialCellSet::CellProgress onCell;
                        if (!progress.is_none()) {
                            onCell = [progress](int n) {
                                py::gil_scoped_acquire acquire;
                                progress(n);
                            };
                        }
                        withVisitor(visitor, [&](CandidateVisitor& v) {
                            cells.visitCandidates(v, nMaxPerCell, ignoreExceptions, onCell);
                        });
                    },
                    py::arg("visitor"), py::arg("nMaxPerCell"), py::arg("ignoreExceptions") = false,
                    py::arg("progress") = py::none(),
                    "Visit every cell's candidates; progress(n), if given, is called after each cell "
                    "with the number of candidates that cell's visit counted.")
            .def(
                    "visitAllCandidates",
                    [](SpatialCellSet& cells, py::object visitor, bool ignoreExceptions) {
                        withVisitor(visitor,
                                    [&](CandidateVisitor& v) { cells.visitAllCandidates(v, ignoreExceptions); });
                    },
                    py::arg("visitor"), py::arg("ignoreExceptions") = false);
}

}  // namespace bindings
}  // namespace psfmatch
