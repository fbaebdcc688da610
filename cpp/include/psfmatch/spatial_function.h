// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_SPATIAL_FUNCTION_H
#define PSFMATCH_SPATIAL_FUNCTION_H

#include <Eigen/Core>

#include "psfmatch/control.h"
#include "psfmatch/image.h"
#include "psfmatch/kernel.h"

namespace psfmatch {

/// A 2-D function family of order N with (N+1)(N+2)/2 terms in the order 1, x, y, x², xy, y², …
/// (docs/algorithm.md §5.1): raw monomials xᵖyᵠ of parent coordinates (POLYNOMIAL) or products of
/// Chebyshev polynomials T_p(x')T_q(y') with x', y' mapped from the pixel-edge extent of `box`
/// to [−1, 1] (CHEBYSHEV1).
class SpatialFunction {
public:
    SpatialFunction(SpatialModelType type, int order, const Box2I& box);

    SpatialModelType getType() const { return _type; }
    int getOrder() const { return _order; }
    const Box2I& getBBox() const { return _box; }
    int getNParameters() const { return (_order + 1) * (_order + 2) / 2; }
    /// The value of every term at (x, y).
    Eigen::VectorXd terms(double x, double y) const;
    /// Σ_k params[k] · term_k(x, y). Throws InvalidInputError unless params has one value per term.
    double evaluate(double x, double y, const Eigen::VectorXd& params) const;
    /// The 1-D factors along x: term (p, q) = xFactors(x)[p] · yFactors(y)[q].
    Eigen::VectorXd xFactors(double x) const;
    Eigen::VectorXd yFactors(double y) const;

private:
    Eigen::VectorXd basis1d(double t) const;
    SpatialModelType _type;
    int _order;
    Box2I _box;
};

/// A spatially varying kernel K(x, y) = Σ_m a_m(x, y) B_m with a_m(x, y) = Σ_k α_mk f_k(x, y).
/// With order 0 it is spatially constant.
class LinearCombinationKernel {
public:
    /// `params` is nBasis × nSpatialParameters (row m holds α_m·).
    LinearCombinationKernel(KernelList basis, SpatialFunction function, Eigen::MatrixXd params);

    const KernelList& getBasisList() const { return _basis; }
    const SpatialFunction& getSpatialFunction() const { return _function; }
    const Eigen::MatrixXd& getSpatialParameters() const { return _params; }
    int getNBasisKernels() const { return static_cast<int>(_basis.size()); }
    int getNSpatialParameters() const { return static_cast<int>(_params.cols()); }
    bool isSpatiallyVarying() const { return _params.cols() > 1; }
    int getWidth() const { return _basis.front().getWidth(); }
    int getHeight() const { return _basis.front().getHeight(); }
    int getCtrX() const { return _basis.front().getCtrX(); }
    int getCtrY() const { return _basis.front().getCtrY(); }

    /// a_m(x, y) for every basis kernel.
    Eigen::VectorXd getKernelParameters(double x, double y) const;
    /// The fixed kernel at (x, y) (keeps the separable decomposition of the basis).
    FixedKernel computeKernel(double x, double y) const;
    /// Σ of the kernel pixels at (x, y).
    double getSum(double x, double y) const { return computeKernel(x, y).getSum(); }

private:
    KernelList _basis;
    SpatialFunction _function;
    Eigen::MatrixXd _params;
};

/// A differential background b(x, y) = Σ_k β_k f_k(x, y).
class SpatialBackground {
public:
    /// Throws InvalidInputError unless params has one value per term of the function.
    SpatialBackground(SpatialFunction function, Eigen::VectorXd params);
    const SpatialFunction& getSpatialFunction() const { return _function; }
    const Eigen::VectorXd& getParameters() const { return _params; }
    double operator()(double x, double y) const { return _function.evaluate(x, y, _params); }
    /// b at every pixel of `box` (parent coordinates), as a (height × width) image.
    ImageD evaluate(const Box2I& box) const;
    /// The factors of columns x0 … x0 + width − 1: b(x, y) = Σ_q yFactors(y)[q] · c(q, x − x0)
    /// with c(q, i) = Σ_{n≥q} β_(n,q) xFactors(x0 + i)[n − q]; (order + 1) × width.
    Eigen::MatrixXd columnFactors(int x0, long width) const;
    /// b along row y at the columns of `c` (from columnFactors), into out[0 … c.cols()); the
    /// same arithmetic as evaluate, bit for bit.
    void evaluateRow(double y, const Eigen::MatrixXd& c, double* out) const;

private:
    SpatialFunction _function;
    Eigen::VectorXd _params;
};

}  // namespace psfmatch

#endif
