// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/basis.h"

#include <cfloat>
#include <cmath>
#include <string>

#include "psfmatch/errors.h"

namespace psfmatch {

KernelList makeAlardLuptonBasisList(int halfWidth, int nGauss, const std::vector<double>& sigmas,
                                    const std::vector<int>& degrees) {
    if (halfWidth < 1) {
        throw InvalidInputError("makeAlardLuptonBasisList: halfWidth must be >= 1, got " + std::to_string(halfWidth));
    }
    if (nGauss < 1 || static_cast<int>(sigmas.size()) != nGauss || static_cast<int>(degrees.size()) != nGauss) {
        throw InvalidInputError("makeAlardLuptonBasisList: nGauss = " + std::to_string(nGauss) + " but " +
                                std::to_string(sigmas.size()) + " sigmas and " + std::to_string(degrees.size()) +
                                " degrees were given");
    }
    const int width = 2 * halfWidth + 1;
    Eigen::VectorXd u(width);
    for (int i = 0; i < width; ++i) u[i] = i - halfWidth;
    KernelList raw;
    for (int g = 0; g < nGauss; ++g) {
        const double sigma = sigmas[g];
        if (!(sigma > 0.0) || !std::isfinite(sigma)) {
            throw InvalidInputError("makeAlardLuptonBasisList: sigma " + std::to_string(g) + " must be > 0");
        }
        if (degrees[g] < 0) {
            throw InvalidInputError("makeAlardLuptonBasisList: degree " + std::to_string(g) + " must be >= 0");
        }
        const Eigen::VectorXd gauss = (-u.array().square() / (2.0 * sigma * sigma)).exp().matrix();
        // G(u, v) = g(u) g(v) / (Σg)², so the 2-D Gaussian has unit sum.
        const double norm = 1.0 / (gauss.sum() * gauss.sum());
        const Eigen::ArrayXd scaled = u.array() / halfWidth;
        for (int n = 0; n <= degrees[g]; ++n) {
            for (int q = 0; q <= n; ++q) {
                const int p = n - q;
                SeparableTerm term;
                term.coef = norm;
                term.kx = (gauss.array() * scaled.pow(p)).matrix();
                term.ky = (gauss.array() * scaled.pow(q)).matrix();
                raw.emplace_back(std::vector<SeparableTerm>{term});
            }
        }
    }
    return renormalizeKernelList(raw);
}

KernelList renormalizeKernelList(const KernelList& kernels) {
    KernelList out;
    if (kernels.empty()) return out;
    const double sum0 = kernels.front().getSum();
    if (sum0 == 0.0) throw InvalidInputError("renormalizeKernelList: the first kernel sums to zero");
    const FixedKernel b0 = kernels.front().scaled(1.0 / sum0);
    out.push_back(b0);
    for (std::size_t i = 1; i < kernels.size(); ++i) {
        FixedKernel k = kernels[i];
        const double s = k.getSum();
        // FLT_EPSILON on purpose: the reference tests sums in single precision.
        if (std::fabs(s) > FLT_EPSILON) k = k.combined(1.0 / s, b0, -1.0);
        const double norm = std::sqrt(k.getImage().square().sum());
        if (norm == 0.0) throw InvalidInputError("renormalizeKernelList: kernel " + std::to_string(i) + " is zero");
        out.push_back(k.scaled(1.0 / norm));
    }
    return out;
}

KernelList makeDeltaFunctionBasisList(int width, int height) {
    if (width < 1 || height < 1) {
        throw InvalidInputError("makeDeltaFunctionBasisList: sizes must be positive, got " + std::to_string(width) +
                                "x" + std::to_string(height));
    }
    KernelList out;
    for (int row = 0; row < height; ++row) {
        for (int col = 0; col < width; ++col) {
            SeparableTerm t;
            t.kx = Eigen::VectorXd::Unit(width, col);
            t.ky = Eigen::VectorXd::Unit(height, row);
            out.emplace_back(std::vector<SeparableTerm>{t});
        }
    }
    return out;
}

Eigen::MatrixXd makeRegularizationMatrix(int width, int height, RegularizationType type, int stencil,
                                         const std::vector<int>& orders, double borderPenalty,
                                         bool fitForBackground) {
    if (width < 1 || height < 1) throw InvalidInputError("makeRegularizationMatrix: sizes must be positive");
    if (!(borderPenalty >= 0.0)) {
        throw InvalidInputError("makeRegularizationMatrix: borderPenalty must be >= 0, got " +
                                std::to_string(borderPenalty));
    }
    const int n = width * height;
    const int nAll = n + (fitForBackground ? 1 : 0);
    Eigen::MatrixXd b = Eigen::MatrixXd::Zero(nAll, nAll);
    if (type == RegularizationType::CENTRAL_DIFFERENCE) {
        if (stencil != 5 && stencil != 9) {
            throw InvalidInputError("makeRegularizationMatrix: central stencil must be 5 or 9, got " +
                                    std::to_string(stencil));
        }
        // 3×3 Laplacian weights, indexed [dy + 1][dx + 1].
        double w[3][3];
        if (stencil == 5) {
            const double w5[3][3] = {{0, 1, 0}, {1, -4, 1}, {0, 1, 0}};
            std::copy(&w5[0][0], &w5[0][0] + 9, &w[0][0]);
        } else {
            const double c = 1.0 / 6.0, e = 4.0 / 6.0, m = -20.0 / 6.0;
            const double w9[3][3] = {{c, e, c}, {e, m, e}, {c, e, c}};
            std::copy(&w9[0][0], &w9[0][0] + 9, &w[0][0]);
        }
        for (int y = 0; y < height; ++y) {
            for (int x = 0; x < width; ++x) {
                const int i = y * width + x;
                if (x == 0 || y == 0 || x == width - 1 || y == height - 1) {
                    b(i, i) = borderPenalty;
                    continue;
                }
                for (int dy = -1; dy <= 1; ++dy) {
                    for (int dx = -1; dx <= 1; ++dx) b(i, i + dx + dy * width) = w[dy + 1][dx + 1];
                }
            }
        }
    } else {
        for (int o : orders) {
            if (o < 1 || o > 3) {
                throw InvalidInputError("makeRegularizationMatrix: forward orders must be in 1..3, got " +
                                        std::to_string(o));
            }
        }
        const std::vector<std::vector<double>> coef = {{borderPenalty}, {-1, 1}, {-1, 2, -1}, {-1, 3, -3, 1}};
        for (int o : orders) {
            for (int y = 0; y < height; ++y) {
                for (int x = 0; x < width; ++x) {
                    const int i = y * width + x;
                    const int ox = std::min(width - x - 1, o);
                    for (int j = 0; j <= ox; ++j) b(i, i + j) += coef[ox][j];
                    const int oy = std::min(height - y - 1, o);
                    for (int j = 0; j <= oy; ++j) b(i, i + j * width) += coef[oy][j];
                }
            }
        }
    }
    return b.transpose() * b;
}

}  // namespace psfmatch
