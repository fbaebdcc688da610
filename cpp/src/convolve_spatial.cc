// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/convolve_spatial.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <new>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Eigenvalues>

#include "psfmatch/convolve_rows.h"
#include "psfmatch/errors.h"
#include "psfmatch/parallel.h"

namespace psfmatch {

namespace {

/// Output rows per parallel task of the image plane: the block's input rows (plus the kernel
/// height) are widened to the accumulation type once and then read from cache by every pass.
constexpr long kRowsPerBlock = 32;
/// Output columns per chunk: a pass buffer of kChunk + kw − 1 values stays in L1.
constexpr long kChunk = 1024;
/// Variance tiles start this large and are halved while the local model of K² needs more than
/// kMaxComponents components, down to kMinTile. Measured on fitted kernels: a 256-px tile of a
/// 2k–4k image needs four to six components; with the vertical factors shared by all of them
/// an extra component costs only its horizontal passes, and up to six (not up to five, nor
/// four) keeps the variance plane of a fitted 4096² kernel fastest (by ~10 %; seven and
/// eight measured the same as six).
constexpr int kMaxTile = 256;
constexpr int kMinTile = 32;
constexpr int kMaxComponents = 6;

/// Pass buffers are padded to whole 64-byte vectors (zeros beyond the data), so the row kernels
/// run over whole vectors and never fall back to one value at a time; the padded lanes are
/// computed and ignored.
template <typename Acc>
constexpr long kLanes = 64 / static_cast<long>(sizeof(Acc));
template <typename Acc>
long padded(long n) {
    return (n + kLanes<Acc> - 1) / kLanes<Acc> * kLanes<Acc>;
}

/// Pass buffers start on a 64-byte boundary and their rows are whole vectors long, so the
/// vertical passes, the coefficient rows and the accumulators are read and written with
/// aligned vectors: an unaligned 64-byte vector spans two cache lines and costs two loads.
template <typename T>
struct AlignedAllocator {
    using value_type = T;
    AlignedAllocator() = default;
    template <typename U>
    AlignedAllocator(const AlignedAllocator<U>&) {}
    T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
    void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(64)); }
    template <typename U>
    bool operator==(const AlignedAllocator<U>&) const {
        return true;
    }
    template <typename U>
    bool operator!=(const AlignedAllocator<U>&) const {
        return false;
    }
};
template <typename T>
using Buffer = std::vector<T, AlignedAllocator<T>>;

// ---------------------------------------------------------------------------------------------
// The basis as distinct separable pieces
// ---------------------------------------------------------------------------------------------

/// A rank-one piece ky ⊗ kx of the basis. A basis kernel without a decomposition is split
/// exactly into its rows: K = Σ_j e_j ⊗ K[j, :] (a one-tap vertical factor per row).
struct Piece {
    Eigen::VectorXd kx, ky;
};

/// The image-plane model: K(x, y) = Σ_c coef_c(x, y) · ky_c ⊗ kx_c with
/// coef_c(x, y) = Σ_k beta(c, k) f_k(x, y); the pieces are grouped by their vertical factor so
/// one vertical pass serves every piece that shares it.
struct Decomposition {
    std::vector<Eigen::VectorXd> yFactors;
    std::vector<std::vector<long>> groups;  // pieces of each vertical factor
    std::vector<Eigen::VectorXd> xFactors;  // kx of each piece
    Eigen::MatrixXd beta;                   // pieces × spatial terms
};

Decomposition decompose(const LinearCombinationKernel& kernel) {
    const KernelList& basis = kernel.getBasisList();
    const Eigen::MatrixXd& alpha = kernel.getSpatialParameters();
    std::vector<Piece> pieces;
    std::vector<Eigen::RowVectorXd> beta;
    auto add = [&](const Eigen::VectorXd& kx, const Eigen::VectorXd& ky, const Eigen::RowVectorXd& b) {
        for (std::size_t c = 0; c < pieces.size(); ++c) {
            if (pieces[c].kx == kx && pieces[c].ky == ky) {
                beta[c] += b;
                return;
            }
        }
        pieces.push_back({kx, ky});
        beta.push_back(b);
    };
    for (std::size_t m = 0; m < basis.size(); ++m) {
        const Eigen::RowVectorXd a = alpha.row(static_cast<long>(m));
        if (basis[m].isSeparable()) {
            for (const auto& t : basis[m].getTerms()) add(t.kx, t.ky, t.coef * a);
        } else {
            const ImageD& k = basis[m].getImage();
            for (long j = 0; j < k.rows(); ++j) {
                if ((k.row(j) == 0.0).all()) continue;
                Eigen::VectorXd e = Eigen::VectorXd::Zero(k.rows());
                e[j] = 1.0;
                add(k.row(j).transpose().matrix(), e, a);
            }
        }
    }
    Decomposition d;
    d.beta.resize(static_cast<long>(pieces.size()), alpha.cols());
    for (std::size_t c = 0; c < pieces.size(); ++c) {
        d.beta.row(static_cast<long>(c)) = beta[c];
        d.xFactors.push_back(pieces[c].kx);
        long g = -1;
        for (std::size_t i = 0; i < d.yFactors.size(); ++i) {
            if (d.yFactors[i] == pieces[c].ky) g = static_cast<long>(i);
        }
        if (g < 0) {
            d.yFactors.push_back(pieces[c].ky);
            d.groups.emplace_back();
            g = static_cast<long>(d.yFactors.size() - 1);
        }
        d.groups[g].push_back(static_cast<long>(c));
    }
    return d;
}

