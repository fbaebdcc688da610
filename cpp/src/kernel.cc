// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/kernel.h"

#include <cmath>
#include <string>

#include "psfmatch/errors.h"

namespace psfmatch {

namespace {

ImageD imageFromTerms(const std::vector<SeparableTerm>& terms) {
    const auto& first = terms.front();
    ImageD image = ImageD::Zero(first.ky.size(), first.kx.size());
    for (const auto& t : terms) {
        if (t.kx.size() != first.kx.size() || t.ky.size() != first.ky.size()) {
            throw InvalidInputError("separable kernel terms have different lengths");
        }
        image.matrix() += t.coef * t.ky * t.kx.transpose();
    }
    return image;
}

void checkKernelImage(const ImageD& image) {
    if (image.size() == 0) throw InvalidInputError("kernel image is empty");
    if (image.rows() % 2 == 0 || image.cols() % 2 == 0) {
        throw InvalidInputError("kernel dimensions must be odd, got " + std::to_string(image.cols()) + "x" +
                                std::to_string(image.rows()) + " (width x height)");
    }
    if (!image.allFinite()) throw InvalidInputError("kernel image has NaN or infinite pixels");
}

// Terms that share an identical x factor collapse into one: Σ c_t ky_t ⊗ kx = (Σ c_t ky_t) ⊗ kx.
// A linear combination of an Alard–Lupton basis then needs one pass per distinct x factor.
std::vector<SeparableTerm> mergeTerms(const std::vector<SeparableTerm>& terms) {
    std::vector<SeparableTerm> merged;
    for (const auto& t : terms) {
        if (t.coef == 0.0) continue;
        bool found = false;
        for (auto& m : merged) {
            if (m.kx.size() == t.kx.size() && m.kx == t.kx) {
                m.ky = m.coef * m.ky + t.coef * t.ky;
                m.coef = 1.0;
                found = true;
                break;
            }
        }
        if (!found) merged.push_back(t);
    }
    return merged;
}

}  // namespace

FixedKernel::FixedKernel(ImageD image) : _image(std::move(image)) { checkKernelImage(_image); }

FixedKernel::FixedKernel(std::vector<SeparableTerm> terms) {
    if (terms.empty()) throw InvalidInputError("a separable kernel needs at least one term");
    _image = imageFromTerms(terms);
    checkKernelImage(_image);
    _terms = std::move(terms);
}

FixedKernel::FixedKernel(ImageD image, std::vector<SeparableTerm> terms)
        : _image(std::move(image)), _terms(std::move(terms)) {
    checkKernelImage(_image);
}

FixedKernel FixedKernel::scaled(double s) const {
    std::vector<SeparableTerm> terms = _terms;
    for (auto& t : terms) t.coef *= s;
    return FixedKernel(_image * s, std::move(terms));
}

FixedKernel FixedKernel::combined(double a, const FixedKernel& other, double b) const {
    if (other.getWidth() != getWidth() || other.getHeight() != getHeight()) {
        throw InvalidInputError("cannot combine kernels of different sizes");
    }
    std::vector<SeparableTerm> terms;
    if (isSeparable() && other.isSeparable()) {
        for (auto t : _terms) {
            t.coef *= a;
            terms.push_back(std::move(t));
        }
        for (auto t : other._terms) {
            t.coef *= b;
            terms.push_back(std::move(t));
        }
    }
    return FixedKernel(a * _image + b * other._image, std::move(terms));
}

FixedKernel FixedKernel::squared() const {
    std::vector<SeparableTerm> terms;
    // (Σ_t c_t y_t⊗x_t)² = Σ_t c_t² y_t²⊗x_t² + Σ_{s<t} 2 c_s c_t (y_s y_t)⊗(x_s x_t), elementwise.
    for (std::size_t s = 0; s < _terms.size(); ++s) {
        for (std::size_t t = s; t < _terms.size(); ++t) {
            SeparableTerm q;
            q.coef = (s == t ? 1.0 : 2.0) * _terms[s].coef * _terms[t].coef;
            q.kx = _terms[s].kx.cwiseProduct(_terms[t].kx);
            q.ky = _terms[s].ky.cwiseProduct(_terms[t].ky);
            terms.push_back(std::move(q));
        }
    }
    return FixedKernel(_image.square(), mergeTerms(terms));
}

void checkBasisList(const KernelList& basis, const char* what) {
    if (basis.empty()) throw InvalidInputError(std::string(what) + ": the kernel basis list is empty");
    for (const auto& k : basis) {
        if (k.getWidth() != basis.front().getWidth() || k.getHeight() != basis.front().getHeight()) {
            throw InvalidInputError(std::string(what) + ": basis kernels differ in size");
        }
    }
}

FixedKernel linearCombination(const KernelList& basis, const Eigen::VectorXd& coefs) {
    checkBasisList(basis, "linearCombination");
    if (coefs.size() != static_cast<long>(basis.size())) {
        throw InvalidInputError("linearCombination: " + std::to_string(coefs.size()) + " coefficients for " +
                                std::to_string(basis.size()) + " basis kernels");
    }
    ImageD image = ImageD::Zero(basis.front().getHeight(), basis.front().getWidth());
    bool separable = true;
    std::vector<SeparableTerm> terms;
    for (std::size_t k = 0; k < basis.size(); ++k) {
        image += coefs[k] * basis[k].getImage();
        if (!basis[k].isSeparable()) separable = false;
        if (separable) {
            for (auto t : basis[k].getTerms()) {
                t.coef *= coefs[k];
                terms.push_back(std::move(t));
            }
        }
    }
    if (!separable) return FixedKernel(std::move(image));
    return FixedKernel(std::move(image), mergeTerms(terms));
}

}  // namespace psfmatch
