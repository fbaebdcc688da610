// SPDX-License-Identifier: BSD-3-Clause
#include "common.h"

PYBIND11_MODULE(_core, m) {
    m.doc() = "psfmatch's compiled core. Private: use the psfmatch package.";
    using namespace psfmatch::bindings;
    bindErrors(m);
    bindControl(m);
    bindImage(m);
    bindKernel(m);
    bindConvolve(m);
    bindBasis(m);
    bindKernelSolution(m);
    bindImageStatistics(m);
    bindKernelCandidate(m);
    bindSpatial(m);
    bindSpatialCell(m);
    bindVisitors(m);
    bindSubtract(m);
}