/// The taps of a 1-D factor times `scale`. The smallest taps are dropped while their summed
/// magnitude stays ≤ trim · Σ|k| (zeros always): the far wings of a narrow Gaussian
/// (exp(−u²/2σ²) ~ 1e-16 at 6σ) then cost nothing, and the dropped part bounds the change of
/// any sum made with the factor by that fraction of its L1 norm.
template <typename Acc>
detail::Taps<Acc> tapsOf(const Eigen::VectorXd& k, double scale, double trim) {
    std::vector<long> order(k.size());
    for (long i = 0; i < k.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](long a, long b) { return std::abs(k[a]) < std::abs(k[b]); });
    const double budget = trim * k.cwiseAbs().sum();
    std::vector<bool> keep(k.size(), true);
    double dropped = 0.0;
    for (long i : order) {
        dropped += std::abs(k[i]);
        if (k[i] != 0.0 && dropped > budget) break;
        keep[i] = false;
    }
    detail::Taps<Acc> taps;
    for (long i = 0; i < k.size(); ++i) {
        if (!keep[i]) continue;
        taps.offset.push_back(i);
        taps.weight.push_back(static_cast<Acc>(scale * k[i]));
    }
    return taps;
}

/// Term k of the spatial function is xFactors[p_k] · yFactors[q_k] (order 1, x, y, x², xy, …).
std::vector<std::pair<int, int>> termPowers(int order) {
    std::vector<std::pair<int, int>> pq;
    for (int n = 0; n <= order; ++n) {
        for (int q = 0; q <= n; ++q) pq.emplace_back(n - q, q);
    }
    return pq;
}

/// How much the pieces cancel: max over the box's corners and centre of
/// Σ_c |coef_c| ‖ky_c‖₁ ‖kx_c‖₁ / |Σ_c coef_c Σky_c Σkx_c|, the factor by which rounding in
/// the per-piece sums is amplified relative to the result (∞ for a kernel summing to 0).
double cancellation(const Decomposition& d, const SpatialFunction& f, const Box2I& box, int x0, int y0) {
    const double xs[3] = {double(box.minX), 0.5 * (box.minX + box.maxX), double(box.maxX)};
    const double ys[3] = {double(box.minY), 0.5 * (box.minY + box.maxY), double(box.maxY)};
    double worst = 0.0;
    for (double x : xs) {
        for (double y : ys) {
            const Eigen::VectorXd coef = d.beta * f.terms(x0 + x, y0 + y);
            double l1 = 0.0, sum = 0.0;
            for (long c = 0; c < coef.size(); ++c) {
                long gi = 0;
                while (std::find(d.groups[gi].begin(), d.groups[gi].end(), c) == d.groups[gi].end()) ++gi;
                const Eigen::VectorXd& ky = d.yFactors[gi];
                const Eigen::VectorXd& kx = d.xFactors[c];
                l1 += std::abs(coef[c]) * ky.cwiseAbs().sum() * kx.cwiseAbs().sum();
                sum += coef[c] * ky.sum() * kx.sum();
            }
            worst = std::max(worst, sum == 0.0 ? std::numeric_limits<double>::infinity() : l1 / std::abs(sum));
        }
    }
    return worst;
}

// ---------------------------------------------------------------------------------------------
// Image plane: exact
// ---------------------------------------------------------------------------------------------

