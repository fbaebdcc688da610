// SPDX-License-Identifier: BSD-3-Clause
#include "psfmatch/stamp_source.h"

#include <cstdint>
#include <string>

#include "psfmatch/errors.h"

namespace psfmatch {

namespace {

std::string boxText(const Box2I& b) {
    return "[" + std::to_string(b.minX) + ".." + std::to_string(b.maxX) + "] x [" + std::to_string(b.minY) + ".." +
           std::to_string(b.maxY) + "]";
}

/// Copies the (ny, nx) block at (ya, xa) of a plane of pixel type T into `out`.
template <typename T, typename Out>
void copyBlock(const PlaneRef& p, long ya, long xa, Out& out) {
    using Scalar = typename Out::Scalar;
    const auto* base = static_cast<const char*>(p.data);
    for (long y = 0; y < out.rows(); ++y) {
        const char* row = base + (ya + y) * p.rowStride + xa * p.colStride;
        Scalar* dst = out.data() + y * out.cols();
        if (p.colStride == static_cast<long>(sizeof(T))) {
            const T* src = reinterpret_cast<const T*>(row);
            for (long x = 0; x < out.cols(); ++x) dst[x] = static_cast<Scalar>(src[x]);
        } else {
            for (long x = 0; x < out.cols(); ++x) {
                dst[x] = static_cast<Scalar>(*reinterpret_cast<const T*>(row + x * p.colStride));
            }
        }
    }
}

void copyFloatBlock(const PlaneRef& p, long ya, long xa, ImageD& out) {
    if (p.type == PlaneRef::FLOAT32) {
        copyBlock<float>(p, ya, xa, out);
    } else {
        copyBlock<double>(p, ya, xa, out);
    }
}

}  // namespace

void StampSource::checkInside(const Box2I& box) const {
    const Box2I bbox = getBBox();
    if (box.isEmpty() || !bbox.contains(box.minX, box.minY) || !bbox.contains(box.maxX, box.maxY)) {
        throw InvalidInputError("KernelCandidate: the stamp box is not inside the image: box " + boxText(box) +
                                ", image " + boxText(bbox));
    }
}

OwnedStamps::OwnedStamps(MaskedImage templateStamp, MaskedImage scienceStamp)
        : _template(std::move(templateStamp)), _science(std::move(scienceStamp)) {
    _template.checkConsistent("KernelCandidate template stamp");
    _science.checkConsistent("KernelCandidate science stamp");
    if (_template.getWidth() != _science.getWidth() || _template.getHeight() != _science.getHeight()) {
        throw InvalidInputError("KernelCandidate: template stamp is " + std::to_string(_template.getWidth()) + "x" +
                                std::to_string(_template.getHeight()) + " but science stamp is " +
                                std::to_string(_science.getWidth()) + "x" + std::to_string(_science.getHeight()));
    }
}

const MaskedImage* OwnedStamps::find(bool science, const Box2I& box) const {
    const MaskedImage& from = science ? _science : _template;
    return box == from.getBBox() ? &from : nullptr;
}

MaskedImage OwnedStamps::cut(bool science, const Box2I& box) const {
    if (const MaskedImage* own = find(science, box)) return *own;
    const MaskedImage& from = science ? _science : _template;
    checkInside(box);
    const long ya = box.minY - from.y0, xa = box.minX - from.x0, ny = box.getHeight(), nx = box.getWidth();
    MaskedImage out;
    out.image = from.image.block(ya, xa, ny, nx);
    out.mask = from.mask.block(ya, xa, ny, nx);
    out.variance = from.variance.block(ya, xa, ny, nx);
    out.x0 = box.minX;
    out.y0 = box.minY;
    return out;
}

StampPlanes::StampPlanes(const std::array<PlaneRef, 3>& templatePlanes, const std::array<PlaneRef, 3>& sciencePlanes,
                         int x0, int y0, std::shared_ptr<const void> owner)
        : _template(templatePlanes), _science(sciencePlanes), _x0(x0), _y0(y0), _owner(std::move(owner)) {
    const long ny = _template[0].ny, nx = _template[0].nx;
    for (const auto* planes : {&_template, &_science}) {
        const char* name = planes == &_template ? "template" : "science";
        for (int i = 0; i < 3; ++i) {
            const PlaneRef& p = (*planes)[i];
            if (p.ny != ny || p.nx != nx) {
                throw InvalidInputError(std::string("KernelCandidate: the ") + name +
                                        " planes differ in shape from the template image");
            }
            const bool isMask = i == 1;
            if (isMask != (p.type == PlaneRef::INT32) || p.data == nullptr) {
                throw InvalidInputError(std::string("KernelCandidate: the ") + name +
                                        " planes must be float32 or float64 (image, variance) and int32 (mask)");
            }
        }
    }
}

Box2I StampPlanes::getBBox() const {
    return Box2I(_x0, _y0, static_cast<int>(_template[0].nx), static_cast<int>(_template[0].ny));
}

MaskedImage StampPlanes::cut(bool science, const Box2I& box) const {
    checkInside(box);
    const std::array<PlaneRef, 3>& planes = science ? _science : _template;
    const long ya = box.minY - _y0, xa = box.minX - _x0;
    MaskedImage out;
    out.image.resize(box.getHeight(), box.getWidth());
    out.mask.resize(box.getHeight(), box.getWidth());
    out.variance.resize(box.getHeight(), box.getWidth());
    copyFloatBlock(planes[0], ya, xa, out.image);
    copyBlock<std::int32_t>(planes[1], ya, xa, out.mask);
    copyFloatBlock(planes[2], ya, xa, out.variance);
    out.x0 = box.minX;
    out.y0 = box.minY;
    return out;
}

}  // namespace psfmatch
