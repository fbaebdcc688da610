// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_ERRORS_H
#define PSFMATCH_ERRORS_H

#include <stdexcept>
#include <string>

namespace psfmatch {

/// Base of every error the core throws; Python sees psfmatch.PsfMatchError (a RuntimeError).
class PsfMatchError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// An argument is wrong (shape, size, value); Python sees psfmatch.InvalidInputError
/// (a PsfMatchError and a ValueError).
class InvalidInputError : public PsfMatchError {
public:
    using PsfMatchError::PsfMatchError;
};

/// A linear system could not be solved; Python sees psfmatch.SingularMatrixError
/// (a PsfMatchError and an ArithmeticError).
class SingularMatrixError : public PsfMatchError {
public:
    using PsfMatchError::PsfMatchError;
};

}  // namespace psfmatch

#endif