/// out(x, y) = Σ_c coef_c(x, y) (ky_c ⊗ kx_c ⊗ in)(x, y), row by row: per vertical factor one
/// vertical pass, then for each piece of its group one horizontal pass that multiplies by the
/// piece's coefficient along the row (γ_cp(y) · X_p(x), γ_cp = Σ_q β_c(p,q) Y_q(y)) and
/// accumulates. Per pixel that is Σ_groups |ky| + Σ_pieces (|kx| + np) multiply-adds, with no
/// approximation: the same sum as evaluating K at the pixel and convolving.
template <typename T, typename Acc>
void convolveImagePlane(const ImageView<const T>& in, const ImageView<T>& out, int x0, int y0,
                        const LinearCombinationKernel& kernel, const Decomposition& d, int nThreads) {
    const SpatialFunction& f = kernel.getSpatialFunction();
    const int kw = kernel.getWidth(), kh = kernel.getHeight();
    const int cx = kernel.getCtrX(), cy = kernel.getCtrY();
    const Box2I g = goodBox(in.nx, in.ny, kw, kh);
    const long gnx = g.getWidth(), gny = g.getHeight();
    const int np = f.getOrder() + 1;
    const auto pq = termPowers(f.getOrder());
    const long nPieces = d.beta.rows();

    std::vector<detail::Taps<Acc>> yTaps, xTaps;
    // In float, taps below 2⁻⁴⁰ of a factor's L1 norm are far under the rounding of the sum; in
    // double every non-zero tap is kept.
    const double trim = std::is_same<Acc, float>::value ? std::ldexp(1.0, -40) : 0.0;
    for (const auto& ky : d.yFactors) yTaps.push_back(tapsOf<Acc>(ky, 1.0, trim));
    for (const auto& kx : d.xFactors) xTaps.push_back(tapsOf<Acc>(kx, 1.0, trim));
    // X_p(x) over the good box's columns, one row per power p, padded with zeros so the last
    // chunk's padded width can be read.
    const long xfStride = padded<Acc>(gnx) + kLanes<Acc>;
    Buffer<Acc> xf(np * xfStride, Acc(0));
    for (long x = 0; x < gnx; ++x) {
        const Eigen::VectorXd v = f.xFactors(x0 + g.minX + x);
        for (int p = 0; p < np; ++p) xf[p * xfStride + x] = static_cast<Acc>(v[p]);
    }

    const long chunk = std::min(gnx, kChunk);
    const long width = padded<Acc>(padded<Acc>(chunk) + kw - 1);
    const long nBlocks = (gny + kRowsPerBlock - 1) / kRowsPerBlock;
    parallelFor(nBlocks, nThreads, [&](long b0, long b1) {
        Buffer<Acc> rows((kRowsPerBlock + kh - 1) * width), ybuf(width), acc(padded<Acc>(chunk)),
                gamma(nPieces * np);
        for (long b = b0; b < b1; ++b) {
            const long ya = g.minY + b * kRowsPerBlock;
            const long yb = std::min<long>(ya + kRowsPerBlock, g.maxY + 1);
            const long ra = ya - (kh - 1 - cy), rb = yb + cy;
            for (long xa = 0; xa < gnx; xa += chunk) {
                const long w = std::min(chunk, gnx - xa);
                const long wp = padded<Acc>(w), n = padded<Acc>(wp + kw - 1);
                const long c0 = g.minX + xa - (kw - 1 - cx);
                for (long r = ra; r < rb; ++r) {
                    const T* src = in.row(r) + c0;
                    Acc* dst = rows.data() + (r - ra) * width;
                    for (long k = 0; k < w + kw - 1; ++k) dst[k] = static_cast<Acc>(src[k]);
                    std::fill(dst + w + kw - 1, dst + n, Acc(0));
                }
                for (long y = ya; y < yb; ++y) {
                    const Eigen::VectorXd yv = f.yFactors(y0 + y);
                    for (long c = 0; c < nPieces; ++c) {
                        double gm[64] = {};
                        for (std::size_t k = 0; k < pq.size(); ++k) {
                            gm[pq[k].first] += d.beta(c, static_cast<long>(k)) * yv[pq[k].second];
                        }
                        for (int p = 0; p < np; ++p) gamma[c * np + p] = static_cast<Acc>(gm[p]);
                    }
                    const Acc* top = rows.data() + (y + cy - ra) * width;
                    std::fill(acc.begin(), acc.begin() + wp, Acc(0));
                    for (std::size_t gi = 0; gi < d.groups.size(); ++gi) {
                        detail::verticalPass(top, width, yTaps[gi], n, ybuf.data());
                        for (long c : d.groups[gi]) {
                            detail::horizontalAccumulate(ybuf.data() + kw - 1, xTaps[c], xf.data() + xa, xfStride,
                                                         gamma.data() + c * np, np, wp, acc.data());
                        }
                    }
                    T* o = out.row(y) + g.minX + xa;
                    for (long x = 0; x < w; ++x) o[x] = static_cast<T>(acc[x]);
                }
            }
        }
    });
}

