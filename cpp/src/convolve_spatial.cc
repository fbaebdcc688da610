// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/convolve_spatial.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <Eigen/SVD>

#include "psfmatch/errors.h"
#include "psfmatch/parallel.h"

namespace psfmatch {

namespace {

constexpr long kRowsPerBlock = 32;
constexpr int kMaxTile = 256;
constexpr int kMinTile = 8;

// One distinct piece of the basis: a separable pair or a whole non-separable kernel.
struct Component {
    const Eigen::VectorXd* kx = nullptr;  // separable pair, or
    const Eigen::VectorXd* ky = nullptr;
    const FixedKernel* direct = nullptr;  // a kernel with no decomposition
};

struct Decomposition {
    std::vector<Component> components;
    Eigen::MatrixXd beta;  // components × spatial terms
};

Decomposition decompose(const LinearCombinationKernel& kernel) {
    const KernelList& basis = kernel.getBasisList();
    Decomposition d;
    std::vector<std::vector<std::pair<long, double>>> contributions(basis.size());  // (component, weight)
    for (std::size_t m = 0; m < basis.size(); ++m) {
        if (!basis[m].isSeparable()) {
            d.components.push_back({nullptr, nullptr, &basis[m]});
            contributions[m].emplace_back(static_cast<long>(d.components.size() - 1), 1.0);
            continue;
        }
        for (const auto& t : basis[m].getTerms()) {
            long index = -1;
            for (std::size_t c = 0; c < d.components.size(); ++c) {
                const Component& comp = d.components[c];
                if (comp.kx && *comp.kx == t.kx && *comp.ky == t.ky) {
                    index = static_cast<long>(c);
                    break;
                }
            }
            if (index < 0) {
                d.components.push_back({&t.kx, &t.ky, nullptr});
                index = static_cast<long>(d.components.size() - 1);
            }
            contributions[m].emplace_back(index, t.coef);
        }
    }
    // β = Lᵀ α: component c gets Σ_m L_mc α_m·.
    const Eigen::MatrixXd& alpha = kernel.getSpatialParameters();
    d.beta = Eigen::MatrixXd::Zero(static_cast<long>(d.components.size()), alpha.cols());
    for (std::size_t m = 0; m < basis.size(); ++m) {
        for (const auto& [c, w] : contributions[m]) d.beta.row(c) += w * alpha.row(static_cast<long>(m));
    }
    return d;
}

template <typename T>
void convolveImagePlane(const ImageView<const T>& in, const ImageView<T>& out, int x0, int y0,
                        const LinearCombinationKernel& kernel, int nThreads) {
    const Decomposition d = decompose(kernel);
    const SpatialFunction& f = kernel.getSpatialFunction();
    const long nkt = f.getNParameters();
    const int kw = kernel.getWidth(), kh = kernel.getHeight();
    const int cx = kernel.getCtrX(), cy = kernel.getCtrY();
    const Box2I g = goodBox(in.nx, in.ny, kw, kh);
    const long gnx = g.getWidth();
    const long nBlocks = (g.getHeight() + kRowsPerBlock - 1) / kRowsPerBlock;

    // Term k = (p, q) is X_p(x)·Y_q(y). Per row and component, γ_p = Σ_q β_c(p,q) Y_q(y);
    // per pixel the coefficient is then Σ_p γ_p X_p(x).
    const int order = f.getOrder();
    const long np = order + 1;
    if (np > 64) throw InvalidInputError("convolveSpatial: spatial order above 63 is not supported");
    std::vector<double> xf(gnx * np);
    for (long x = 0; x < gnx; ++x) {
        const Eigen::VectorXd v = f.xFactors(x0 + g.minX + x);
        for (long p = 0; p < np; ++p) xf[p * gnx + x] = v[p];
    }
    std::vector<std::pair<int, int>> pq;
    for (int n = 0; n <= order; ++n) {
        for (int q = 0; q <= n; ++q) pq.emplace_back(n - q, q);
    }
    parallelFor(nBlocks, nThreads, [&](long b0, long b1) {
        std::vector<double> tmp, r, acc, coef;
        for (long b = b0; b < b1; ++b) {
            const long ya = g.minY + b * kRowsPerBlock;
            const long yb = std::min<long>(ya + kRowsPerBlock, g.maxY + 1);
            const long rows = yb - ya;
            const long ra = ya - (kh - 1 - cy), rb = yb + cy;
            std::vector<Eigen::VectorXd> yf;
            for (long y = ya; y < yb; ++y) yf.push_back(f.yFactors(y0 + y));
            acc.assign(rows * gnx, 0.0);
            coef.resize(gnx);
            r.resize(rows * gnx);
            const Eigen::VectorXd* lastKx = nullptr;
            for (std::size_t c = 0; c < d.components.size(); ++c) {
                const Component& comp = d.components[c];
                std::fill(r.begin(), r.end(), 0.0);
                if (comp.direct) {
                    const ImageD& k = comp.direct->getImage();
                    for (long y = ya; y < yb; ++y) {
                        double* o = r.data() + (y - ya) * gnx;
                        for (long j = 0; j < kh; ++j) {
                            for (long i = 0; i < kw; ++i) {
                                const double w = k(j, i);
                                if (w == 0.0) continue;
                                const T* s = in.row(y - j + cy) + g.minX + cx - i;
                                for (long x = 0; x < gnx; ++x) o[x] += w * static_cast<double>(s[x]);
                            }
                        }
                    }
                } else {
                    // Components sharing an x factor are adjacent when the basis lists them so;
                    // reuse the x pass while it is the same factor.
                    if (lastKx == nullptr || !(*lastKx == *comp.kx)) {
                        tmp.assign((rb - ra) * gnx, 0.0);
                        for (long row = ra; row < rb; ++row) {
                            double* t = tmp.data() + (row - ra) * gnx;
                            const T* src = in.row(row) + g.minX + cx;
                            for (long i = 0; i < kw; ++i) {
                                const double w = (*comp.kx)[i];
                                if (w == 0.0) continue;
                                const T* s = src - i;
                                for (long x = 0; x < gnx; ++x) t[x] += w * static_cast<double>(s[x]);
                            }
                        }
                        lastKx = comp.kx;
                    }
                    for (long y = ya; y < yb; ++y) {
                        double* o = r.data() + (y - ya) * gnx;
                        for (long j = 0; j < kh; ++j) {
                            const double w = (*comp.ky)[j];
                            if (w == 0.0) continue;
                            const double* s = tmp.data() + (y - j + cy - ra) * gnx;
                            for (long x = 0; x < gnx; ++x) o[x] += w * s[x];
                        }
                    }
                }
                for (long y = ya; y < yb; ++y) {
                    double gamma[64];
                    std::fill(gamma, gamma + np, 0.0);
                    for (long k = 0; k < nkt; ++k) {
                        gamma[pq[k].first] += d.beta(static_cast<long>(c), k) * yf[y - ya][pq[k].second];
                    }
                    std::fill(coef.begin(), coef.begin() + gnx, 0.0);
                    for (long p = 0; p < np; ++p) {
                        const double gp = gamma[p];
                        const double* xp = xf.data() + p * gnx;
                        for (long x = 0; x < gnx; ++x) coef[x] += gp * xp[x];
                    }
                    double* a = acc.data() + (y - ya) * gnx;
                    const double* rr = r.data() + (y - ya) * gnx;
                    for (long x = 0; x < gnx; ++x) a[x] += coef[x] * rr[x];
                }
            }
            for (long y = ya; y < yb; ++y) {
                T* o = out.row(y) + g.minX;
                const double* a = acc.data() + (y - ya) * gnx;
                for (long x = 0; x < gnx; ++x) o[x] = static_cast<T>(a[x]);
            }
        }
    });
}

// K² at (x, y) as a kernel with a truncated-SVD separable decomposition.
FixedKernel squaredKernelAt(const LinearCombinationKernel& kernel, double x, double y, double tolerance) {
    const ImageD k2 = kernel.computeKernel(x, y).getImage().square();
    Eigen::JacobiSVD<Eigen::MatrixXd> svd(k2.matrix(), Eigen::ComputeThinU | Eigen::ComputeThinV);
    const double norm1 = k2.abs().sum();
    std::vector<SeparableTerm> terms;
    Eigen::MatrixXd approx = Eigen::MatrixXd::Zero(k2.rows(), k2.cols());
    for (long r = 0; r < svd.singularValues().size(); ++r) {
        const double s = svd.singularValues()[r];
        if (s == 0.0) break;
        SeparableTerm t;
        t.coef = s;
        t.ky = svd.matrixU().col(r);
        t.kx = svd.matrixV().col(r);
        approx += s * t.ky * t.kx.transpose();
        terms.push_back(std::move(t));
        if ((k2.matrix() - approx).cwiseAbs().sum() <= tolerance * norm1) break;
    }
    if (terms.empty()) return FixedKernel(k2);
    // The image stays the exact K²; the decomposition is what the separable path applies.
    FixedKernel separable(std::move(terms));
    return separable;
}

double relativeL1(const ImageD& a, const ImageD& b) {
    const double n = b.abs().sum();
    return n == 0.0 ? 0.0 : (a - b).abs().sum() / n;
}

void makeTiles(const LinearCombinationKernel& kernel, int x0, int y0, const Box2I& tile, double tolerance,
               std::vector<Box2I>& tiles) {
    const double cx = 0.5 * (tile.minX + tile.maxX), cy = 0.5 * (tile.minY + tile.maxY);
    bool ok = true;
    if (kernel.isSpatiallyVarying() && (tile.getWidth() > kMinTile || tile.getHeight() > kMinTile)) {
        const ImageD centre = kernel.computeKernel(x0 + cx, y0 + cy).getImage().square();
        const int xs[2] = {tile.minX, tile.maxX}, ys[2] = {tile.minY, tile.maxY};
        for (int ix = 0; ix < 2 && ok; ++ix) {
            for (int iy = 0; iy < 2 && ok; ++iy) {
                const ImageD corner = kernel.computeKernel(x0 + xs[ix], y0 + ys[iy]).getImage().square();
                ok = relativeL1(corner, centre) <= tolerance;
            }
        }
    }
    if (ok) {
        tiles.push_back(tile);
        return;
    }
    const int mx = tile.minX + tile.getWidth() / 2, my = tile.minY + tile.getHeight() / 2;
    const Box2I parts[4] = {Box2I(tile.minX, tile.minY, mx - tile.minX, my - tile.minY),
                            Box2I(mx, tile.minY, tile.maxX - mx + 1, my - tile.minY),
                            Box2I(tile.minX, my, mx - tile.minX, tile.maxY - my + 1),
                            Box2I(mx, my, tile.maxX - mx + 1, tile.maxY - my + 1)};
    for (const Box2I& p : parts) {
        if (!p.isEmpty()) makeTiles(kernel, x0, y0, p, tolerance, tiles);
    }
}

template <typename T>
void convolveVariancePlane(const ImageView<const T>& in, const ImageView<T>& out, int x0, int y0,
                           const LinearCombinationKernel& kernel, double tolerance, int nThreads) {
    const int kw = kernel.getWidth(), kh = kernel.getHeight();
    const int cx = kernel.getCtrX(), cy = kernel.getCtrY();
    const Box2I g = goodBox(in.nx, in.ny, kw, kh);
    std::vector<Box2I> tiles;
    for (int ty = g.minY; ty <= g.maxY; ty += kMaxTile) {
        for (int tx = g.minX; tx <= g.maxX; tx += kMaxTile) {
            const Box2I tile(tx, ty, std::min(kMaxTile, g.maxX - tx + 1), std::min(kMaxTile, g.maxY - ty + 1));
            makeTiles(kernel, x0, y0, tile, tolerance, tiles);
        }
    }
    parallelFor(static_cast<long>(tiles.size()), nThreads, [&](long t0, long t1) {
        for (long t = t0; t < t1; ++t) {
            const Box2I& tile = tiles[t];
            const FixedKernel k2 = squaredKernelAt(kernel, x0 + 0.5 * (tile.minX + tile.maxX),
                                                   y0 + 0.5 * (tile.minY + tile.maxY), 0.1 * tolerance);
            // Views of the tile plus its halo: their good box is exactly the tile.
            const long ha = tile.minY - cy, wa = tile.minX - cx;
            const long hn = tile.getHeight() + kh - 1, wn = tile.getWidth() + kw - 1;
            ImageView<const T> sin(in.data + ha * in.stride + wa, hn, wn, in.stride);
            ImageView<T> sout(out.data + ha * out.stride + wa, hn, wn, out.stride);
            convolvePlane<T, T>(sin, sout, k2, 1.0, ConvolutionMethod::AUTO, 1);
        }
    });
}

}  // namespace

template <typename T>
void convolveSpatial(const MaskedImageView<const T>& in, const MaskedImageView<T>& out, int x0, int y0,
                     const LinearCombinationKernel& kernel, const ConvolutionControl& control,
                     double varianceTolerance) {
    if (in.image.ny != out.image.ny || in.image.nx != out.image.nx) {
        throw InvalidInputError("convolveSpatial: output shape differs from input shape");
    }
    if (in.image.nx < kernel.getWidth() || in.image.ny < kernel.getHeight()) {
        throw InvalidInputError("convolveSpatial: image of " + std::to_string(in.image.nx) + "x" +
                                std::to_string(in.image.ny) + " pixels is smaller than the " +
                                std::to_string(kernel.getWidth()) + "x" + std::to_string(kernel.getHeight()) +
                                " kernel");
    }
    if (!(varianceTolerance > 0.0)) throw InvalidInputError("convolveSpatial: varianceTolerance must be > 0");
    if (control.doNormalize) {
        throw InvalidInputError("convolveSpatial: normalisation of a spatially varying kernel is not supported");
    }
    convolveImagePlane(in.image, out.image, x0, y0, kernel, control.nThreads);
    convolveVariancePlane(in.variance, out.variance, x0, y0, kernel, varianceTolerance, control.nThreads);

    ImageD footprint = ImageD::Zero(kernel.getHeight(), kernel.getWidth());
    for (const auto& b : kernel.getBasisList()) footprint += b.getImage().abs();
    convolveMaskPlane(in.mask, out.mask, FixedKernel(footprint), control.nThreads);

    const Box2I g = goodBox(in.image.nx, in.image.ny, kernel.getWidth(), kernel.getHeight());
    const T nan = std::numeric_limits<T>::quiet_NaN();
    const T inf = std::numeric_limits<T>::infinity();
    for (long y = 0; y < in.image.ny; ++y) {
        for (long x = 0; x < in.image.nx; ++x) {
            if (y >= g.minY && y <= g.maxY && x >= g.minX && x <= g.maxX) {
                x = g.maxX;
                continue;
            }
            if (control.doCopyEdge) {
                out.image(y, x) = in.image(y, x);
                out.variance(y, x) = in.variance(y, x);
                out.mask(y, x) = in.mask(y, x) | control.edgeBit;
            } else {
                out.image(y, x) = nan;
                out.variance(y, x) = inf;
                out.mask(y, x) = in.mask(y, x) | control.noDataBit;
            }
        }
    }
}

template void convolveSpatial<float>(const MaskedImageView<const float>&, const MaskedImageView<float>&, int, int,
                                     const LinearCombinationKernel&, const ConvolutionControl&, double);
template void convolveSpatial<double>(const MaskedImageView<const double>&, const MaskedImageView<double>&, int, int,
                                      const LinearCombinationKernel&, const ConvolutionControl&, double);

}  // namespace psfmatch
