// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_SPATIAL_CELL_H
#define PSFMATCH_SPATIAL_CELL_H

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "psfmatch/image.h"
#include "psfmatch/kernel_candidate.h"

namespace psfmatch {

using CandidatePtr = std::shared_ptr<KernelCandidate>;

/// Anything that visits candidates: reset() once per visit, then processCandidate per candidate.
class CandidateVisitor {
public:
    virtual ~CandidateVisitor() = default;
    virtual void reset() {}
    virtual void processCandidate(KernelCandidate& candidate) = 0;
    /// Threads a cell set may use to visit its cells concurrently (0: every core). Only a
    /// visitor whose processCandidate touches nothing but the candidate and atomic counters
    /// may return anything but 1; the cells' own order of visits is kept either way.
    virtual int getNThreads() const { return 1; }
};

/// One cell of a SpatialCellSet: candidates sorted by decreasing rating (docs/algorithm.md §1.3).
class SpatialCell {
public:
    SpatialCell(std::string label, const Box2I& bbox) : _label(std::move(label)), _bbox(bbox) {}

    const std::string& getLabel() const { return _label; }
    const Box2I& getBBox() const { return _bbox; }
    /// Inserts before any candidate of equal or lower rating.
    void insertCandidate(CandidatePtr candidate);
    /// True when no non-BAD candidate remains.
    bool empty() const;
    /// The number of candidates (BAD included when ignoreBad is false).
    std::size_t size(bool ignoreBad = true) const;
    /// The candidates in rating order, BAD ones skipped when ignoreBad.
    std::vector<CandidatePtr> getCandidates(bool ignoreBad = true) const;
    /// Visits non-BAD candidates in order, at most nMaxPerCell (≤ 0: all) of them. A candidate
    /// that turns BAD during its visit still counts; one whose visit throws does not count
    /// when ignoreExceptions (the exception is dropped), otherwise the exception propagates.
    /// Returns the number of candidates counted.
    int visitCandidates(CandidateVisitor& visitor, int nMaxPerCell, bool ignoreExceptions = false);

private:
    std::string _label;
    Box2I _bbox;
    std::vector<CandidatePtr> _candidates;
};

/// A grid of SpatialCells covering a region (docs/algorithm.md §1.3).
class SpatialCellSet {
public:
    /// ceil(width/xSize) × ceil(height/ySize) cells, row-major (y outer), the last column and
    /// row absorbing the remainder. Throws InvalidInputError for a cell size ≤ 0.
    SpatialCellSet(const Box2I& region, int xSize, int ySize);

    const Box2I& getBBox() const { return _region; }
    std::vector<std::shared_ptr<SpatialCell>> getCellList() const { return _cells; }
    /// Puts the candidate in the first cell containing floor(pos + 0.5); throws
    /// InvalidInputError if none does.
    void insertCandidate(CandidatePtr candidate);
    /// A callback told how many candidates each cell's visit counted, once per cell, never from
    /// two threads at once (for progress reporting).
    using CellProgress = std::function<void(int)>;
    /// visitor.reset(), then each cell's visitCandidates in order (concurrently over cells when
    /// the visitor allows it: CandidateVisitor::getNThreads). `progress`, if set, is called
    /// after each cell.
    void visitCandidates(CandidateVisitor& visitor, int nMaxPerCell, bool ignoreExceptions = false,
                         const CellProgress& progress = nullptr);
    /// Every non-BAD candidate, with no per-cell limit.
    void visitAllCandidates(CandidateVisitor& visitor, bool ignoreExceptions = false);
    /// Every candidate of every cell, in order (BAD included when ignoreBad is false).
    std::vector<CandidatePtr> getAllCandidates(bool ignoreBad = true) const;

private:
    Box2I _region;
    std::vector<std::shared_ptr<SpatialCell>> _cells;
};

}  // namespace psfmatch

#endif
