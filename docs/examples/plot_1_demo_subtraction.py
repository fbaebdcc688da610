"""
The demo subtraction and its figures
====================================

A simulated pair, as ``psfmatch demo`` makes it (scaled to 512 × 512): stars seen through a
template PSF of FWHM 3.8 px and a science PSF whose FWHM grows from 5.2 to 6.6 px across the
image, a flux scale of 1.25, a sloped background and ten transients that only the science
image has. psfmatch fits the spatially varying kernel and background on the stars and
subtracts; `psfmatch.simulate.compareToTruth` holds the result to the truth.
"""

import matplotlib.pyplot as plt
import numpy as np

import psfmatch
import psfmatch.plot
from psfmatch.simulate import compareToTruth, simulatePair

# The demo's densities at 512²: 100 stars, 10 transients of 1e4 to 4e4 counts.
sim = simulatePair(
    (512, 512), nStars=100, seed=0, nTransients=10, transientFlux=np.geomspace(1e4, 4e4, 10)
)
result = psfmatch.subtract(sim.science, sim.template)
check = compareToTruth(sim, result)
print(f"kernel sum {result.kernelSum:.5f} (true {sim.truth.fluxScale})")
print(
    f"D/sigma: robust sigma {check.zSigma:.4f}, mean {check.zMean:+.4f} over {check.skyPixels} px"
)
print(f"transients: measured/true flux {check.transientRatio:.4f} ± {check.transientRatioErr:.4f}")

# %%
# The difference image with its mask planes, the kernel stars circled, and the histogram of
# D/σ against a unit normal:
fig = plt.figure(figsize=(10, 4.6))
psfmatch.plot.plotDifference(result, fig=fig)

# %%
# The kernel stars: each one's template stamp convolved with its own kernel, the science
# stamp, and the residuals with its own kernel and with the spatial model (green: used in
# the spatial fit; red: rejected).
fig = plt.figure(figsize=(8, 9))
psfmatch.plot.plotCandidates(result, maxCandidates=6, fig=fig)

# %%
# The basis the kernel is built from (Alard–Lupton: Gaussians times polynomials):
fig = plt.figure(figsize=(9, 6))
psfmatch.plot.plotKernelBasis(result, fig=fig)

# %%
# What this example checks. The thresholds are ``psfmatch demo``'s except the kernel sum's:
# with the 100 stars of 512² the kernel sum scatters by ~0.2 % between seeds (the demo's
# 0.2 % is for 400 stars at 1024²), so 0.5 % here.
assert abs(result.kernelSum / sim.truth.fluxScale - 1) < 0.005
assert check.sigmaPassed and check.meanPassed, (check.zSigma, check.zMean)
assert check.transientsPassed, check.transientRatio
