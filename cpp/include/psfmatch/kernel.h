// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_KERNEL_H
#define PSFMATCH_KERNEL_H

#include <vector>

#include <Eigen/Core>

#include "psfmatch/image.h"

namespace psfmatch {

/// One separable term of a kernel: coef · ky ⊗ kx, i.e. pixel [j, i] = coef · ky[j] · kx[i].
struct SeparableTerm {
    double coef = 1.0;
    Eigen::VectorXd kx;  ///< factor along x (columns), length = kernel width
    Eigen::VectorXd ky;  ///< factor along y (rows), length = kernel height
};

/// A kernel image of doubles with odd dimensions and centre ((W-1)/2, (H-1)/2).
///
/// A kernel may also carry an exact decomposition into separable terms (every Alard–Lupton
/// basis kernel does). Convolution then runs as 1-D passes, and a basis whose kernels share
/// factors shares the passes too. The decomposition is optional and always consistent with
/// the image: image == Σ_t coef_t · ky_t ⊗ kx_t to rounding.
class FixedKernel {
public:
    /// A kernel from its image (no separable decomposition). Throws InvalidInputError for an
    /// empty or even-sized image or non-finite pixels.
    explicit FixedKernel(ImageD image);
    /// A kernel given by separable terms; the image is built from them.
    explicit FixedKernel(std::vector<SeparableTerm> terms);

    int getWidth() const { return static_cast<int>(_image.cols()); }
    int getHeight() const { return static_cast<int>(_image.rows()); }
    int getCtrX() const { return (getWidth() - 1) / 2; }
    int getCtrY() const { return (getHeight() - 1) / 2; }
    const ImageD& getImage() const { return _image; }
    /// Σ of the kernel pixels.
    double getSum() const { return _image.sum(); }
    bool isSeparable() const { return !_terms.empty(); }
    const std::vector<SeparableTerm>& getTerms() const { return _terms; }

    /// This kernel times s (keeps the decomposition).
    FixedKernel scaled(double s) const;
    /// a · this + b · other, same dimensions; keeps a decomposition only if both have one.
    FixedKernel combined(double a, const FixedKernel& other, double b) const;
    /// The kernel whose pixels are the squares of this one's: what a variance plane is
    /// convolved with. A decomposition of r terms becomes r(r+1)/2 exact terms.
    FixedKernel squared() const;

private:
    friend FixedKernel linearCombination(const std::vector<FixedKernel>&, const Eigen::VectorXd&);
    FixedKernel(ImageD image, std::vector<SeparableTerm> terms);
    ImageD _image;
    std::vector<SeparableTerm> _terms;
};

using KernelList = std::vector<FixedKernel>;

/// Throws InvalidInputError unless the list is non-empty and all kernels share one size.
void checkBasisList(const KernelList& basis, const char* what);

/// Σ_k coefs[k] · basis[k] as one kernel (decomposition kept when every kernel has one).
FixedKernel linearCombination(const KernelList& basis, const Eigen::VectorXd& coefs);

}  // namespace psfmatch

#endif
