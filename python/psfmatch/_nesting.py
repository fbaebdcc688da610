# SPDX-License-Identifier: BSD-3-Clause
"""Are two PSFs nested? The test ``mode="auto"`` chooses cross-convolution by
(docs/algorithm.md §7.11, "Choosing the mode"; docs/decisions.md D17).

Image B's PSF is a blurred version of image A's when ``P_B = K ⊗ P_A`` for some kernel
``K ≥ 0``: a convolution only ever adds light around a point, never takes it away. Then
Alard–Lupton matching convolves A to B's PSF with a positive, well-conditioned kernel. The
test fits the best non-negative kernel (least squares with K ≥ 0 over a square of delta
functions, `_nnls`, wide enough for ``3 sqrt(max(tr(C_B − C_A)/2, 1/4))`` pixels each way, C the
second-moment matrices) in each direction and measures the relative residual

    r_{A→B} = ‖P_B − K ⊗ P_A‖ / ‖P_B‖

over the PSF images. Measured PSFs are noisy, and their noise alone leaves a residual of
about ``n = sqrt(Σσ_B² + ΣK² Σσ_A²) / ‖P_B‖``; the *misfit* is what the residual holds beyond
it, ``m = sqrt(max(r² − n², 0))``, and it is significant when ``(r² − n²) / n²`` exceeds
``nSigma`` times ``sqrt(2 / N)``, the relative scatter of a χ² of N pixels. The PSFs are
*not nested* when, in both directions, the misfit is larger than ``threshold`` and
significant. The threshold (2 % by default) is well above what the noise and sampling leave
of nested PSFs measured from their stars (simulated ground pairs: misfits below 0.5 %; exact
Gaussians: 0) and below what rotated spikes or crossed ellipticities leave (4–30 %), where
the classic modes leave residuals of tens of σ on bright stars.

The second moments are reported beside: the eigenvalues of ``C_S − C_T``, of opposite signs
when each PSF is the wider along some direction (elongated PSFs crossed); they cannot see a
rotated six-fold spike pattern, whose second moments are round, which is why the kernel fit
decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: The non-negative kernel's half-width is at most this many pixels: a wider blur would
#: smear any PSF into any broader one and no longer say anything about nesting.
_MAX_KERNEL_HALF_WIDTH = 8


@dataclass(frozen=True)
class NestingTest:
    """The outcome of `assessNesting` (fractions of ‖P‖; see the module docstring)."""

    residualScienceFromTemplate: float
    residualTemplateFromScience: float
    noiseScienceFromTemplate: float
    noiseTemplateFromScience: float
    nPixels: int
    threshold: float
    nSigma: float
    momentEigenvalues: tuple[float, float]

    @staticmethod
    def _misfit(residual: float, noise: float) -> float:
        return math.sqrt(max(residual * residual - noise * noise, 0.0))

    def _isMismatch(self, residual: float, noise: float) -> bool:
        if self._misfit(residual, noise) <= self.threshold:
            return False
        if noise <= 0.0:
            return True
        excess = (residual * residual - noise * noise) / (noise * noise)
        return excess > self.nSigma * math.sqrt(2.0 / self.nPixels)

    @property
    def misfitScienceFromTemplate(self) -> float:
        """What of the science PSF no blur of the template's explains, beyond the noise."""
        return self._misfit(self.residualScienceFromTemplate, self.noiseScienceFromTemplate)

    @property
    def misfitTemplateFromScience(self) -> float:
        return self._misfit(self.residualTemplateFromScience, self.noiseTemplateFromScience)

    @property
    def scienceFromTemplate(self) -> bool:
        """Whether the science PSF is, within the tolerances, the template's blurred."""
        return not self._isMismatch(self.residualScienceFromTemplate, self.noiseScienceFromTemplate)

    @property
    def templateFromScience(self) -> bool:
        return not self._isMismatch(self.residualTemplateFromScience, self.noiseTemplateFromScience)

    @property
    def nested(self) -> bool:
        return self.scienceFromTemplate or self.templateFromScience

    def reason(self) -> str:
        """One sentence for the metadata: the misfits and what they mean."""
        numbers = (
            f"the best non-negative kernel leaves {100 * self.misfitScienceFromTemplate:.1f}% "
            f"of the science PSF unexplained by the template's and "
            f"{100 * self.misfitTemplateFromScience:.1f}% of the template PSF by the science "
            f"image's, beyond their noise (threshold {100 * self.threshold:.1f}%)"
        )
        if self.nested:
            return f"PSFs nested: {numbers}"
        return f"PSFs not nested, neither is a blurred version of the other: {numbers}"


