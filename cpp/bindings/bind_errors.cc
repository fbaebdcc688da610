// SPDX-License-Identifier: BSD-3-Clause
#include "common.h"
#include "psfmatch/errors.h"

namespace psfmatch {
namespace bindings {

// The Python classes live in psfmatch.errors (they also inherit the built-ins); the core's
// exceptions are translated to them here, most derived first.
void bindErrors(py::module_& m) {
    (void)m;
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const SingularMatrixError& e) {
            py::object cls = py::module_::import("psfmatch.errors").attr("SingularMatrixError");
            PyErr_SetString(cls.ptr(), e.what());
        } catch (const InvalidInputError& e) {
            py::object cls = py::module_::import("psfmatch.errors").attr("InvalidInputError");
            PyErr_SetString(cls.ptr(), e.what());
        } catch (const PsfMatchError& e) {
            py::object cls = py::module_::import("psfmatch.errors").attr("PsfMatchError");
            PyErr_SetString(cls.ptr(), e.what());
        }
    });
}

}  // namespace bindings
}  // namespace psfmatch
