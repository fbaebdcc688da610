// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/convolve.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "psfmatch/convolve_rows.h"
#include "psfmatch/errors.h"
#include "psfmatch/parallel.h"
#include "psfmatch/simd.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define PSFMATCH_X86_DISPATCH 1
#define PSFMATCH_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define PSFMATCH_ALWAYS_INLINE inline
#endif

namespace psfmatch {

// ---------------------------------------------------------------------------------------------
// Row kernels (convolve_rows.h)
// ---------------------------------------------------------------------------------------------

namespace detail {

namespace {

#if defined(__GNUC__)
/// K vectors of VB bytes at a time, their partial sums held in registers across all taps: each
/// tap then costs one load and one multiply-add per vector, where accumulating into memory costs
/// a load, a multiply-add and a store. GCC/Clang vector extensions keep this one source for every
/// instruction set: VB is the register width of the variant that instantiates it. What is left
/// after the blocks is done in blocks of four, two and one vector (several independent sums keep
/// the multiply-add pipes busy), then one value at a time, with the same per-value sequence of
/// operations, so a value never depends on where a row or chunk starts.
template <typename T, int VB, int K>
PSFMATCH_ALWAYS_INLINE void verticalRows(const T* top, long stride, const long* off, const T* w, int nt, long n,
                                         T* out) {
    constexpr int L = VB / static_cast<int>(sizeof(T));
    typedef T V __attribute__((vector_size(VB)));
    long x = 0;
    auto block = [&](auto kTag) {
        constexpr int KK = decltype(kTag)::value;
        for (; x + KK * L <= n; x += KK * L) {
            V acc[KK];
            for (int k = 0; k < KK; ++k) acc[k] = V{};
            for (int t = 0; t < nt; ++t) {
                const T* s = top - off[t] * stride + x;
                const T wt = w[t];
                for (int k = 0; k < KK; ++k) {
                    V v;
                    std::memcpy(&v, s + k * L, sizeof(V));
                    acc[k] += wt * v;
                }
            }
            std::memcpy(out + x, acc, sizeof(acc));
        }
    };
    block(std::integral_constant<int, K>());
    block(std::integral_constant<int, (K > 4 ? 4 : K)>());
    block(std::integral_constant<int, 2>());
    block(std::integral_constant<int, 1>());
    for (; x < n; ++x) {
        T a = T(0);
        for (int t = 0; t < nt; ++t) a += w[t] * top[x - off[t] * stride];
        out[x] = a;
    }
}

template <typename T, int VB, int K>
PSFMATCH_ALWAYS_INLINE void horizontalRows(const T* src, const long* off, const T* w, int nt, const T* poly, long ps,
                                           const T* gamma, int np, long n, T* acc) {
    constexpr int L = VB / static_cast<int>(sizeof(T));
    typedef T V __attribute__((vector_size(VB)));
    long x = 0;
    auto block = [&](auto kTag) {
        constexpr int KK = decltype(kTag)::value;
        for (; x + KK * L <= n; x += KK * L) {
            V t[KK];
            for (int k = 0; k < KK; ++k) t[k] = V{};
            for (int j = 0; j < nt; ++j) {
                const T* s = src + x - off[j];
                const T wj = w[j];
                for (int k = 0; k < KK; ++k) {
                    V v;
                    std::memcpy(&v, s + k * L, sizeof(V));
                    t[k] += wj * v;
                }
            }
            V a[KK];
            std::memcpy(a, acc + x, sizeof(a));
            if (np == 0) {
                for (int k = 0; k < KK; ++k) a[k] += t[k];
            } else {
                // The per-pixel coefficient Σ_p γ_p · poly_p(x): the spatial variation along a row.
                V c[KK];
                for (int k = 0; k < KK; ++k) {
                    std::memcpy(&c[k], poly + x + k * L, sizeof(V));
                    c[k] *= gamma[0];
                }
                for (int p = 1; p < np; ++p) {
                    const T* q = poly + p * ps + x;
                    const T gp = gamma[p];
                    for (int k = 0; k < KK; ++k) {
                        V v;
                        std::memcpy(&v, q + k * L, sizeof(V));
                        c[k] += gp * v;
                    }
                }
                for (int k = 0; k < KK; ++k) a[k] += c[k] * t[k];
            }
            std::memcpy(acc + x, a, sizeof(a));
        }
    };
    block(std::integral_constant<int, K>());
    block(std::integral_constant<int, (K > 4 ? 4 : K)>());
    block(std::integral_constant<int, 2>());
    block(std::integral_constant<int, 1>());
    for (; x < n; ++x) {
        T t = T(0);
        for (int j = 0; j < nt; ++j) t += w[j] * src[x - off[j]];
        if (np == 0) {
            acc[x] += t;
            continue;
        }
        T c = gamma[0] * poly[x];
        for (int p = 1; p < np; ++p) c += gamma[p] * poly[p * ps + x];
        acc[x] += c * t;
    }
}
#else
// Plain loops for compilers without GCC vector extensions; same per-value arithmetic.
template <typename T, int VB, int K>
void verticalRows(const T* top, long stride, const long* off, const T* w, int nt, long n, T* out) {
    for (long x = 0; x < n; ++x) {
        T a = T(0);
        for (int t = 0; t < nt; ++t) a += w[t] * top[x - off[t] * stride];
        out[x] = a;
    }
}
template <typename T, int VB, int K>
void horizontalRows(const T* src, const long* off, const T* w, int nt, const T* poly, long ps, const T* gamma, int np,
                    long n, T* acc) {
    for (long x = 0; x < n; ++x) {
        T t = T(0);
        for (int j = 0; j < nt; ++j) t += w[j] * src[x - off[j]];
        if (np == 0) {
            acc[x] += t;
            continue;
        }
        T c = gamma[0] * poly[x];
        for (int p = 1; p < np; ++p) c += gamma[p] * poly[p * ps + x];
        acc[x] += c * t;
    }
}
#endif

struct RowKernels {
    void (*vf)(const float*, long, const long*, const float*, int, long, float*);
    void (*vd)(const double*, long, const long*, const double*, int, long, double*);
    void (*hf)(const float*, const long*, const float*, int, const float*, long, const float*, int, long, float*);
    void (*hd)(const double*, const long*, const double*, int, const double*, long, const double*, int, long,
               double*);
};

// One set of row kernels per instruction set: VB is its vector width in bytes, K the vectors per
// block (8 accumulators hide the multiply-add latency on two pipes; SSE2 has 16 registers only).
#define PSFMATCH_ROW_KERNELS(NAME, ATTR, VB, K)                                                                     \
    ATTR void NAME##Vf(const float* top, long stride, const long* off, const float* w, int nt, long n, float* out) { \
        verticalRows<float, VB, K>(top, stride, off, w, nt, n, out);                                               \
    }                                                                                                              \
    ATTR void NAME##Vd(const double* top, long stride, const long* off, const double* w, int nt, long n,           \
                       double* out) {                                                                              \
        verticalRows<double, VB, K>(top, stride, off, w, nt, n, out);                                              \
    }                                                                                                              \
    ATTR void NAME##Hf(const float* src, const long* off, const float* w, int nt, const float* poly, long ps,      \
                       const float* gamma, int np, long n, float* acc) {                                          \
        horizontalRows<float, VB, K>(src, off, w, nt, poly, ps, gamma, np, n, acc);                                \
    }                                                                                                              \
    ATTR void NAME##Hd(const double* src, const long* off, const double* w, int nt, const double* poly, long ps,   \
                       const double* gamma, int np, long n, double* acc) {                                        \
        horizontalRows<double, VB, K>(src, off, w, nt, poly, ps, gamma, np, n, acc);                               \
    }