def _moments(image: np.ndarray) -> np.ndarray:
    ny, nx = image.shape
    yy, xx = np.mgrid[:ny, :nx].astype(float)
    total = image.sum()
    xc, yc = (image * xx).sum() / total, (image * yy).sum() / total
    dx, dy = xx - xc, yy - yc
    ixx = (image * dx * dx).sum() / total
    iyy = (image * dy * dy).sum() / total
    ixy = (image * dx * dy).sum() / total
    return np.array([[ixx, ixy], [ixy, iyy]])


def _commonGrid(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both images zero-padded about their centre pixels to one odd square."""
    n = max(*a.shape, *b.shape)
    out = []
    for image in (a, b):
        grid = np.zeros((n, n))
        oy, ox = (n - image.shape[0]) // 2, (n - image.shape[1]) // 2
        grid[oy : oy + image.shape[0], ox : ox + image.shape[1]] = image
        out.append(grid)
    return out[0], out[1]


#: Iterations of the accelerated projected gradient of `_nnls`.
_NNLS_ITERATIONS = 3000


def _nnls(design: np.ndarray, target: np.ndarray, enough: float = 0.0) -> np.ndarray:
    """min ‖design·x − target‖ subject to x ≥ 0, by the accelerated projected gradient
    (FISTA, Beck & Teboulle 2009) on the normal equations, restarted when the objective
    rises (O'Donoghue & Candès 2015). It approaches the minimum from above, so the residual
    it gives can only overstate a misfit; `_NNLS_ITERATIONS` leave it within 1e-4 of the
    PSF's norm of the exact one here (tests/test_cross_parts.py, against scipy.optimize.nnls,
    which would cost a quarter of a second of imports in every ``mode="auto"`` run). The
    exact active-set method stalls for minutes on the ill-conditioned systems of shifted,
    smooth PSFs. It stops early once the residual is below ``enough`` of ‖target‖: a
    decision made."""
    gram = design.T @ design
    rhs = design.T @ target
    base = 0.5 * float(target @ target)
    step = 1.0 / float(np.linalg.eigvalsh(gram)[-1])
    x = np.zeros(gram.shape[0])
    gx = np.zeros_like(x)  # gram @ x, kept by linearity: one product an iteration
    y, gy = x.copy(), gx.copy()
    t = 1.0
    objective = 0.0  # ½‖design·x − target‖² − ½‖target‖² at x = 0
    checked = objective
    for iteration in range(1, _NNLS_ITERATIONS + 1):
        new = np.maximum(y - step * (gy - rhs), 0.0)
        gnew = gram @ new
        newObjective = float(0.5 * new @ gnew - rhs @ new)
        if newObjective > objective:
            # Momentum overshot: restart from the last iterate.
            y, gy, t = x.copy(), gx.copy(), 1.0
            continue
        tNew = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        beta = (t - 1.0) / tNew
        y = new + beta * (new - x)
        gy = gnew + beta * (gnew - gx)
        x, gx, t, objective = new, gnew, tNew, newObjective
        if iteration % 100 == 0:
            # Stop once 100 iterations gain < 1e-12 of ½‖target‖² (the residual's norm then
            # moves by < 1e-6 of the target's), or the residual is below ``enough``.
            if checked - objective < 1e-12 * base or objective + base < enough**2 * base:
                break
            checked = objective
    return x


def _nonNegativeFit(
    source: np.ndarray, target: np.ndarray, half: int, enough: float = 0.0
) -> tuple[np.ndarray, float]:
    """The kernel K ≥ 0 of half-width ``half`` minimising ‖target − K ⊗ source‖ (both on one
    square grid, zero beyond it), and that minimum over ‖target‖ (or one below ``enough``)."""
    n = source.shape[0]
    padded = np.zeros((n + 2 * half, n + 2 * half))
    padded[half : half + n, half : half + n] = source
    columns = []
    for dy in range(-half, half + 1):
        for dx in range(-half, half + 1):
            # (K ⊗ A)(p) = Σ K(d) A(p − d): the column of offset d is A moved by d.
            shifted = padded[half - dy : half - dy + n, half - dx : half - dx + n]
            columns.append(shifted.ravel())
    design = np.array(columns).T
    kernel = _nnls(design, target.ravel(), enough)
    residual = float(np.linalg.norm(design @ kernel - target.ravel()))
    return kernel.reshape(2 * half + 1, 2 * half + 1), residual / float(np.linalg.norm(target))


def _finiteSum(values: np.ndarray) -> float:
    """The sum of the finite ``values``."""
    return float(values[np.isfinite(values)].sum())


def assessNesting(
    sciencePsf: np.ndarray,
    templatePsf: np.ndarray,
    scienceVariance: np.ndarray | None = None,
    templateVariance: np.ndarray | None = None,
    *,
    threshold: float = 0.02,
    nSigma: float = 5.0,
) -> NestingTest:
    """Whether either PSF is, within noise and ``threshold``, the other blurred.

    Parameters
    ----------
    sciencePsf, templatePsf : `numpy.ndarray`
        Odd-sized PSF images (normalised here), centred on their middle pixels.
    scienceVariance, templateVariance : `numpy.ndarray`, optional
        Per-pixel variances of measured (unit-sum) PSFs, of their shapes; none for models.
    threshold, nSigma : `float`, optional
        See the module docstring.
    """
    s, t = _commonGrid(sciencePsf / sciencePsf.sum(), templatePsf / templatePsf.sum())
    zeros = np.zeros_like(s)
    vs, vt = _commonGrid(
        zeros if scienceVariance is None else scienceVariance,
        zeros if templateVariance is None else templateVariance,
    )
    cs, ct = _moments(s), _moments(t)
    eigenvalues = np.linalg.eigvalsh(cs - ct)

    def direction(
        source: np.ndarray, target: np.ndarray, vSource: np.ndarray, vTarget: np.ndarray
    ) -> tuple[float, float]:
        extra = max(0.5 * float(np.trace(_moments(target) - _moments(source))), 0.25)
        half = int(min(_MAX_KERNEL_HALF_WIDTH, max(1, math.ceil(3.0 * math.sqrt(extra)))))
        half = min(half, source.shape[0] // 2)
        # A residual below a quarter of the threshold decides: nested, whatever the noise.
        kernel, residual = _nonNegativeFit(source, target, half, 0.25 * threshold)
        # A stacked PSF's pixels where fewer than two stars count have no variance estimate
        # (+inf, `psfmatch._psfstack`): they are left out of the noise (they are at the
        # stamps' edges, where the PSF is faint), which an infinite sum would otherwise make
        # infinite, so that no misfit were ever significant.
        noise = math.sqrt(_finiteSum(vTarget) + float((kernel**2).sum()) * _finiteSum(vSource))
        return residual, noise / float(np.linalg.norm(target))

    rST, nST = direction(t, s, vt, vs)
    rTS, nTS = direction(s, t, vs, vt)
    return NestingTest(
        residualScienceFromTemplate=rST,
        residualTemplateFromScience=rTS,
        noiseScienceFromTemplate=nST,
        noiseTemplateFromScience=nTS,
        nPixels=int(s.size),
        threshold=float(threshold),
        nSigma=float(nSigma),
        momentEigenvalues=(float(eigenvalues[0]), float(eigenvalues[1])),
    )
