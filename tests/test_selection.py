# SPDX-License-Identifier: BSD-3-Clause
"""Kernel-source selection: the masked-stamp cut against a brute-force look at every stamp."""

from __future__ import annotations

import numpy as np

import psfmatch as pm
from psfmatch.selection import KernelSourceSelectionConfig, selectKernelSources
from psfmatch.simulate import simulatePair


def test_masked_stamps_are_rejected_exactly() -> None:
    sim = simulatePair((512, 512), nStars=150, seed=3, nTransients=0)
    config = KernelSourceSelectionConfig()
    kernelSize = 10
    clean = selectKernelSources(sim.template, sim.science, config, kernelSize=kernelSize)
    assert clean.meta["nRejectedMasked"] == 0
    assert len(clean) >= 6

    # Flag one pixel at the corner of the first star's stamp (inside it), one just outside the
    # second star's stamp, and one CR pixel (an excluded plane) in the template under a third.
    template, science = sim.template.clone(), sim.science.clone()
    bad = pm.Mask.getPlaneBitMask("BAD")
    cr = pm.Mask.getPlaneBitMask("CR")
    ix = np.floor(np.asarray(clean["x"]) + 0.5).astype(int)
    iy = np.floor(np.asarray(clean["y"]) + 0.5).astype(int)
    science.mask[iy[0] + kernelSize, ix[0] - kernelSize] |= bad
    science.mask[iy[1] + kernelSize + 1, ix[1]] |= bad
    template.mask[iy[2], ix[2]] |= cr

    # Brute force: a star is rejected when its (2·kernelSize+1)² stamp in either image holds
    # an excluded bit.
    excluded = pm.Mask.getPlaneBitMask(list(config.excludeMaskPlanes))
    assert excluded & bad and excluded & cr
    expected = []
    for x, y in zip(ix, iy, strict=True):
        window = np.s_[y - kernelSize : y + kernelSize + 1, x - kernelSize : x + kernelSize + 1]
        hit = (science.mask[window] & excluded).any() or (template.mask[window] & excluded).any()
        expected.append(bool(hit))
    assert expected[:3] == [True, False, True]

    masked = selectKernelSources(template, science, config, kernelSize=kernelSize)
    assert masked.meta["nRejectedMasked"] == sum(expected)
    # A masked pixel is also left out of detection, which may move a centroid by a hair: match
    # positions within 0.1 px (stars are tens of pixels apart).
    for x, y, hit in zip(clean["x"], clean["y"], expected, strict=True):
        distance = np.hypot(np.asarray(masked["x"]) - x, np.asarray(masked["y"]) - y)
        assert bool((distance < 0.1).any()) == (not hit)
