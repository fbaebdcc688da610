// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/stamp_convolve.h"

#include <cstring>
#include <string>
#include <vector>

#include "psfmatch/convolve.h"
#include "psfmatch/errors.h"
#include "psfmatch/simd.h"

namespace psfmatch {

namespace {

struct StampTap {
    long offset;  ///< of the input pixel from the input position of the output pixel
    double weight;
};

using Double4 = double __attribute__((vector_size(32)));

// For b < NB and k < 4, out[start_b + k] = Σ_t taps[t].weight · src[taps[t].offset + start_b + k]
// with start_b = 4b, except the last block's, `lastStart` (it may overlap the one before, whose
// pixels it then recomputes to the same values). The sum is taken in tap order from +0, each
// product rounded before it is added.
template <int NB>
inline __attribute__((always_inline)) void tapBlocks(const double* src, const StampTap* taps, long nTaps,
                                                      double* out, long lastStart) {
    long start[NB];
    for (int b = 0; b < NB; ++b) start[b] = 4 * b;
    start[NB - 1] = lastStart;
    Double4 acc[NB];
    for (int b = 0; b < NB; ++b) acc[b] = Double4{0.0, 0.0, 0.0, 0.0};
    for (long t = 0; t < nTaps; ++t) {
        const double* s = src + taps[t].offset;
        const double w = taps[t].weight;
        const Double4 wv = {w, w, w, w};
        for (int b = 0; b < NB; ++b) {
            Double4 v;
            std::memcpy(&v, s + start[b], sizeof v);
            acc[b] += wv * v;
        }
    }
    for (int b = 0; b < NB; ++b) std::memcpy(out + start[b], &acc[b], sizeof acc[b]);
}

// nRows rows of `width` outputs: out[r·outStride + x] = Σ_t w_t · in[r·inStride + x + offset_t].
// Groups of up to 6 blocks of 4 columns (24 columns, 6 accumulator registers); a width that is
// not a multiple of 4 ends on a block overlapping the previous one; below 4 columns, one pixel
// at a time.
inline __attribute__((always_inline)) void tapRowsImpl(const double* in, long inStride, double* out, long outStride,
                                                        long nRows, long width, const StampTap* taps, long nTaps) {
    for (long r = 0; r < nRows; ++r) {
        const double* src = in + r * inStride;
        double* dst = out + r * outStride;
        if (width < 4) {
            for (long x = 0; x < width; ++x) {
                double acc = 0.0;
                for (long t = 0; t < nTaps; ++t) acc += taps[t].weight * src[x + taps[t].offset];
                dst[x] = acc;
            }
            continue;
        }
        long x = 0;
        for (; width - x > 24; x += 24) tapBlocks<6>(src + x, taps, nTaps, dst + x, 20);
        // 1 … 24 columns left, at least 4 in all: ceil(left/4) blocks, the last ending at width.
        const long left = width - x;
        const long last = left - 4;
        switch ((left + 3) / 4) {
            case 1:
                tapBlocks<1>(src + x, taps, nTaps, dst + x, last);
                break;
            case 2:
                tapBlocks<2>(src + x, taps, nTaps, dst + x, last);
                break;
            case 3:
                tapBlocks<3>(src + x, taps, nTaps, dst + x, last);
                break;
            case 4:
                tapBlocks<4>(src + x, taps, nTaps, dst + x, last);
                break;
            case 5:
                tapBlocks<5>(src + x, taps, nTaps, dst + x, last);
                break;
            default:
                tapBlocks<6>(src + x, taps, nTaps, dst + x, last);
                break;
        }
    }
}

void tapRowsBaseline(const double* in, long inStride, double* out, long outStride, long nRows, long width,
                     const StampTap* taps, long nTaps) {
    tapRowsImpl(in, inStride, out, outStride, nRows, width, taps, nTaps);
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
// AVX2 only, not FMA: the compiler must not fuse the products into the sums.
__attribute__((target("avx2"))) void tapRowsAvx2(const double* in, long inStride, double* out, long outStride,
                                                long nRows, long width, const StampTap* taps, long nTaps) {
    tapRowsImpl(in, inStride, out, outStride, nRows, width, taps, nTaps);
}

bool haveAvx2() { return simdLevel() >= SimdLevel::AVX2; }
#endif

void tapRows(const double* in, long inStride, double* out, long outStride, long nRows, long width,
             const std::vector<StampTap>& taps) {
    const long n = static_cast<long>(taps.size());
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if (haveAvx2()) {
        tapRowsAvx2(in, inStride, out, outStride, nRows, width, taps.data(), n);
        return;
    }
#endif
    tapRowsBaseline(in, inStride, out, outStride, nRows, width, taps.data(), n);
}

// The non-zero pixels of a kernel image, row-major, as taps of a direct convolution on an
// image of row stride `stride`: output (y, x) reads input (y − j + cy, x − i + cx).
std::vector<StampTap> directTaps(const ImageD& k, long stride) {
    const long cx = (k.cols() - 1) / 2, cy = (k.rows() - 1) / 2;
    std::vector<StampTap> taps;
    taps.reserve(static_cast<std::size_t>(k.size()));
    for (long j = 0; j < k.rows(); ++j) {
        for (long i = 0; i < k.cols(); ++i) {
            if (k(j, i) != 0.0) taps.push_back({(cy - j) * stride + (cx - i), k(j, i)});
        }
    }
    return taps;
}

// The non-zero entries of a 1-D factor as taps along a line of stride `stride`: output u
// reads input u − i + c.
std::vector<StampTap> factorTaps(const Eigen::VectorXd& f, long stride) {
    const long c = (f.size() - 1) / 2;
    std::vector<StampTap> taps;
    for (long i = 0; i < f.size(); ++i) {
        if (f[i] != 0.0) taps.push_back({(c - i) * stride, f[i]});
    }
    return taps;
}

bool sameValues(const Eigen::VectorXd& a, const Eigen::VectorXd& b) { return a.size() == b.size() && a == b; }

}  // namespace

void convolveStampPlane(const ImageD& in, const ImageD& kernelImage, ImageD& out) {
    if (out.rows() != in.rows() || out.cols() != in.cols()) {
        throw InvalidInputError("convolveStampPlane: output shape differs from input shape");
    }
    if (kernelImage.rows() % 2 == 0 || kernelImage.cols() % 2 == 0) {
        throw InvalidInputError("convolveStampPlane: kernel dimensions must be odd");
    }
    if (in.cols() < kernelImage.cols() || in.rows() < kernelImage.rows()) {
        throw InvalidInputError("convolveStampPlane: stamp of " + std::to_string(in.cols()) + "x" +
                                std::to_string(in.rows()) + " pixels is smaller than the " +
                                std::to_string(kernelImage.cols()) + "x" + std::to_string(kernelImage.rows()) +
                                " kernel");
    }
    const long stride = in.cols();
    const Box2I g = goodBox(in.cols(), in.rows(), static_cast<int>(kernelImage.cols()),
                            static_cast<int>(kernelImage.rows()));
    const long origin = g.minY * stride + g.minX;
    tapRows(in.data() + origin, stride, out.data() + origin, stride, g.getHeight(), g.getWidth(),
            directTaps(kernelImage, stride));
}

Eigen::MatrixXd convolveBasisOnStamp(const ImageD& image, const KernelList& basis) {
    checkBasisList(basis, "convolveBasisOnStamp");
    const FixedKernel& k0 = basis.front();
    const Box2I g = goodBox(image.cols(), image.rows(), k0.getWidth(), k0.getHeight());
    const long npix = g.isEmpty() ? 0 : static_cast<long>(g.getWidth()) * g.getHeight();
    Eigen::MatrixXd columns(npix, static_cast<long>(basis.size()));
    convolveBasisOnStamp(image, basis, columns);
    return columns;
}

void convolveBasisOnStamp(const ImageD& image, const KernelList& basis, Eigen::Ref<Eigen::MatrixXd> out) {
    checkBasisList(basis, "convolveBasisOnStamp");
    const FixedKernel& k0 = basis.front();
    if (image.cols() < k0.getWidth() || image.rows() < k0.getHeight()) {
        throw InvalidInputError("convolveBasisOnStamp: stamp of " + std::to_string(image.cols()) + "x" +
                                std::to_string(image.rows()) + " pixels is smaller than the " +
                                std::to_string(k0.getWidth()) + "x" + std::to_string(k0.getHeight()) + " kernel");
    }
    const Box2I g = goodBox(image.cols(), image.rows(), k0.getWidth(), k0.getHeight());
    const long gnx = g.getWidth(), gny = g.getHeight(), npix = gnx * gny, ny = image.rows();
    if (out.rows() != npix || out.cols() != static_cast<long>(basis.size())) {
        throw InvalidInputError("convolveBasisOnStamp: output is " + std::to_string(out.rows()) + "x" +
                                std::to_string(out.cols()) + ", expected " + std::to_string(npix) + "x" +
                                std::to_string(basis.size()));
    }
    out.setZero();

    // Distinct x and y factors (by value); each x factor passed once over every row
    // (ny × gnx), each (x factor, y factor) pair's y pass once (gny × gnx), when first needed.
    // The images live in per-thread scratch kept between calls: a few hundred KB allocated and
    // freed per candidate made the allocator return pages to the system and fault them in again.
    std::vector<const Eigen::VectorXd*> xFactors, yFactors;
    auto indexOf = [](std::vector<const Eigen::VectorXd*>& list, const Eigen::VectorXd& f) {
        for (std::size_t i = 0; i < list.size(); ++i) {
            if (sameValues(*list[i], f)) return static_cast<long>(i);
        }
        list.push_back(&f);
        return static_cast<long>(list.size() - 1);
    };
    for (const auto& kernel : basis) {
        for (const auto& t : kernel.getTerms()) {
            indexOf(xFactors, t.kx);
            indexOf(yFactors, t.ky);
        }
    }
    const long nX = static_cast<long>(xFactors.size()), nY = static_cast<long>(yFactors.size());
    struct Scratch {
        std::vector<double> xImages;  // nX × (ny × gnx)
        std::vector<double> pairs;    // made pairs × npix, in the order made
        std::vector<double> direct;   // npix
        std::vector<long> pairSlot;   // [xi · nY + yi]: index into pairs, or −1
        std::vector<char> xDone;
    };
    thread_local Scratch scratch;
    scratch.xImages.resize(static_cast<std::size_t>(nX * ny * gnx));
    scratch.xDone.assign(static_cast<std::size_t>(nX), 0);
    scratch.pairSlot.assign(static_cast<std::size_t>(nX * nY), -1);
    scratch.pairs.clear();
    auto pairOf = [&](const Eigen::VectorXd& kx, const Eigen::VectorXd& ky) -> const double* {
        const long xi = indexOf(xFactors, kx), yi = indexOf(yFactors, ky);
        double* tmp = scratch.xImages.data() + xi * ny * gnx;
        if (!scratch.xDone[xi]) {
            tapRows(image.data() + g.minX, image.cols(), tmp, gnx, ny, gnx, factorTaps(kx, 1));
            scratch.xDone[xi] = 1;
        }
        long& slot = scratch.pairSlot[xi * nY + yi];
        if (slot < 0) {
            slot = static_cast<long>(scratch.pairs.size()) / npix;
            scratch.pairs.resize(scratch.pairs.size() + npix);
            tapRows(tmp + g.minY * gnx, gnx, scratch.pairs.data() + slot * npix, gnx, gny, gnx,
                    factorTaps(ky, gnx));
        }
        return scratch.pairs.data() + slot * npix;
    };

    for (std::size_t k = 0; k < basis.size(); ++k) {
        const FixedKernel& kernel = basis[k];
        if (kernel.isSeparable()) {
            for (const auto& t : kernel.getTerms()) {
                const double* r = pairOf(t.kx, t.ky);
                out.col(k) += t.coef * Eigen::Map<const Eigen::VectorXd>(r, npix);
            }
        } else {
            scratch.direct.assign(static_cast<std::size_t>(npix), 0.0);
            tapRows(image.data() + g.minY * image.cols() + g.minX, image.cols(), scratch.direct.data(), gnx, gny,
                    gnx, directTaps(kernel.getImage(), image.cols()));
            // convolveDirect scales its sums by 1.0, which changes no bits.
            out.col(k) = Eigen::Map<const Eigen::VectorXd>(scratch.direct.data(), npix);
        }
    }
}

}  // namespace psfmatch
