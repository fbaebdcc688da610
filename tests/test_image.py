# SPDX-License-Identifier: BSD-3-Clause
"""Tests of MaskedImage (image, mask bit planes, variance, xy0; float32 or float64).

The Mask plane dictionary itself is tested in test_config.py.
"""

from __future__ import annotations

import numpy as np
import pytest

import psfmatch as pm

RNG_SEED = 8675309  # the rng fixture's seed (conftest.py)


@pytest.mark.parametrize(
    ("inDtype", "outDtype"),
    [
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.float16, np.float64),
        (np.int16, np.float64),
        (np.uint8, np.float64),
        (">f4", np.float32),
        (">f8", np.float64),
    ],
)
def test_pixel_dtypes(inDtype: object, outDtype: type) -> None:
    """float32 stays float32 (also big-endian); every other real dtype becomes float64; the
    variance follows the image's dtype and the mask is int32."""
    image = (np.arange(12).reshape(3, 4) % 7).astype(inDtype)
    variance = np.full((3, 4), 2, dtype=np.int64)
    mask = np.ones((3, 4), dtype=np.uint8)
    mi = pm.MaskedImage(image, mask, variance)
    assert mi.image.dtype == outDtype and mi.variance.dtype == outDtype
    assert mi.dtype == outDtype
    assert mi.mask.dtype == np.int32
    assert mi.image.dtype.isnative and mi.image.flags.c_contiguous
    # Small integers are exact in both float types.
    np.testing.assert_array_equal(mi.image, np.asarray(image, dtype=np.float64))
    np.testing.assert_array_equal(mi.variance, 2.0)
    np.testing.assert_array_equal(mi.mask, 1)


def test_defaults_geometry_and_origin() -> None:
    image = np.zeros((5, 8), dtype=np.float32)
    mi = pm.MaskedImage(image, xy0=(-3, 11))
    assert mi.getXY0() == (-3, 11)
    assert (mi.getWidth(), mi.getHeight(), mi.getDimensions()) == (8, 5, (8, 5))
    np.testing.assert_array_equal(mi.mask, np.zeros((5, 8), dtype=np.int32))
    assert mi.variance.dtype == np.float32 and not mi.variance.any()  # zeros, as the reference
    box = mi.getBBox()
    assert (box.getMinX(), box.getMinY(), box.getMaxX(), box.getMaxY()) == (-3, 11, 4, 15)
    mi.setXY0((7, 2))
    assert mi.getXY0() == (7, 2) and mi.getBBox().getMinX() == 7
    assert "8x5" in repr(mi) and "float32" in repr(mi)


def test_contiguous_native_input_is_shared_others_are_copied(rng: np.random.Generator) -> None:
    """A C-contiguous native array is stored as is (no copy); anything else is copied, and the
    caller's array is never modified."""
    image = rng.normal(size=(6, 10))
    mi = pm.MaskedImage(image)
    assert np.shares_memory(mi.image, image)
    strided = image[:, ::2]
    before = strided.copy()
    mi2 = pm.MaskedImage(strided, variance=np.ones((6, 5)))
    assert not np.shares_memory(mi2.image, image) and mi2.image.flags.c_contiguous
    mi2.image[:] = 0.0
    np.testing.assert_array_equal(strided, before)


def test_clone_and_subimage_are_deep_copies(rng: np.random.Generator) -> None:
    image = rng.normal(size=(12, 15)).astype(np.float32)
    mask = rng.integers(0, 8, (12, 15)).astype(np.int32)
    variance = rng.uniform(1.0, 2.0, (12, 15)).astype(np.float32)
    mi = pm.MaskedImage(image, mask, variance, xy0=(100, 200))

    clone = mi.clone()
    assert clone.getXY0() == (100, 200) and clone.dtype == np.float32
    for a, b in ((clone.image, image), (clone.mask, mask), (clone.variance, variance)):
        np.testing.assert_array_equal(a, b)
        assert not np.shares_memory(a, b)

    # Parent box x 103..109, y 204..208 → array rows 4..8, columns 3..9.
    sub = mi.subimage(pm.Box2I((103, 204), (7, 5)))
    assert sub.getXY0() == (103, 204) and sub.getDimensions() == (7, 5)
    np.testing.assert_array_equal(sub.image, image[4:9, 3:10])
    np.testing.assert_array_equal(sub.mask, mask[4:9, 3:10])
    np.testing.assert_array_equal(sub.variance, variance[4:9, 3:10])
    sub.image[:] = -1.0
    assert (mi.image != -1.0).all()  # a copy, not a view

    # The whole image is a valid sub-image; one pixel beyond any edge is not.
    whole = mi.subimage(mi.getBBox())
    np.testing.assert_array_equal(whole.image, image)
    for corner, dims in (((99, 200), (5, 5)), ((100, 199), (5, 5)), ((105, 200), (11, 5))):
        with pytest.raises(pm.InvalidInputError, match="is not inside the image's"):
            mi.subimage(pm.Box2I(corner, dims))


def test_bad_input_raises_named_errors() -> None:
    good = np.zeros((4, 5))
    with pytest.raises(pm.InvalidInputError, match=r"image: expected a 2-D array, got 1 dim"):
        pm.MaskedImage(np.zeros(5))
    with pytest.raises(pm.InvalidInputError, match=r"image: expected a 2-D array, got 3 dim"):
        pm.MaskedImage(np.zeros((2, 3, 4)))
    with pytest.raises(pm.InvalidInputError, match="image: expected a real numeric array"):
        pm.MaskedImage(np.zeros((4, 5), dtype=complex))
    with pytest.raises(pm.InvalidInputError, match="pass a masked array's data and mask"):
        pm.MaskedImage(np.ma.masked_array(good, mask=good > 0))
    with pytest.raises(pm.InvalidInputError, match=r"mask: shape \(5, 4\) differs from .*\(4, 5\)"):
        pm.MaskedImage(good, np.zeros((5, 4), dtype=np.int32))
    with pytest.raises(pm.InvalidInputError, match="mask: expected an integer array, got dtype"):
        pm.MaskedImage(good, np.zeros((4, 5), dtype=np.float32))
    with pytest.raises(pm.InvalidInputError, match=r"variance: shape \(4, 6\) differs"):
        pm.MaskedImage(good, None, np.ones((4, 6)))
    with pytest.raises(pm.InvalidInputError, match="variance: expected a real numeric array"):
        pm.MaskedImage(good, None, np.full((4, 5), "x"))
    with pytest.raises(pm.InvalidInputError, match="xy0: expected two integers"):
        pm.MaskedImage(good, xy0=(1.5, 2))
    with pytest.raises(pm.InvalidInputError, match="xy0: expected two integers"):
        pm.MaskedImage(good, xy0=(1,))  # type: ignore[arg-type]