/// The image plane of a float image is accumulated in float — twice the vector width of double
/// — when the pieces cancel little. The rounding error is at most ≈ 4·ε_float·cancellation
/// relative (measured 1.1e-6 at a cancellation of 5.0, 1.6e-6 at 10.7 and 2.1e-6 at 14.3, on
/// the fitted kernels of the 2048² and 1024² benchmarks and a test kernel), so a cancellation
/// ≤ 16 keeps it ≲ 8e-6, inside the 1e-5 budget of the image plane: below 0.01σ of the photon
/// noise of any pixel under 10⁶ counts. The fitted kernels of real pairs cancel by ~3–15 (the
/// normalised Alard–Lupton basis has large terms of both signs), so the threshold decides
/// whether the plane runs at float speed; stronger cancellation (or a double image) sums in
/// double.
constexpr double kFloatCancellation = 16.0;

template <typename T>
void convolveImagePlane(const ImageView<const T>& in, const ImageView<T>& out, int x0, int y0,
                        const LinearCombinationKernel& kernel, int nThreads) {
    const Decomposition d = decompose(kernel);
    const Box2I g = goodBox(in.nx, in.ny, kernel.getWidth(), kernel.getHeight());
    const bool inFloat = std::is_same<T, float>::value &&
                         cancellation(d, kernel.getSpatialFunction(), g, x0, y0) <= kFloatCancellation;
    if (inFloat) {
        convolveImagePlane<T, float>(in, out, x0, y0, kernel, d, nThreads);
    } else {
        convolveImagePlane<T, double>(in, out, x0, y0, kernel, d, nThreads);
    }
}

// ---------------------------------------------------------------------------------------------
// Variance plane: a local low-rank model of K² per tile
// ---------------------------------------------------------------------------------------------

/// What the variance plane needs of the kernel: K(x, y) = Σ_k f_k(x, y) K_k with the fixed
/// images K_k = Σ_m α_mk B_m (one per spatial term).
struct SpatialImages {
    std::vector<Eigen::VectorXd> termImages;  // K_k flattened row-major (kh·kw)
    const SpatialFunction* f;
    std::vector<std::pair<int, int>> pq;
    int kw, kh;

    Eigen::VectorXd kernelAt(double x, double y) const {
        const Eigen::VectorXd t = f->terms(x, y);
        Eigen::VectorXd k = Eigen::VectorXd::Zero(kw * kh);
        for (std::size_t i = 0; i < termImages.size(); ++i) k += t[static_cast<long>(i)] * termImages[i];
        return k;
    }
};

/// Separable terms of a tile's K² model that share their vertical factor u: one vertical pass,
/// then per term a horizontal pass with x[i], applied with the coefficient g_r(x, y) of
/// component r = components[i].
template <typename Acc>
struct VarianceGroup {
    detail::Taps<Acc> y;
    std::vector<int> components;
    std::vector<detail::Taps<Acc>> x;
};

/// A tile's model: K²(x, y) ≈ Σ_r g_r(x, y) Q_r with g_r = ⟨K²(x, y), Q_r⟩ — exactly a
/// quadratic form in the spatial terms, g_r = Σ_{k,l} f_k f_l ⟨K_k ⊙ K_l, Q_r⟩ — and the Q_r
/// applied as separable terms grouped by the vertical factors they all share.
template <typename Acc>
struct VarianceTile {
    Box2I box;
    std::vector<Eigen::MatrixXd> forms;  // per component: nkt × nkt matrix of ⟨K_k ⊙ K_l, Q_r⟩
    std::vector<VarianceGroup<Acc>> groups;
};

