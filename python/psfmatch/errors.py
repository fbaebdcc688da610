# SPDX-License-Identifier: BSD-3-Clause
"""The exceptions psfmatch raises.

Which to raise when:

- `InvalidInputError` — an argument is wrong: a shape, dtype, size or value the function cannot
  use (an even kernel size, a NaN outside the mask, stamps that differ in shape). It is also a
  `ValueError`, so ``except ValueError`` keeps working.
- `SingularMatrixError` — a least-squares system has no usable solution. Also an
  `ArithmeticError`.
- `NoKernelCandidatesError` — the fit ran out of usable stars (every cell empty, no kernel sum,
  nothing left for the spatial fit).
- `InsufficientKernelSourcesError` — candidate selection found fewer stars than required; it
  carries how many were found and how many are needed.
- `PsfMatchError` — anything else that stops the work. A `RuntimeError`.

A degraded but usable fit is not an exception: it is a logged warning and a metadata entry.
The compiled core raises these same classes.
"""

from __future__ import annotations

__all__ = [
    "InsufficientKernelSourcesError",
    "InvalidInputError",
    "NoKernelCandidatesError",
    "PsfMatchError",
    "SingularMatrixError",
]


class PsfMatchError(RuntimeError):
    """Base class of every psfmatch error."""


class InvalidInputError(PsfMatchError, ValueError):
    """An argument has a shape, type or value psfmatch cannot use."""


class SingularMatrixError(PsfMatchError, ArithmeticError):
    """A normal-equation system could not be solved."""


class NoKernelCandidatesError(PsfMatchError):
    """No usable kernel candidates remain for a fit."""


class InsufficientKernelSourcesError(NoKernelCandidatesError):
    """Fewer kernel sources were found than the fit needs.

    Parameters
    ----------
    nSources : `int`
        How many usable sources were found.
    nRequired : `int`
        How many are needed.
    """

    def __init__(self, nSources: int, nRequired: int, detail: str = "") -> None:
        self.nSources = nSources
        self.nRequired = nRequired
        message = f"found {nSources} usable kernel sources but {nRequired} are required"
        if detail:
            message += f": {detail}"
        super().__init__(message)
