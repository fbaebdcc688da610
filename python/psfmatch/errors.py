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
- `PsfMatchIOError` — a file cannot be read or written for a reason outside its content: an
  unwritable or missing directory, a permission problem, a failed write. Also an `OSError`.
  (A file that exists but is not a usable FITS image is an `InvalidInputError`.)
- `InputFileNotFoundError` — an input file does not exist. A `PsfMatchIOError` and a
  `FileNotFoundError`.
- `OutputExistsError` — an output file exists and overwriting was not asked for. A
  `PsfMatchIOError` and a `FileExistsError`.
- `MissingDependencyError` — an optional dependency a feature needs is not installed; the
  message names the ``pip install`` that brings it. Also an `ImportError`.
- `TemplateCoverageError` — the template covers less of the science image than
  ``requiredTemplateFraction``; it carries the covered fraction. An `InvalidInputError`.
- `OriginMismatchError` — the images' origins (``xy0``) place the template where its stars do
  not lie; it carries both offsets. An `InvalidInputError`.
- `PoorSubtractionError` — the subtraction ran but its difference image is far from its own
  noise (the mean of (D/σ)² over the sky above ``maxDifferenceChi2``); it carries the figure
  and the limit. Set ``allowPoorSubtraction`` to keep such a result.
- `PsfComputeShapeError` — a PSF model cannot give a size or shape at a position (it carries
  the position); raised by the PSF models and `ModelPsfMatchTask`.
- `SpatialOrderError` — spatial orders (or a kernel basis) the kernel stars cannot constrain, or
  a spatial fit too large to solve: it names the stars, the terms and the unknowns. An
  `InvalidInputError`.
- `PsfMatchMemoryError` — the work asked for needs more memory than the machine has (refused up
  front, naming the estimate), or the compiled core ran out of memory. Also a `MemoryError`.
- `PsfMatchError` — anything else that stops the work. A `RuntimeError`.

A degraded but usable fit is not an exception: it is a logged warning and a metadata entry.
The compiled core raises these same classes.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "InputFileNotFoundError",
    "InsufficientKernelSourcesError",
    "InvalidInputError",
    "MissingDependencyError",
    "NoKernelCandidatesError",
    "OriginMismatchError",
    "OutputExistsError",
    "PoorSubtractionError",
    "PsfComputeShapeError",
    "PsfMatchError",
    "PsfMatchIOError",
    "PsfMatchMemoryError",
    "SingularMatrixError",
    "SpatialOrderError",
    "TemplateCoverageError",
]


class PsfMatchError(RuntimeError):
    """Base class of every psfmatch error."""


class InvalidInputError(PsfMatchError, ValueError):
    """An argument has a shape, type or value psfmatch cannot use."""


class MissingDependencyError(PsfMatchError, ImportError):
    """An optional feature needs a package that is not installed.

    Parameters
    ----------
    feature : `str`
        What was asked for, e.g. ``"psfmatch.plot"``.
    package : `str`
        The missing package, e.g. ``"matplotlib"``.
    extra : `str`
        The psfmatch extra that installs it, e.g. ``"plot"``.
    """

    def __init__(self, feature: str, package: str, extra: str) -> None:
        super().__init__(
            f"{feature} needs {package}, which is not installed; install it with "
            f'`pip install "psfmatch[{extra}]"` (or `pip install {package}`)'
        )
        self.name = package
        self.feature = feature
        self.package = package
        self.extra = extra

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:
        return type(self), (self.feature, self.package, self.extra)


class PsfMatchIOError(PsfMatchError, OSError):
    """A file could not be read or written.

    Parameters
    ----------
    message : `str`
        What failed; it names the file.
    filename : `str`, optional
        The file concerned, also available as the ``filename`` attribute.
    """

    def __init__(self, message: str, filename: str | None = None) -> None:
        super().__init__(message)
        self.filename = filename

    def __str__(self) -> str:
        # OSError.__str__ would print "[Errno None] None: <filename>" once filename is set.
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[type, tuple[str, str | None]]:
        return type(self), (str(self), self.filename)


class InputFileNotFoundError(PsfMatchIOError, FileNotFoundError):
    """An input file does not exist."""


class OutputExistsError(PsfMatchIOError, FileExistsError):
    """An output file exists and overwriting it was not requested."""


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


class SpatialOrderError(InvalidInputError):
    """Spatial orders or a kernel basis that the kernel stars cannot constrain, or a spatial
    fit larger than ``maxSpatialUnknowns`` (docs/algorithm.md §5.8)."""


class PsfMatchMemoryError(PsfMatchError, MemoryError):
    """The work needs more memory than is available: refused before allocating (the message
    gives the estimate), or the compiled core's allocation failed (``std::bad_alloc``)."""


class TemplateCoverageError(InvalidInputError):
    """The template covers too little of the science image (``requiredTemplateFraction``).

    Parameters
    ----------
    message : `str`
        What was found.
    coveredFraction : `float`
        The fraction of the science image's pixels that the template covers with data, also
        the ``coveredFraction`` attribute.
    """

    def __init__(self, message: str, coveredFraction: float = float("nan")) -> None:
        super().__init__(message)
        self.coveredFraction = coveredFraction

    def __reduce__(self) -> tuple[type, tuple[str, float]]:
        return type(self), (str(self), self.coveredFraction)


class PoorSubtractionError(PsfMatchError):
    """The difference image is far from its own noise: the mean of (D/σ)² over its sky pixels
    exceeds ``maxDifferenceChi2`` (``allowPoorSubtraction`` keeps such a result).

    Parameters
    ----------
    message : `str`
        What was found.
    chi2 : `float`
        The mean of (D/σ)² over the sky pixels, also the ``chi2`` attribute.
    limit : `float`
        The configured ``maxDifferenceChi2``, also the ``limit`` attribute.
    """

    def __init__(
        self, message: str, chi2: float = float("nan"), limit: float = float("nan")
    ) -> None:
        super().__init__(message)
        self.chi2 = chi2
        self.limit = limit

    def __reduce__(self) -> tuple[type, tuple[str, float, float]]:
        return type(self), (str(self), self.chi2, self.limit)


class OriginMismatchError(InvalidInputError):
    """The images' origins put the template where its stars are not.

    Parameters
    ----------
    message : `str`
        Both offsets and what to do.
    originOffset : (`int`, `int`)
        The science pixel on which the origins put the template's pixel (0, 0).
    starOffset : (`float`, `float`)
        The science pixel on which the matched stars put it.
    """

    def __init__(
        self,
        message: str,
        originOffset: tuple[int, int] | None = None,
        starOffset: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(message)
        self.originOffset = originOffset
        self.starOffset = starOffset

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return type(self), (str(self), self.originOffset, self.starOffset)


class PsfComputeShapeError(PsfMatchError):
    """A PSF model could not give its size or second moments at a position.

    Parameters
    ----------
    message : `str`
        What failed.
    position : (`float`, `float`), optional
        The parent position (x, y) concerned, also available as the ``position`` attribute.
    """

    def __init__(self, message: str, position: tuple[float, float] | None = None) -> None:
        if position is not None:
            message = f"{message} (at x, y = {position[0]:.2f}, {position[1]:.2f})"
        super().__init__(message)
        self.position = position

    def __reduce__(self) -> tuple[type, tuple[str, None], dict[str, object]]:
        return type(self), (str(self), None), {"position": self.position}