/// Builds the model of one tile, or returns false when the tile should be split: more than
/// kMaxComponents components are needed for K² to within tolerance/2 (relative L1) at a 4×4
/// grid of sample points and at the 3×3 points between them. The separable approximation of
/// the components then gets what is left of the tolerance, so at every sample point the K²
/// the tile applies is within `tolerance` of the true K² in relative L1.
template <typename Acc>
bool modelTile(const SpatialImages& s, int x0, int y0, const Box2I& tile, double tolerance, bool mustAccept,
               VarianceTile<Acc>& model) {
    const int nSample = 4, nCheck = 3;
    const long npix = static_cast<long>(s.kw) * s.kh;
    auto at = [&](double fx, double fy) {
        const Eigen::VectorXd k = s.kernelAt(x0 + tile.minX + fx * (tile.getWidth() - 1),
                                             y0 + tile.minY + fy * (tile.getHeight() - 1));
        return Eigen::VectorXd(k.array().square());
    };
    Eigen::MatrixXd samples(npix, nSample * nSample + nCheck * nCheck);
    long col = 0;
    for (int iy = 0; iy < nSample; ++iy) {
        for (int ix = 0; ix < nSample; ++ix) samples.col(col++) = at(ix / (nSample - 1.0), iy / (nSample - 1.0));
    }
    for (int iy = 0; iy < nCheck; ++iy) {
        for (int ix = 0; ix < nCheck; ++ix) {
            samples.col(col++) = at((ix + 0.5) / (nSample - 1.0), (iy + 0.5) / (nSample - 1.0));
        }
    }
    const Eigen::VectorXd norms = samples.cwiseAbs().colwise().sum().transpose();
    const double minNorm = norms.minCoeff();
    model.box = tile;
    model.forms.clear();
    model.groups.clear();
    if (norms.maxCoeff() == 0.0) return true;  // K ≡ 0 here: the variance is 0

    // Principal directions of the grid samples (their Gram matrix is small), strongest first.
    const long nGrid = nSample * nSample;
    const Eigen::MatrixXd grid = samples.leftCols(nGrid);
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(grid.transpose() * grid);
    const Eigen::VectorXd& lambda = es.eigenvalues();  // ascending
    // A tile that cannot do with kMaxComponents is told cheaply: after that many directions the
    // grid samples' residuals have squared L2 norms summing to the remaining eigenvalues, so
    // one of them has an L2 — hence L1 — norm of at least √(Σλ_rest / nGrid).
    if (!mustAccept && lambda.size() > kMaxComponents) {
        const double rest = lambda.head(lambda.size() - kMaxComponents).cwiseMax(0.0).sum();
        if (std::sqrt(rest / nGrid) > 0.5 * tolerance * norms.head(nGrid).maxCoeff()) return false;
    }
    std::vector<Eigen::VectorXd> q;
    double pcaError = 0.0;
    // The directions are orthonormal, so each one is removed from the running residual.
    Eigen::MatrixXd residual = samples;
    for (long i = lambda.size() - 1; i >= 0; --i) {
        if (!(lambda[i] > 0.0)) break;
        Eigen::VectorXd v = grid * es.eigenvectors().col(i);
        q.push_back(v / v.norm());
        const long r = static_cast<long>(q.size());
        const Eigen::RowVectorXd along = q.back().transpose() * residual;
        residual.noalias() -= q.back() * along;
        pcaError = (residual.cwiseAbs().colwise().sum().transpose().array() / norms.array()).maxCoeff();
        if (pcaError <= 0.5 * tolerance) break;
        if (r >= kMaxComponents && !mustAccept) return false;
    }
    const long r = static_cast<long>(q.size());

    // g_r's quadratic forms, and the Q_r as separable terms with vertical factors u_a shared by
    // every component: the leading eigenvectors of Σ_r gMax_r² Q_r Q_rᵀ, each Q_r then
    // ≈ Σ_a u_a ⊗ w_ar with w_ar = Q_rᵀ u_a. (One vertical pass then serves every component:
    // measured on a fitted 4096² kernel, ~8 shared factors against ~24 terms of per-component
    // SVDs, 18 % fewer multiply-adds per pixel.) Factors are added until
    // Σ_r gMax_r ‖Q_r − Σ_a u_a ⊗ w_ar‖₁ fits the rest of the tolerance; then the smallest
    // terms are dropped while the sum of their gMax_r ‖u_a‖₁ ‖w_ar‖₁ (the L1 norm of a rank-one
    // term bounds what dropping it adds) still fits. The factors get only half of that budget:
    // given all of it they leave their error in the kernel's core, which a peaked variance
    // (bright stars) weights most — measured 1.2e-3 relative under the stars of
    // test_variance_plane_within_1e3_under_bright_stars, against 5.5e-4 with half (and 7e-4
    // with per-component SVDs) — while the terms dropped afterwards are small everywhere.
    const long nkt = static_cast<long>(s.termImages.size());
    using RowMajor = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    std::vector<Eigen::MatrixXd> rest(r);
    std::vector<double> gMax(r);
    Eigen::MatrixXd m = Eigen::MatrixXd::Zero(s.kh, s.kh);
    for (long j = 0; j < r; ++j) {
        Eigen::MatrixXd form(nkt, nkt);
        for (long k = 0; k < nkt; ++k) {
            const Eigen::VectorXd wk = s.termImages[k].cwiseProduct(q[j]);
            for (long l = 0; l <= k; ++l) form(k, l) = form(l, k) = wk.dot(s.termImages[l]);
        }
        model.forms.push_back(form);
        gMax[j] = (q[j].transpose() * samples).cwiseAbs().maxCoeff();
        rest[j] = Eigen::Map<const RowMajor>(q[j].data(), s.kh, s.kw);
        m.noalias() += (gMax[j] * gMax[j]) * rest[j] * rest[j].transpose();
    }
    const double budget = std::max(0.0, tolerance - pcaError) * minNorm;
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> vertical(m);
    double error = 0.0;
    for (long j = 0; j < r; ++j) error += gMax[j] * rest[j].cwiseAbs().sum();
    std::vector<Eigen::VectorXd> us, ws;  // ws[a · r + j] = w_aj
    std::vector<double> sizes;            // gMax_j ‖u_a‖₁ ‖w_aj‖₁, likewise
    for (long i = s.kh - 1; i >= 0 && error > 0.5 * budget; --i) {
        const Eigen::VectorXd u = vertical.eigenvectors().col(i);
        const double uNorm = u.cwiseAbs().sum();
        error = 0.0;
        for (long j = 0; j < r; ++j) {
            Eigen::VectorXd w = rest[j].transpose() * u;
            rest[j].noalias() -= u * w.transpose();
            error += gMax[j] * rest[j].cwiseAbs().sum();
            sizes.push_back(gMax[j] * uNorm * w.cwiseAbs().sum());
            ws.push_back(std::move(w));
        }
        us.push_back(u);
    }
    std::vector<bool> dropped(sizes.size(), false);
    std::vector<long> order(sizes.size());
    for (std::size_t t = 0; t < sizes.size(); ++t) order[t] = static_cast<long>(t);
    std::stable_sort(order.begin(), order.end(), [&](long p, long q2) { return sizes[p] < sizes[q2]; });
    for (long t : order) {
        if (error + sizes[t] > budget) break;
        error += sizes[t];
        dropped[t] = true;
    }
    // Factor taps are trimmed by 1e-6 of their L1 norm: a relative change ≤ 2e-6 of each term.
    const double trim = 1.0e-6;
    for (std::size_t a = 0; a < us.size(); ++a) {
        VarianceGroup<Acc> group;
        for (long j = 0; j < r; ++j) {
            const std::size_t t = a * r + j;
            if (dropped[t]) continue;
            group.components.push_back(static_cast<int>(j));
            group.x.push_back(tapsOf<Acc>(ws[t], 1.0, trim));
        }
        if (group.x.empty()) continue;
        group.y = tapsOf<Acc>(us[a], 1.0, trim);
        model.groups.push_back(std::move(group));
    }
    return true;
}

