// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/image.h"

#include <string>

#include "psfmatch/errors.h"

namespace psfmatch {

void MaskedImage::checkConsistent(const char* what) const {
    if (mask.rows() != image.rows() || mask.cols() != image.cols() || variance.rows() != image.rows() ||
        variance.cols() != image.cols()) {
        throw InvalidInputError(std::string(what) + ": image, mask and variance planes differ in shape");
    }
}

}  // namespace psfmatch
