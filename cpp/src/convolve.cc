// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/convolve.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "psfmatch/errors.h"
#include "psfmatch/parallel.h"

namespace psfmatch {

namespace {

constexpr long kRowsPerBlock = 32;

struct Tap {
    long offset;
    double weight;
};

// The non-zero taps of a 1-D factor: a delta-function basis then costs one copy per pass.
std::vector<Tap> nonZeroTaps(const Eigen::VectorXd& k) {
    std::vector<Tap> taps;
    for (long i = 0; i < k.size(); ++i) {
        if (k[i] != 0.0) taps.push_back({i, k[i]});
    }
    return taps;
}

void checkShapes(long inNy, long inNx, long outNy, long outNx, const FixedKernel& kernel, const char* what) {
    if (inNy != outNy || inNx != outNx) {
        throw InvalidInputError(std::string(what) + ": output shape differs from input shape");
    }
    if (inNx < kernel.getWidth() || inNy < kernel.getHeight()) {
        throw InvalidInputError(std::string(what) + ": image of " + std::to_string(inNx) + "x" +
                                std::to_string(inNy) + " pixels is smaller than the " +
                                std::to_string(kernel.getWidth()) + "x" + std::to_string(kernel.getHeight()) +
                                " kernel");
    }
}

long separableCost(const FixedKernel& kernel) {
    long cost = 0;
    for (const auto& t : kernel.getTerms()) {
        cost += static_cast<long>(nonZeroTaps(t.kx).size() + nonZeroTaps(t.ky).size());
    }
    return cost;
}

bool useSeparable(const FixedKernel& kernel, ConvolutionMethod method) {
    if (method == ConvolutionMethod::DIRECT) return false;
    if (method == ConvolutionMethod::SEPARABLE) {
        if (!kernel.isSeparable()) {
            throw InvalidInputError("separable convolution requested for a kernel with no separable decomposition");
        }
        return true;
    }
    if (!kernel.isSeparable()) return false;
    long direct = (kernel.getImage() != 0.0).count();
    return separableCost(kernel) < direct;
}

// x pass of one factor: tmp(r, x - gx0) = Σ_i kx[i] · in(r, x - i + cx) for the good columns.
template <typename Tin>
void xPass(const ImageView<const Tin>& in, long rowBegin, long rowEnd, const std::vector<Tap>& taps, int cx,
           long gx0, long gnx, double* tmp) {
    for (long r = rowBegin; r < rowEnd; ++r) {
        double* t = tmp + (r - rowBegin) * gnx;
        std::fill(t, t + gnx, 0.0);
        const Tin* src = in.row(r) + gx0 + cx;
        for (const Tap& tap : taps) {
            const Tin* s = src - tap.offset;
            const double w = tap.weight;
            for (long x = 0; x < gnx; ++x) t[x] += w * static_cast<double>(s[x]);
        }
    }
}

template <typename Tin, typename Tout>
void convolveSeparable(const ImageView<const Tin>& in, const ImageView<Tout>& out, const FixedKernel& kernel,
                       double scale, int nThreads) {
    const Box2I g = goodBox(in.nx, in.ny, kernel.getWidth(), kernel.getHeight());
    const int cx = kernel.getCtrX(), cy = kernel.getCtrY(), kh = kernel.getHeight();
    const long gnx = g.getWidth(), gny = g.getHeight();
    struct Prepared {
        double coef;
        std::vector<Tap> x, y;
    };
    std::vector<Prepared> terms;
    for (const auto& t : kernel.getTerms()) terms.push_back({t.coef, nonZeroTaps(t.kx), nonZeroTaps(t.ky)});
    const long nBlocks = (gny + kRowsPerBlock - 1) / kRowsPerBlock;
    parallelFor(nBlocks, nThreads, [&](long b0, long b1) {
        std::vector<double> tmp, acc;
        for (long b = b0; b < b1; ++b) {
            const long y0 = g.minY + b * kRowsPerBlock;
            const long y1 = std::min<long>(y0 + kRowsPerBlock, g.maxY + 1);
            // input rows y - j + cy for j in [0, kh): [y0 - (kh - 1 - cy), y1 - 1 + cy]
            const long r0 = y0 - (kh - 1 - cy), r1 = y1 + cy;
            tmp.assign((r1 - r0) * gnx, 0.0);
            acc.assign((y1 - y0) * gnx, 0.0);
            for (const auto& term : terms) {
                xPass(in, r0, r1, term.x, cx, g.minX, gnx, tmp.data());
                for (long y = y0; y < y1; ++y) {
                    double* a = acc.data() + (y - y0) * gnx;
                    for (const Tap& tap : term.y) {
                        const double w = term.coef * tap.weight;
                        const double* s = tmp.data() + (y - tap.offset + cy - r0) * gnx;
                        for (long x = 0; x < gnx; ++x) a[x] += w * s[x];
                    }
                }
            }
            for (long y = y0; y < y1; ++y) {
                const double* a = acc.data() + (y - y0) * gnx;
                Tout* o = out.row(y) + g.minX;
                for (long x = 0; x < gnx; ++x) o[x] = static_cast<Tout>(scale * a[x]);
            }
        }
    });
}

template <typename Tin, typename Tout>
void convolveDirect(const ImageView<const Tin>& in, const ImageView<Tout>& out, const FixedKernel& kernel,
                    double scale, int nThreads) {
    const Box2I g = goodBox(in.nx, in.ny, kernel.getWidth(), kernel.getHeight());
    const int cx = kernel.getCtrX(), cy = kernel.getCtrY();
    const long gnx = g.getWidth();
    struct Tap2 {
        long j, i;
        double w;
    };
    std::vector<Tap2> taps;
    const ImageD& k = kernel.getImage();
    for (long j = 0; j < k.rows(); ++j) {
        for (long i = 0; i < k.cols(); ++i) {
            if (k(j, i) != 0.0) taps.push_back({j, i, k(j, i)});
        }
    }
    parallelFor(g.getHeight(), nThreads, [&](long r0, long r1) {
        std::vector<double> acc(gnx);
        for (long y = g.minY + r0; y < g.minY + r1; ++y) {
            std::fill(acc.begin(), acc.end(), 0.0);
            for (const Tap2& t : taps) {
                const Tin* s = in.row(y - t.j + cy) + g.minX + cx - t.i;
                for (long x = 0; x < gnx; ++x) acc[x] += t.w * static_cast<double>(s[x]);
            }
            Tout* o = out.row(y) + g.minX;
            for (long x = 0; x < gnx; ++x) o[x] = static_cast<Tout>(scale * acc[x]);
        }
    });
}

}  // namespace

Box2I goodBox(long nx, long ny, int kw, int kh) {
    const int cx = (kw - 1) / 2, cy = (kh - 1) / 2;
    Box2I box;
    box.minX = cx;
    box.minY = cy;
    box.maxX = static_cast<int>(nx - 1 - (kw - 1 - cx));
    box.maxY = static_cast<int>(ny - 1 - (kh - 1 - cy));
    return box;
}

template <typename Tin, typename Tout>
void convolvePlane(ImageView<const Tin> in, ImageView<Tout> out, const FixedKernel& kernel, double scale,
                   ConvolutionMethod method, int nThreads) {
    checkShapes(in.ny, in.nx, out.ny, out.nx, kernel, "convolvePlane");
    if (useSeparable(kernel, method)) {
        convolveSeparable(in, out, kernel, scale, nThreads);
    } else {
        convolveDirect(in, out, kernel, scale, nThreads);
    }
}

void convolveMaskPlane(ImageView<const std::int32_t> in, ImageView<std::int32_t> out, const FixedKernel& kernel,
                       int nThreads) {
    checkShapes(in.ny, in.nx, out.ny, out.nx, kernel, "convolveMaskPlane");
    const Box2I g = goodBox(in.nx, in.ny, kernel.getWidth(), kernel.getHeight());
    const int cx = kernel.getCtrX(), cy = kernel.getCtrY();
    const long gnx = g.getWidth();
    const ImageD& k = kernel.getImage();
    // The footprint is usually the whole box (a Gaussian never reaches zero): then the OR is
    // separable, a running OR along x then along y.
    const bool fullBox = (k != 0.0).all();
    std::vector<std::pair<long, long>> taps;
    for (long j = 0; j < k.rows(); ++j) {
        for (long i = 0; i < k.cols(); ++i) {
            if (k(j, i) != 0.0) taps.emplace_back(j, i);
        }
    }
    if (fullBox) {
        // Horizontal OR of every needed input row, then vertical OR, block by block.
        const long nBlocks = (g.getHeight() + kRowsPerBlock - 1) / kRowsPerBlock;
        const long kw = k.cols(), kh = k.rows();
        parallelFor(nBlocks, nThreads, [&](long b0, long b1) {
            std::vector<std::int32_t> hor;
            for (long b = b0; b < b1; ++b) {
                const long y0 = g.minY + b * kRowsPerBlock;
                const long y1 = std::min<long>(y0 + kRowsPerBlock, g.maxY + 1);
                const long rr0 = y0 - (kh - 1 - cy), rr1 = y1 + cy;
                hor.assign((rr1 - rr0) * gnx, 0);
                for (long r = rr0; r < rr1; ++r) {
                    std::int32_t* h = hor.data() + (r - rr0) * gnx;
                    const std::int32_t* s = in.row(r) + g.minX + cx;
                    for (long i = 0; i < kw; ++i) {
                        const std::int32_t* si = s - i;
                        for (long x = 0; x < gnx; ++x) h[x] |= si[x];
                    }
                }
                for (long y = y0; y < y1; ++y) {
                    std::int32_t* o = out.row(y) + g.minX;
                    std::fill(o, o + gnx, 0);
                    for (long j = 0; j < kh; ++j) {
                        const std::int32_t* h = hor.data() + (y - j + cy - rr0) * gnx;
                        for (long x = 0; x < gnx; ++x) o[x] |= h[x];
                    }
                }
            }
        });
        return;
    }
    parallelFor(g.getHeight(), nThreads, [&](long r0, long r1) {
        for (long y = g.minY + r0; y < g.minY + r1; ++y) {
            std::int32_t* o = out.row(y) + g.minX;
            std::fill(o, o + gnx, 0);
            for (const auto& t : taps) {
                const std::int32_t* s = in.row(y - t.first + cy) + g.minX + cx - t.second;
                for (long x = 0; x < gnx; ++x) o[x] |= s[x];
            }
        }
    });
}

template <typename T>
void convolveMaskedImage(const MaskedImageView<const T>& in, const MaskedImageView<T>& out, const FixedKernel& kernel,
                         const ConvolutionControl& control) {
    checkShapes(in.image.ny, in.image.nx, out.image.ny, out.image.nx, kernel, "convolveMaskedImage");
    double scale = 1.0;
    if (control.doNormalize) {
        const double sum = kernel.getSum();
        if (sum == 0.0) throw InvalidInputError("convolveMaskedImage: cannot normalise a kernel whose sum is 0");
        scale = 1.0 / sum;
    }
    convolvePlane<T, T>(in.image, out.image, kernel, scale, control.method, control.nThreads);
    convolvePlane<T, T>(in.variance, out.variance, kernel.squared(), scale * scale, control.method, control.nThreads);
    convolveMaskPlane(in.mask, out.mask, kernel, control.nThreads);

    const Box2I g = goodBox(in.image.nx, in.image.ny, kernel.getWidth(), kernel.getHeight());
    const T nan = std::numeric_limits<T>::quiet_NaN();
    const T inf = std::numeric_limits<T>::infinity();
    for (long y = 0; y < in.image.ny; ++y) {
        const bool rowInside = y >= g.minY && y <= g.maxY;
        for (long x = 0; x < in.image.nx; ++x) {
            if (rowInside && x >= g.minX && x <= g.maxX) {
                x = g.maxX;  // skip the interior of this row
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

MaskedImage convolveMaskedImage(const MaskedImage& in, const FixedKernel& kernel, const ConvolutionControl& control) {
    in.checkConsistent("convolveMaskedImage");
    MaskedImage out(in.getHeight(), in.getWidth(), in.x0, in.y0);
    MaskedImageView<const double> inView{viewOf(in.image), viewOf(in.mask), viewOf(in.variance)};
    MaskedImageView<double> outView{viewOf(out.image), viewOf(out.mask), viewOf(out.variance)};
    convolveMaskedImage<double>(inView, outView, kernel, control);
    return out;
}

Eigen::MatrixXd convolveBasisOnGoodBox(const ImageD& image, const KernelList& basis) {
    checkBasisList(basis, "convolveBasisOnGoodBox");
    const FixedKernel& k0 = basis.front();
    if (image.cols() < k0.getWidth() || image.rows() < k0.getHeight()) {
        throw InvalidInputError("convolveBasisOnGoodBox: stamp of " + std::to_string(image.cols()) + "x" +
                                std::to_string(image.rows()) + " pixels is smaller than the " +
                                std::to_string(k0.getWidth()) + "x" + std::to_string(k0.getHeight()) + " kernel");
    }
    const Box2I g = goodBox(image.cols(), image.rows(), k0.getWidth(), k0.getHeight());
    const long gnx = g.getWidth(), gny = g.getHeight(), npix = gnx * gny;
    const int cx = k0.getCtrX(), cy = k0.getCtrY();
    const ImageView<const double> in = viewOf(image);
    Eigen::MatrixXd columns = Eigen::MatrixXd::Zero(npix, static_cast<long>(basis.size()));

    // Distinct x factors, each applied once over all rows; then one y pass per distinct
    // (x factor, y factor) pair; then each basis kernel is a sum of those pair images.
    std::vector<const Eigen::VectorXd*> xFactors;
    std::vector<std::vector<double>> xImages;  // (image rows) × gnx each
    struct Pair {
        long xIndex;
        const Eigen::VectorXd* ky;
        std::vector<double> result;  // gny × gnx
    };
    std::vector<Pair> pairs;
    auto xIndexOf = [&](const Eigen::VectorXd& kx) {
        for (std::size_t i = 0; i < xFactors.size(); ++i) {
            if (*xFactors[i] == kx) return static_cast<long>(i);
        }
        xFactors.push_back(&kx);
        std::vector<double> tmp(image.rows() * gnx);
        xPass(in, 0, image.rows(), nonZeroTaps(kx), cx, g.minX, gnx, tmp.data());
        xImages.push_back(std::move(tmp));
        return static_cast<long>(xFactors.size() - 1);
    };
    auto pairOf = [&](long xi, const Eigen::VectorXd& ky) -> const std::vector<double>& {
        for (const auto& p : pairs) {
            if (p.xIndex == xi && *p.ky == ky) return p.result;
        }
        std::vector<double> r(npix, 0.0);
        const std::vector<double>& tmp = xImages[xi];
        for (const Tap& tap : nonZeroTaps(ky)) {
            for (long y = g.minY; y <= g.maxY; ++y) {
                double* o = r.data() + (y - g.minY) * gnx;
                const double* s = tmp.data() + (y - tap.offset + cy) * gnx;
                for (long x = 0; x < gnx; ++x) o[x] += tap.weight * s[x];
            }
        }
        pairs.push_back({xi, &ky, std::move(r)});
        return pairs.back().result;
    };

    for (std::size_t k = 0; k < basis.size(); ++k) {
        const FixedKernel& kernel = basis[k];
        if (kernel.isSeparable()) {
            for (const auto& t : kernel.getTerms()) {
                const std::vector<double>& r = pairOf(xIndexOf(t.kx), t.ky);
                columns.col(k) += t.coef * Eigen::Map<const Eigen::VectorXd>(r.data(), npix);
            }
        } else {
            ImageD out(image.rows(), image.cols());
            convolveDirect<double, double>(in, viewOf(out), kernel, 1.0, 1);
            Eigen::Map<Eigen::VectorXd> col(columns.col(k).data(), npix);
            for (long y = 0; y < gny; ++y) {
                col.segment(y * gnx, gnx) = out.row(g.minY + y).segment(g.minX, gnx).transpose().matrix();
            }
        }
    }
    return columns;
}

template void convolvePlane<float, float>(ImageView<const float>, ImageView<float>, const FixedKernel&, double,
                                          ConvolutionMethod, int);
template void convolvePlane<double, double>(ImageView<const double>, ImageView<double>, const FixedKernel&, double,
                                            ConvolutionMethod, int);
template void convolvePlane<float, double>(ImageView<const float>, ImageView<double>, const FixedKernel&, double,
                                           ConvolutionMethod, int);
template void convolveMaskedImage<float>(const MaskedImageView<const float>&, const MaskedImageView<float>&,
                                         const FixedKernel&, const ConvolutionControl&);
template void convolveMaskedImage<double>(const MaskedImageView<const double>&, const MaskedImageView<double>&,
                                          const FixedKernel&, const ConvolutionControl&);

}  // namespace psfmatch