PSFMATCH_ROW_KERNELS(baseline, , 16, 4)
#ifdef PSFMATCH_X86_DISPATCH
PSFMATCH_ROW_KERNELS(avx2, __attribute__((target("avx2,fma"))), 32, 8)
PSFMATCH_ROW_KERNELS(avx512, __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))), 64, 8)
#endif
#undef PSFMATCH_ROW_KERNELS

RowKernels selectRowKernels() {
#ifdef PSFMATCH_X86_DISPATCH
    switch (simdLevel()) {
        case SimdLevel::AVX512:
            return {avx512Vf, avx512Vd, avx512Hf, avx512Hd};
        case SimdLevel::AVX2:
            return {avx2Vf, avx2Vd, avx2Hf, avx2Hd};
        case SimdLevel::BASELINE:
            break;
    }
#endif
    return {baselineVf, baselineVd, baselineHf, baselineHd};
}

const RowKernels& rowKernels() {
    static const RowKernels kernels = selectRowKernels();
    return kernels;
}

}  // namespace

void verticalPass(const float* top, long stride, const Taps<float>& taps, long n, float* out) {
    rowKernels().vf(top, stride, taps.offset.data(), taps.weight.data(), taps.size(), n, out);
}
void verticalPass(const double* top, long stride, const Taps<double>& taps, long n, double* out) {
    rowKernels().vd(top, stride, taps.offset.data(), taps.weight.data(), taps.size(), n, out);
}
void horizontalAccumulate(const float* src, const Taps<float>& taps, const float* poly, long polyStride,
                          const float* gamma, int np, long n, float* acc) {
    rowKernels().hf(src, taps.offset.data(), taps.weight.data(), taps.size(), poly, polyStride, gamma, np, n, acc);
}
void horizontalAccumulate(const double* src, const Taps<double>& taps, const double* poly, long polyStride,
                          const double* gamma, int np, long n, double* acc) {
    rowKernels().hd(src, taps.offset.data(), taps.weight.data(), taps.size(), poly, polyStride, gamma, np, n, acc);
}

}  // namespace detail

