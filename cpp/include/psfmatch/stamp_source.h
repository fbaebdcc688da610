// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_STAMP_SOURCE_H
#define PSFMATCH_STAMP_SOURCE_H

#include <array>
#include <memory>

#include "psfmatch/image.h"

namespace psfmatch {

/// Where a KernelCandidate's template and science stamps come from. A candidate keeps a
/// shared source and its box, and cuts the stamps (in double) when a fit or a residual needs
/// them, so that a cell set of a thousand candidates does not hold a thousand copies.
class StampSource {
public:
    virtual ~StampSource() = default;
    /// The pixels of `box` (parent coordinates) of the template (science = false) or the
    /// science image, as a double MaskedImage whose origin is the box's corner. The box must
    /// lie inside getBBox().
    virtual MaskedImage cut(bool science, const Box2I& box) const = 0;
    /// The box both images cover, in parent coordinates.
    virtual Box2I getBBox() const = 0;
    /// Throws InvalidInputError unless `box` is non-empty and inside getBBox().
    void checkInside(const Box2I& box) const;
    /// The source's own double stamp equal to cut(science, box), if it keeps one (then no
    /// copy is needed), else null.
    virtual const MaskedImage* find(bool /*science*/, const Box2I& /*box*/) const { return nullptr; }
};

/// Stamps owned by the source: one template and one science MaskedImage of one shape and
/// origin (what the KernelCandidate constructor from two stamps keeps).
class OwnedStamps : public StampSource {
public:
    /// Throws InvalidInputError unless the two stamps share one shape and their planes agree.
    OwnedStamps(MaskedImage templateStamp, MaskedImage scienceStamp);
    MaskedImage cut(bool science, const Box2I& box) const override;
    Box2I getBBox() const override { return _template.getBBox(); }
    const MaskedImage* find(bool science, const Box2I& box) const override;

private:
    MaskedImage _template, _science;
};

/// A read-only 2-D plane held elsewhere: float32, float64 or int32 pixels, strides in bytes.
struct PlaneRef {
    enum Type { FLOAT32, FLOAT64, INT32 };
    const void* data = nullptr;
    Type type = FLOAT64;
    long ny = 0, nx = 0;
    long rowStride = 0, colStride = 0;
};

/// Two images' planes held elsewhere (e.g. numpy arrays), read in place: a candidate's stamps
/// are views in the sense of LSST's MaskedImage(parent, bbox), converted to double when cut.
/// `owner` keeps the memory alive for as long as any candidate uses it; the planes must not
/// change while it does (a change shows in later fits and residuals).
class StampPlanes : public StampSource {
public:
    /// Planes in the order image, mask, variance; pixel [0, 0] of every plane at (x0, y0).
    /// Throws InvalidInputError unless the six share one shape, the images and variances are
    /// float and the masks int32.
    StampPlanes(const std::array<PlaneRef, 3>& templatePlanes, const std::array<PlaneRef, 3>& sciencePlanes, int x0,
                int y0, std::shared_ptr<const void> owner);
    MaskedImage cut(bool science, const Box2I& box) const override;
    Box2I getBBox() const override;

private:
    std::array<PlaneRef, 3> _template, _science;
    int _x0, _y0;
    std::shared_ptr<const void> _owner;
};

}  // namespace psfmatch

#endif
