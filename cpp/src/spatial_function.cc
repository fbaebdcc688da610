// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/spatial_function.h"

#include <string>

#include "psfmatch/errors.h"

namespace psfmatch {

SpatialFunction::SpatialFunction(SpatialModelType type, int order, const Box2I& box)
        : _type(type), _order(order), _box(box) {
    if (order < 0) throw InvalidInputError("SpatialFunction: order must be >= 0, got " + std::to_string(order));
    if (box.isEmpty()) throw InvalidInputError("SpatialFunction: empty bounding box");
}

Eigen::VectorXd SpatialFunction::basis1d(double t) const {
    Eigen::VectorXd v(_order + 1);
    v[0] = 1.0;
    if (_order >= 1) v[1] = t;
    for (int n = 2; n <= _order; ++n) {
        v[n] = _type == SpatialModelType::CHEBYSHEV1 ? 2.0 * t * v[n - 1] - v[n - 2] : t * v[n - 1];
    }
    return v;
}

// Chebyshev arguments: the pixel-edge extent [min - 0.5, max + 0.5] maps onto [-1, 1].
Eigen::VectorXd SpatialFunction::xFactors(double x) const {
    if (_type != SpatialModelType::CHEBYSHEV1) return basis1d(x);
    const double x0 = _box.minX - 0.5, x1 = _box.maxX + 0.5;
    return basis1d((2.0 * x - (x0 + x1)) / (x1 - x0));
}

Eigen::VectorXd SpatialFunction::yFactors(double y) const {
    if (_type != SpatialModelType::CHEBYSHEV1) return basis1d(y);
    const double y0 = _box.minY - 0.5, y1 = _box.maxY + 0.5;
    return basis1d((2.0 * y - (y0 + y1)) / (y1 - y0));
}

Eigen::VectorXd SpatialFunction::terms(double x, double y) const {
    const Eigen::VectorXd bx = xFactors(x), by = yFactors(y);
    Eigen::VectorXd out(getNParameters());
    int k = 0;
    for (int n = 0; n <= _order; ++n) {
        for (int q = 0; q <= n; ++q) out[k++] = bx[n - q] * by[q];
    }
    return out;
}

double SpatialFunction::evaluate(double x, double y, const Eigen::VectorXd& params) const {
    // Eigen does not check sizes in a release build: a short vector would be read past its end.
    if (params.size() != getNParameters()) {
        throw InvalidInputError("SpatialFunction: " + std::to_string(params.size()) +
                                " parameters given, the function of order " + std::to_string(_order) + " has " +
                                std::to_string(getNParameters()));
    }
    return terms(x, y).dot(params);
}

LinearCombinationKernel::LinearCombinationKernel(KernelList basis, SpatialFunction function, Eigen::MatrixXd params)
        : _basis(std::move(basis)), _function(std::move(function)), _params(std::move(params)) {
    checkBasisList(_basis, "LinearCombinationKernel");
    if (_params.rows() != static_cast<long>(_basis.size()) || _params.cols() != _function.getNParameters()) {
        throw InvalidInputError("LinearCombinationKernel: parameters are " + std::to_string(_params.rows()) + "x" +
                                std::to_string(_params.cols()) + ", expected " + std::to_string(_basis.size()) +
                                "x" + std::to_string(_function.getNParameters()));
    }
}

Eigen::VectorXd LinearCombinationKernel::getKernelParameters(double x, double y) const {
    return _params * _function.terms(x, y);
}

FixedKernel LinearCombinationKernel::computeKernel(double x, double y) const {
    return linearCombination(_basis, getKernelParameters(x, y));
}

SpatialBackground::SpatialBackground(SpatialFunction function, Eigen::VectorXd params)
        : _function(std::move(function)), _params(std::move(params)) {
    if (_params.size() != _function.getNParameters()) {
        throw InvalidInputError("SpatialBackground: " + std::to_string(_params.size()) +
                                " parameters given, the spatial function of order " +
                                std::to_string(_function.getOrder()) + " has " +
                                std::to_string(_function.getNParameters()));
    }
}

Eigen::MatrixXd SpatialBackground::columnFactors(int x0, long width) const {
    // b(x, y) = Σ_q yFactor_q(y) · c_q(x): the factors of each column are computed once, not
    // once per pixel.
    const int order = _function.getOrder();
    Eigen::MatrixXd c = Eigen::MatrixXd::Zero(order + 1, width);
    for (long i = 0; i < width; ++i) {
        const Eigen::VectorXd bx = _function.xFactors(static_cast<double>(x0 + i));
        int k = 0;
        for (int n = 0; n <= order; ++n) {
            for (int q = 0; q <= n; ++q) c(q, i) += _params[k++] * bx[n - q];
        }
    }
    return c;
}

void SpatialBackground::evaluateRow(double y, const Eigen::MatrixXd& c, double* out) const {
    Eigen::Map<Eigen::RowVectorXd>(out, c.cols()).noalias() = _function.yFactors(y).transpose() * c;
}

ImageD SpatialBackground::evaluate(const Box2I& box) const {
    const Eigen::MatrixXd c = columnFactors(box.minX, box.getWidth());
    ImageD out(box.getHeight(), box.getWidth());
    for (long j = 0; j < out.rows(); ++j) evaluateRow(static_cast<double>(box.minY + j), c, out.row(j).data());
    return out;
}

}  // namespace psfmatch