namespace {

constexpr long kRowsPerBlock = 32;
/// Output columns per chunk of a row: the pass buffers (a few × 8 KiB) then stay in L1.
constexpr long kChunk = 1024;

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

/// Blocks of output rows, each in column chunks: the chunk's input rows are copied once into a
/// double buffer (so float pixels are widened once, not once per tap), then for every output
/// row and term a vertical pass over kh buffered rows into a row that stays in L1, and a
/// horizontal pass that adds coef · kx ⊗ that row into the output row. The work is exactly
/// Σ_terms (|kx| + |ky|) multiply-adds per pixel plus kw − 1 columns per chunk. Sums run in
/// double; every pixel's arithmetic is fixed by its position alone, so the thread count
/// cannot change a result.
template <typename Tin, typename Tout>
void convolveSeparable(const ImageView<const Tin>& in, const ImageView<Tout>& out, const FixedKernel& kernel,
                       double scale, int nThreads) {
    const Box2I g = goodBox(in.nx, in.ny, kernel.getWidth(), kernel.getHeight());
    const int cx = kernel.getCtrX(), cy = kernel.getCtrY(), kw = kernel.getWidth(), kh = kernel.getHeight();
    const long gnx = g.getWidth(), gny = g.getHeight();
    struct Prepared {
        detail::Taps<double> x, y;
    };
    std::vector<Prepared> terms;
    for (const auto& t : kernel.getTerms()) {
        Prepared p;
        for (const Tap& tap : nonZeroTaps(t.kx)) {
            p.x.offset.push_back(tap.offset);
            p.x.weight.push_back(t.coef * tap.weight);  // the coefficient rides on the x taps
        }
        for (const Tap& tap : nonZeroTaps(t.ky)) {
            p.y.offset.push_back(tap.offset);
            p.y.weight.push_back(tap.weight);
        }
        if (p.x.size() > 0 && p.y.size() > 0) terms.push_back(std::move(p));
    }
    const long chunk = std::min(gnx, kChunk);
    const long nBlocks = (gny + kRowsPerBlock - 1) / kRowsPerBlock;
    parallelFor(nBlocks, nThreads, [&](long b0, long b1) {
        const long width = chunk + kw - 1;
        std::vector<double> rows((kRowsPerBlock + kh - 1) * width), ybuf(width), acc(chunk);
        for (long b = b0; b < b1; ++b) {
            const long y0 = g.minY + b * kRowsPerBlock;
            const long y1 = std::min<long>(y0 + kRowsPerBlock, g.maxY + 1);
            const long r0 = y0 - (kh - 1 - cy), r1 = y1 + cy;  // input rows of the block
            for (long xa = 0; xa < gnx; xa += chunk) {
                const long w = std::min(chunk, gnx - xa);
                // Column c0 + k of the input is buffer column k; output column g.minX + xa + x
                // needs input columns down to g.minX + xa + x − (kw − 1 − cx), i.e. ybuf[x + kw − 1 − i].
                const long c0 = g.minX + xa - (kw - 1 - cx);
                for (long r = r0; r < r1; ++r) {
                    const Tin* src = in.row(r) + c0;
                    double* dst = rows.data() + (r - r0) * width;
                    for (long k = 0; k < w + kw - 1; ++k) dst[k] = static_cast<double>(src[k]);
                }
                for (long y = y0; y < y1; ++y) {
                    const double* top = rows.data() + (y + cy - r0) * width;
                    std::fill(acc.begin(), acc.begin() + w, 0.0);
                    for (const Prepared& p : terms) {
                        detail::verticalPass(top, width, p.y, w + kw - 1, ybuf.data());
                        detail::horizontalAccumulate(ybuf.data() + kw - 1, p.x, nullptr, 0, nullptr, 0, w,
                                                     acc.data());
                    }
                    Tout* o = out.row(y) + g.minX + xa;
                    for (long x = 0; x < w; ++x) o[x] = static_cast<Tout>(scale * acc[x]);
                }
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
        // OR is idempotent, so a window of width W is the OR of two overlapping windows of the
        // largest power of two P ≤ W, and windows of width 2s are built from those of width s
        // in place: log₂P + 1 ORs per pixel and direction instead of W. Horizontal windows of
        // every needed input row first, then vertical ones, block by block.
        const long nBlocks = (g.getHeight() + kRowsPerBlock - 1) / kRowsPerBlock;
        const long kw = k.cols(), kh = k.rows();
        long pw = 1, ph = 1;
        while (2 * pw <= kw) pw *= 2;
        while (2 * ph <= kh) ph *= 2;
        const long c0 = g.minX - (kw - 1 - cx);  // first input column of output column g.minX
        const long len = gnx + kw - 1;
        parallelFor(nBlocks, nThreads, [&](long b0, long b1) {
            std::vector<std::int32_t> row(len), hor;
            for (long b = b0; b < b1; ++b) {
                const long y0 = g.minY + b * kRowsPerBlock;
                const long y1 = std::min<long>(y0 + kRowsPerBlock, g.maxY + 1);
                const long rr0 = y0 - (kh - 1 - cy), rr1 = y1 + cy;
                hor.resize((rr1 - rr0) * gnx);
                for (long r = rr0; r < rr1; ++r) {
                    std::copy_n(in.row(r) + c0, len, row.data());
                    for (long step = 1; step < pw; step *= 2) {
                        for (long x = 0; x + step < len; ++x) row[x] |= row[x + step];
                    }
                    std::int32_t* h = hor.data() + (r - rr0) * gnx;
                    for (long x = 0; x < gnx; ++x) h[x] = row[x] | row[x + kw - pw];
                }
                const long nr = rr1 - rr0;
                for (long step = 1; step < ph; step *= 2) {
                    for (long r = 0; r + step < nr; ++r) {
                        std::int32_t* h = hor.data() + r * gnx;
                        const std::int32_t* h2 = h + step * gnx;
                        for (long x = 0; x < gnx; ++x) h[x] |= h2[x];
                    }
                }
                for (long y = y0; y < y1; ++y) {
                    // Output row y needs input rows y − (kh − 1 − cy) … y + cy: hor rows y − y0 on.
                    const std::int32_t* h = hor.data() + (y - y0) * gnx;
                    const std::int32_t* h2 = h + (kh - ph) * gnx;
                    std::int32_t* o = out.row(y) + g.minX;
                    for (long x = 0; x < gnx; ++x) o[x] = h[x] | h2[x];
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
void fillConvolutionBorder(const MaskedImageView<const T>& in, const MaskedImageView<T>& out, int kw, int kh,
                           const ConvolutionControl& control) {
    const Box2I g = goodBox(in.image.nx, in.image.ny, kw, kh);
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

    fillConvolutionBorder(in, out, kernel.getWidth(), kernel.getHeight(), control);
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
template void fillConvolutionBorder<float>(const MaskedImageView<const float>&, const MaskedImageView<float>&, int,
                                           int, const ConvolutionControl&);
template void fillConvolutionBorder<double>(const MaskedImageView<const double>&, const MaskedImageView<double>&,
                                            int, int, const ConvolutionControl&);
template void convolveMaskedImage<float>(const MaskedImageView<const float>&, const MaskedImageView<float>&,
                                         const FixedKernel&, const ConvolutionControl&);
template void convolveMaskedImage<double>(const MaskedImageView<const double>&, const MaskedImageView<double>&,
                                          const FixedKernel&, const ConvolutionControl&);

}  // namespace psfmatch
