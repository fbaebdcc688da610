// SPDX-License-Identifier: BSD-3-Clause
#ifndef PSFMATCH_IMAGE_H
#define PSFMATCH_IMAGE_H

#include <cmath>
#include <cstdint>
#include <type_traits>

#include <Eigen/Core>

namespace psfmatch {

/// A row-major 2-D array of doubles, indexed (row = y, column = x).
using ImageD = Eigen::Array<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// A row-major 2-D array of mask bit planes.
using MaskArray = Eigen::Array<std::int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// A non-owning view of a 2-D row-major pixel array with an arbitrary row stride (in elements).
template <typename T>
struct ImageView {
    T* data = nullptr;
    long ny = 0;
    long nx = 0;
    long stride = 0;

    ImageView() = default;
    ImageView(T* d, long rows, long cols, long rowStride) : data(d), ny(rows), nx(cols), stride(rowStride) {}
    T& operator()(long y, long x) const { return data[y * stride + x]; }
    T* row(long y) const { return data + y * stride; }
};

/// Views of an owned row-major Eigen array.
template <typename Derived>
auto viewOf(Eigen::DenseBase<Derived>& a) {
    using T = typename Derived::Scalar;
    return ImageView<T>(a.derived().data(), a.rows(), a.cols(), a.cols());
}
template <typename Derived>
auto viewOf(const Eigen::DenseBase<Derived>& a) {
    using T = const typename Derived::Scalar;
    return ImageView<T>(a.derived().data(), a.rows(), a.cols(), a.cols());
}

/// An integer pixel box, inclusive of both corners, in parent coordinates.
struct Box2I {
    int minX = 0;
    int minY = 0;
    int maxX = -1;
    int maxY = -1;

    Box2I() = default;
    /// A box from its lower corner and its dimensions.
    /// The far corner is computed in 64 bits: a box whose last pixel is exactly 2^31 - 1 has
    /// x0 + width = 2^31, which overflows int (undefined behaviour) before the - 1.
    Box2I(int x0, int y0, int width, int height)
        : minX(x0),
          minY(y0),
          maxX(static_cast<int>(static_cast<long long>(x0) + width - 1)),
          maxY(static_cast<int>(static_cast<long long>(y0) + height - 1)) {}
    int getWidth() const { return maxX - minX + 1; }
    int getHeight() const { return maxY - minY + 1; }
    bool isEmpty() const { return maxX < minX || maxY < minY; }
    bool contains(int x, int y) const { return x >= minX && x <= maxX && y >= minY && y <= maxY; }
    bool operator==(const Box2I& o) const {
        return minX == o.minX && minY == o.minY && maxX == o.maxX && maxY == o.maxY;
    }
};

/// An image plane, a mask plane and a variance plane of one shape, with the parent
/// coordinates (x0, y0) of pixel [0, 0]. Stamps and small images in double precision.
struct MaskedImage {
    ImageD image;
    MaskArray mask;
    ImageD variance;
    int x0 = 0;
    int y0 = 0;

    MaskedImage() = default;
    MaskedImage(long ny, long nx, int xOrigin = 0, int yOrigin = 0)
            : image(ImageD::Zero(ny, nx)),
              mask(MaskArray::Zero(ny, nx)),
              variance(ImageD::Zero(ny, nx)),
              x0(xOrigin),
              y0(yOrigin) {}
    long getHeight() const { return image.rows(); }
    long getWidth() const { return image.cols(); }
    Box2I getBBox() const { return Box2I(x0, y0, static_cast<int>(getWidth()), static_cast<int>(getHeight())); }
    /// Throws InvalidInputError unless the three planes share one shape.
    void checkConsistent(const char* what) const;
};

/// Views of the three planes of an image held elsewhere (e.g. numpy arrays), pixel type T.
template <typename T>
struct MaskedImageView {
    ImageView<T> image;
    ImageView<std::conditional_t<std::is_const_v<T>, const std::int32_t, std::int32_t>> mask;
    ImageView<T> variance;
};

/// floor(pos + 0.5): the integer pixel whose centre is nearest (docs/algorithm.md §0).
inline int positionToIndex(double pos) { return static_cast<int>(std::floor(pos + 0.5)); }

}  // namespace psfmatch

#endif
