# SPDX-License-Identifier: BSD-3-Clause
"""psfmatch's version, written here only: the package, the wheel's metadata (pyproject.toml
reads it with scikit-build-core's regex provider) and every FITS file psfmatch writes
(``PSFMVER``) take it from this line."""

__version__ = "0.1.0"
