# SPDX-License-Identifier: BSD-3-Clause
"""The reference's module name for `ImagePsfMatchTask` and its config; the code lives in the stage
modules: `psfmatch.make_kernel` (kernel sources, basis, fit), `psfmatch._inputs` (checking,
placing and rescaling the inputs), `psfmatch.subtract_images` (convolution, subtraction, the
modes), `psfmatch.decorrelate` and `psfmatch.detect_and_measure`.
"""

from __future__ import annotations

__all__ = ["ImagePsfMatchConfig", "ImagePsfMatchTask", "TemplateAnalysis"]

from .subtract_images import ImagePsfMatchConfig, ImagePsfMatchTask, TemplateAnalysis