template <typename Acc>
void planTiles(const SpatialImages& s, int x0, int y0, const Box2I& tile, double tolerance,
               std::vector<VarianceTile<Acc>>& tiles) {
    VarianceTile<Acc> model;
    const bool small = tile.getWidth() <= kMinTile && tile.getHeight() <= kMinTile;
    if (modelTile(s, x0, y0, tile, tolerance, small, model)) {
        tiles.push_back(std::move(model));
        return;
    }
    const int mx = tile.minX + tile.getWidth() / 2, my = tile.minY + tile.getHeight() / 2;
    const Box2I parts[4] = {Box2I(tile.minX, tile.minY, mx - tile.minX, my - tile.minY),
                            Box2I(mx, tile.minY, tile.maxX - mx + 1, my - tile.minY),
                            Box2I(tile.minX, my, mx - tile.minX, tile.maxY - my + 1),
                            Box2I(mx, my, tile.maxX - mx + 1, tile.maxY - my + 1)};
    for (const Box2I& p : parts) {
        if (!p.isEmpty()) planTiles(s, x0, y0, p, tolerance, tiles);
    }
}

/// Applies one tile's model: per row, g_r(x, y) along the row from its quadratic form
/// (Σ_{p ≤ p'} X_p X_p'(x) · C_r,pp'(y)), then per separable term a vertical and a horizontal
/// pass accumulating g_r · (u ⊗ v ⊗ V).
template <typename T>
void applyTile(const ImageView<const T>& in, const ImageView<T>& out, const SpatialImages& s, int y0,
               const VarianceTile<T>& tile, const Buffer<T>& xx, long xxStride, long xxOffset,
               const std::vector<std::pair<int, int>>& pairs, Buffer<T>& rows, Buffer<T>& ybuf, Buffer<T>& acc,
               Buffer<T>& coef, const Buffer<T>& ones) {
    const int kw = s.kw, kh = s.kh;
    const int cx = (kw - 1) / 2, cy = (kh - 1) / 2;
    const long w = tile.box.getWidth();
    const long nr = static_cast<long>(tile.forms.size());
    const long c0 = tile.box.minX - (kw - 1 - cx);
    const long npairs = static_cast<long>(pairs.size());
    const long nkt = static_cast<long>(s.pq.size());
    // Index of the (p, p') pair of every (k, l) term pair with p ≤ p', and its multiplicity.
    std::vector<long> pairOf(nkt * nkt, -1);
    for (long k = 0; k < nkt; ++k) {
        for (long l = 0; l < nkt; ++l) {
            const int p = s.pq[k].first, p2 = s.pq[l].first;
            if (p > p2) continue;
            for (long i = 0; i < npairs; ++i) {
                if (pairs[i] == std::make_pair(p, p2)) pairOf[k * nkt + l] = i;
            }
        }
    }
    // The tile's input rows are copied to a buffer first: image rows a power of two apart (a
    // 2048-pixel float row is 8 KiB) fall in the same L1 sets, and the kh rows a vertical pass
    // reads would evict each other; the buffer's row length (w + kw − 1) does not alias.
    const long wp = padded<T>(w), width = padded<T>(wp + kw - 1);
    const long r0 = tile.box.minY - (kh - 1 - cy), r1 = tile.box.maxY + 1 + cy;
    rows.resize((r1 - r0) * width);
    for (long rr = r0; rr < r1; ++rr) {
        T* dst = rows.data() + (rr - r0) * width;
        std::copy_n(in.row(rr) + c0, w + kw - 1, dst);
        std::fill(dst + w + kw - 1, dst + width, T(0));
    }
    ybuf.resize(width);
    acc.resize(wp);
    coef.resize(nr * wp);
    std::vector<double> c(npairs);
    std::vector<T> cpp(npairs);
    detail::Taps<T> unit;
    unit.offset.push_back(0);
    unit.weight.push_back(T(1));
    const T one = T(1);
    for (long y = tile.box.minY; y <= tile.box.maxY; ++y) {
        const Eigen::VectorXd yv = s.f->yFactors(y0 + y);
        for (long r = 0; r < nr; ++r) {
            // C_r,pp'(y) = Σ over terms k = (p, q), l = (p', q') of form(k, l) Y_q Y_q', doubled
            // for p ≠ p' so the sum runs over p ≤ p' only.
            std::fill(c.begin(), c.end(), 0.0);
            const Eigen::MatrixXd& form = tile.forms[r];
            for (long k = 0; k < nkt; ++k) {
                for (long l = 0; l < nkt; ++l) {
                    const long i = pairOf[k * nkt + l];
                    if (i < 0) continue;
                    const double mult = s.pq[k].first == s.pq[l].first ? 1.0 : 2.0;
                    c[i] += mult * form(k, l) * yv[s.pq[k].second] * yv[s.pq[l].second];
                }
            }
            for (long i = 0; i < npairs; ++i) cpp[i] = static_cast<T>(c[i]);
            // g_r(x) = Σ_pairs C_pair · XX_pair(x), through the vectorised row kernel (a unit
            // tap on a row of ones).
            T* g = coef.data() + r * wp;
            std::fill(g, g + wp, T(0));
            detail::horizontalAccumulate(ones.data(), unit, xx.data() + xxOffset, xxStride, cpp.data(),
                                         static_cast<int>(npairs), wp, g);
        }
        std::fill(acc.begin(), acc.end(), T(0));
        const T* top = rows.data() + (y + cy - r0) * width;
        for (const auto& group : tile.groups) {
            detail::verticalPass(top, width, group.y, width, ybuf.data());
            for (std::size_t i = 0; i < group.x.size(); ++i) {
                detail::horizontalAccumulate(ybuf.data() + kw - 1, group.x[i], coef.data() + group.components[i] * wp,
                                             wp, &one, 1, wp, acc.data());
            }
        }
        T* o = out.row(y) + tile.box.minX;
        for (long x = 0; x < w; ++x) o[x] = acc[x];
    }
}

