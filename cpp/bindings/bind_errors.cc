// SPDX-License-Identifier: BSD-3-Clause
#include "common.h"
#include "psfmatch/errors.h"

namespace psfmatch {
namespace bindings {

namespace {

/// The Python classes the core's exceptions become, from psfmatch.errors (they also inherit the
/// built-ins).
struct ErrorClasses {
    py::object singularMatrix, invalidInput, psfMatch;
};

/// psfmatch.errors is imported at the first throw, not at module init (psfmatch imports _core
/// before it may have imported its errors), and only then: the classes are kept from there on
/// (never released, so they outlive any throw), and a throw costs no import.
const ErrorClasses& errorClasses() {
    PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<ErrorClasses> storage;
    return storage
            .call_once_and_store_result([] {
                py::module_ errors = py::module_::import("psfmatch.errors");
                return ErrorClasses{errors.attr("SingularMatrixError"), errors.attr("InvalidInputError"),
                                    errors.attr("PsfMatchError")};
            })
            .get_stored();
}

}  // namespace

// The core's exceptions, translated most derived first.
void bindErrors(py::module_& m) {
    (void)m;
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const SingularMatrixError& e) {
            PyErr_SetString(errorClasses().singularMatrix.ptr(), e.what());
        } catch (const InvalidInputError& e) {
            PyErr_SetString(errorClasses().invalidInput.ptr(), e.what());
        } catch (const PsfMatchError& e) {
            PyErr_SetString(errorClasses().psfMatch.ptr(), e.what());
        }
    });
}

}  // namespace bindings
}  // namespace psfmatch
