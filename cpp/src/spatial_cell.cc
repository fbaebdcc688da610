// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/spatial_cell.h"

#include <algorithm>
#include <exception>
#include <mutex>

#include "psfmatch/errors.h"
#include "psfmatch/parallel.h"

namespace psfmatch {

void SpatialCell::insertCandidate(CandidatePtr candidate) {
    if (!candidate) throw InvalidInputError("insertCandidate: null candidate");
    const double rating = candidate->getCandidateRating();
    // First position whose rating is <= the new one: a new candidate goes before equals.
    auto pos = std::find_if(_candidates.begin(), _candidates.end(),
                            [rating](const CandidatePtr& c) { return !(c->getCandidateRating() > rating); });
    _candidates.insert(pos, std::move(candidate));
}

bool SpatialCell::empty() const { return size(true) == 0; }

std::size_t SpatialCell::size(bool ignoreBad) const {
    if (!ignoreBad) return _candidates.size();
    return static_cast<std::size_t>(std::count_if(_candidates.begin(), _candidates.end(), [](const CandidatePtr& c) {
        return c->getStatus() != KernelCandidate::BAD;
    }));
}

std::vector<CandidatePtr> SpatialCell::getCandidates(bool ignoreBad) const {
    std::vector<CandidatePtr> out;
    for (const auto& c : _candidates) {
        if (!ignoreBad || c->getStatus() != KernelCandidate::BAD) out.push_back(c);
    }
    return out;
}

int SpatialCell::visitCandidates(CandidateVisitor& visitor, int nMaxPerCell, bool ignoreExceptions) {
    int visited = 0;
    // A snapshot: visitors change statuses, never the list.
    const std::vector<CandidatePtr> snapshot = _candidates;
    for (const auto& c : snapshot) {
        if (nMaxPerCell > 0 && visited >= nMaxPerCell) break;
        if (c->getStatus() == KernelCandidate::BAD) continue;
        try {
            visitor.processCandidate(*c);
        } catch (const std::exception&) {
            if (!ignoreExceptions) throw;
            continue;
        }
        ++visited;
    }
    return visited;
}

SpatialCellSet::SpatialCellSet(const Box2I& region, int xSize, int ySize) : _region(region) {
    if (xSize <= 0 || ySize <= 0) {
        throw InvalidInputError("SpatialCellSet: cell sizes must be positive, got " + std::to_string(xSize) + "x" +
                                std::to_string(ySize));
    }
    if (region.isEmpty()) throw InvalidInputError("SpatialCellSet: empty region");
    const int nx = (region.getWidth() + xSize - 1) / xSize;
    const int ny = (region.getHeight() + ySize - 1) / ySize;
    for (int iy = 0; iy < ny; ++iy) {
        for (int ix = 0; ix < nx; ++ix) {
            Box2I box;
            box.minX = region.minX + ix * xSize;
            box.minY = region.minY + iy * ySize;
            box.maxX = ix == nx - 1 ? region.maxX : box.minX + xSize - 1;
            box.maxY = iy == ny - 1 ? region.maxY : box.minY + ySize - 1;
            const std::string label = "Cell " + std::to_string(ix) + "x" + std::to_string(iy);
            _cells.push_back(std::make_shared<SpatialCell>(label, box));
        }
    }
}

void SpatialCellSet::insertCandidate(CandidatePtr candidate) {
    if (!candidate) throw InvalidInputError("insertCandidate: null candidate");
    const int x = positionToIndex(candidate->getXCenter());
    const int y = positionToIndex(candidate->getYCenter());
    for (auto& cell : _cells) {
        if (cell->getBBox().contains(x, y)) {
            cell->insertCandidate(std::move(candidate));
            return;
        }
    }
    throw InvalidInputError("insertCandidate: candidate at (" + std::to_string(candidate->getXCenter()) + ", " +
                            std::to_string(candidate->getYCenter()) + ") is outside the cell set's region [" +
                            std::to_string(_region.minX) + ".." + std::to_string(_region.maxX) + "] x [" +
                            std::to_string(_region.minY) + ".." + std::to_string(_region.maxY) + "]");
}

void SpatialCellSet::visitCandidates(CandidateVisitor& visitor, int nMaxPerCell, bool ignoreExceptions,
                                     const CellProgress& progress) {
    visitor.reset();
    const int nThreads = visitor.getNThreads();
    if (nThreads == 1 || _cells.size() < 2) {
        for (auto& cell : _cells) {
            const int n = cell->visitCandidates(visitor, nMaxPerCell, ignoreExceptions);
            if (progress) progress(n);
        }
        return;
    }
    std::mutex progressMutex;
    // Cells are independent for such a visitor, and each cell keeps its own sequential order
    // (a rejected candidate still promotes the next), so the outcome is that of the serial
    // loop. Of several cells that throw, the first in cell order is reported, as serially.
    std::vector<std::exception_ptr> errors(_cells.size());
    parallelFor(static_cast<long>(_cells.size()), nThreads, [&](long begin, long end) {
        for (long i = begin; i < end; ++i) {
            try {
                const int n = _cells[i]->visitCandidates(visitor, nMaxPerCell, ignoreExceptions);
                if (progress) {
                    std::lock_guard<std::mutex> lock(progressMutex);
                    progress(n);
                }
            } catch (...) {
                errors[i] = std::current_exception();
            }
        }
    });
    for (const auto& error : errors) {
        if (error) std::rethrow_exception(error);
    }
}

void SpatialCellSet::visitAllCandidates(CandidateVisitor& visitor, bool ignoreExceptions) {
    visitCandidates(visitor, -1, ignoreExceptions);
}

std::vector<CandidatePtr> SpatialCellSet::getAllCandidates(bool ignoreBad) const {
    std::vector<CandidatePtr> out;
    for (const auto& cell : _cells) {
        auto c = cell->getCandidates(ignoreBad);
        out.insert(out.end(), c.begin(), c.end());
    }
    return out;
}

}  // namespace psfmatch