template <typename T>
void convolveVariancePlane(const ImageView<const T>& in, const ImageView<T>& out, int x0, int y0,
                           const LinearCombinationKernel& kernel, double tolerance, int nThreads) {
    const int kw = kernel.getWidth(), kh = kernel.getHeight();
    const Box2I g = goodBox(in.nx, in.ny, kw, kh);
    const long gnx = g.getWidth();
    SpatialImages s;
    s.f = &kernel.getSpatialFunction();
    s.pq = termPowers(s.f->getOrder());
    s.kw = kw;
    s.kh = kh;
    const KernelList& basis = kernel.getBasisList();
    const Eigen::MatrixXd& alpha = kernel.getSpatialParameters();
    for (long k = 0; k < alpha.cols(); ++k) {
        Eigen::VectorXd img = Eigen::VectorXd::Zero(static_cast<long>(kw) * kh);
        for (std::size_t m = 0; m < basis.size(); ++m) {
            const ImageD& b = basis[m].getImage();  // row-major: flattening gives [j·kw + i]
            img += alpha(static_cast<long>(m), k) * Eigen::Map<const Eigen::VectorXd>(b.data(), b.size());
        }
        s.termImages.push_back(img);
    }
    // X_p X_p'(x) for p ≤ p' over the good box's columns, each row padded (with zeros) so a
    // tile's padded width can be read from any tile's start.
    const int np = s.f->getOrder() + 1;
    const long xxStride = padded<T>(gnx) + kLanes<T>;
    Buffer<T> xx;
    {
        std::vector<Eigen::VectorXd> xv(gnx);
        for (long x = 0; x < gnx; ++x) xv[x] = s.f->xFactors(x0 + g.minX + x);
        for (int p = 0; p < np; ++p) {
            for (int p2 = p; p2 < np; ++p2) {
                for (long x = 0; x < gnx; ++x) xx.push_back(static_cast<T>(xv[x][p] * xv[x][p2]));
                xx.resize(xx.size() + (xxStride - gnx), T(0));
            }
        }
    }
    std::vector<Box2I> grid;
    for (int ty = g.minY; ty <= g.maxY; ty += kMaxTile) {
        for (int tx = g.minX; tx <= g.maxX; tx += kMaxTile) {
            grid.emplace_back(tx, ty, std::min(kMaxTile, g.maxX - tx + 1), std::min(kMaxTile, g.maxY - ty + 1));
        }
    }
    std::vector<std::pair<int, int>> pairs;
    for (int p = 0; p < np; ++p) {
        for (int p2 = p; p2 < np; ++p2) pairs.emplace_back(p, p2);
    }
    const Buffer<T> ones(kMaxTile, T(1));
    parallelFor(static_cast<long>(grid.size()), nThreads, [&](long t0, long t1) {
        Buffer<T> rows, ybuf, acc, coef;
        for (long t = t0; t < t1; ++t) {
            std::vector<VarianceTile<T>> tiles;
            planTiles(s, x0, y0, grid[t], tolerance, tiles);
            for (const auto& tile : tiles) {
                applyTile(in, out, s, y0, tile, xx, xxStride, tile.box.minX - g.minX, pairs, rows, ybuf, acc, coef, ones);
            }
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
    if (kernel.getSpatialFunction().getOrder() > 63) {
        throw InvalidInputError("convolveSpatial: spatial order above 63 is not supported");
    }
    convolveImagePlane(in.image, out.image, x0, y0, kernel, control.nThreads);
    convolveVariancePlane(in.variance, out.variance, x0, y0, kernel, varianceTolerance, control.nThreads);

    ImageD footprint = ImageD::Zero(kernel.getHeight(), kernel.getWidth());
    for (const auto& b : kernel.getBasisList()) footprint += b.getImage().abs();
    convolveMaskPlane(in.mask, out.mask, FixedKernel(footprint), control.nThreads);

    fillConvolutionBorder(in, out, kernel.getWidth(), kernel.getHeight(), control);
}

template void convolveSpatial<float>(const MaskedImageView<const float>&, const MaskedImageView<float>&, int, int,
                                     const LinearCombinationKernel&, const ConvolutionControl&, double);
template void convolveSpatial<double>(const MaskedImageView<const double>&, const MaskedImageView<double>&, int, int,
                                      const LinearCombinationKernel&, const ConvolutionControl&, double);

}  // namespace psfmatch
