# SPDX-License-Identifier: BSD-3-Clause
"""`TaskMetadata`: the hierarchical mapping in which a task records the numbers and strings
of its run (``spatialKernelSum``, timing information, ...), with the API of
``lsst.pipe.base.TaskMetadata``. Dotted keys (``md["a.b"]``) address nested containers.
`psfmatch.task` re-exports it beside `Task`.
"""

from __future__ import annotations

__all__ = ["MetadataValue", "Scalar", "TaskMetadata"]

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, TypeAlias, cast

import numpy as np

Scalar: TypeAlias = bool | int | float | str
"""The types of a single metadata value."""

MetadataValue: TypeAlias = "Scalar | list[Scalar] | TaskMetadata"
"""The types stored in a `TaskMetadata`: a scalar, a list of scalars, or a nested container."""


def _toScalar(key: str, value: Any) -> Scalar:
    """Return ``value`` as a plain Python scalar, or raise `TypeError`."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | float | str):
        return value
    raise TypeError(
        f"metadata value for {key!r} must be a bool, int, float or str (or a list of them), "
        f"got {type(value).__name__}"
    )


def _isArrayLike(value: Any) -> bool:
    """Return whether ``value`` is stored as a list of scalars."""
    return isinstance(value, list | tuple) or (isinstance(value, np.ndarray) and value.ndim == 1)


class TaskMetadata(MutableMapping[str, Any]):
    """Hierarchical container of the metadata recorded by a task.

    Parameters
    ----------
    data : `~collections.abc.Mapping`, optional
        Initial content; each item is set as by ``md[key] = value``, so nested mappings become
        nested `TaskMetadata` and dotted keys are expanded.

    Notes
    -----
    Keys are non-empty strings. A key containing dots addresses nested containers:
    ``md["a.b"] = 1`` creates (if needed) the nested ``TaskMetadata`` ``md["a"]`` and sets its
    key ``"b"``; ``md["a.b"]`` reads it back and ``"a.b" in md`` tests it. Iteration,
    ``len``, `keys` and `items` cover the top level only; `names` lists every leaf with its
    fully-qualified key.

    Values are stored as:

    - scalars: `bool`, `int`, `float` or `str` (numpy scalars are converted to the Python
      type);
    - lists of scalars (a `list`, `tuple` or 1-D `numpy.ndarray` is stored as a new `list`);
      `add` appends to them, `getArray` and `getScalar` read them;
    - nested `TaskMetadata`: a `TaskMetadata` value is stored by reference, any other mapping
      is converted into a new `TaskMetadata`.

    Reading a list value (``md[key]``, `getArray`, `to_dict`) returns a copy; use `add` to
    append to it in place.

    Examples
    --------
    >>> md = TaskMetadata()
    >>> md["spatialKernelSum"] = 0.98
    >>> md["fit.nIter"] = 3
    >>> md.add("fit.nRejected", 2)
    >>> md.add("fit.nRejected", 0)
    >>> md["fit"].to_dict()
    {'nIter': 3, 'nRejected': [2, 0]}
    >>> md.getScalar("fit.nRejected"), md.getArray("fit.nIter")
    (0, [3])
    >>> md.names()
    ['spatialKernelSum', 'fit.nIter', 'fit.nRejected']
    """

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, MetadataValue] = {}
        if data is not None:
            for key, value in data.items():
                self[key] = value

    @staticmethod
    def _splitKey(key: str) -> list[str]:
        """Split a dotted key into its components, checking each is a non-empty string."""
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be str, got {type(key).__name__}")
        parts = key.split(".")
        if not all(parts):
            raise KeyError(f"invalid metadata key {key!r}: empty component")
        return parts

    def _findParent(self, key: str, create: bool) -> tuple[TaskMetadata, str]:
        """Return the container holding ``key`` and the last component of ``key``.

        Parameters
        ----------
        key : `str`
            Possibly dotted key.
        create : `bool`
            If `True`, create missing intermediate containers; otherwise a missing
            intermediate container raises `KeyError`.
        """
        parts = self._splitKey(key)
        node = self
        for i, part in enumerate(parts[:-1]):
            child = node._data.get(part)
            if child is None:
                if not create:
                    raise KeyError(key)
                child = node._data[part] = TaskMetadata()
            elif not isinstance(child, TaskMetadata):
                if not create:
                    raise KeyError(key)
                prefix = ".".join(parts[: i + 1])
                raise TypeError(
                    f"cannot set metadata key {key!r}: {prefix!r} holds a value, "
                    "not a nested TaskMetadata"
                )
            node = child
        return node, parts[-1]

    def _convert(self, key: str, value: Any) -> MetadataValue:
        """Convert ``value`` to the form stored under ``key``."""
        if isinstance(value, TaskMetadata):
            return value
        if isinstance(value, Mapping):
            return TaskMetadata(value)
        if _isArrayLike(value):
            return [_toScalar(key, v) for v in value]
        return _toScalar(key, value)

    def __getitem__(self, key: str) -> Any:
        """Return the value stored under ``key`` (a copy if it is a list).

        Raises
        ------
        KeyError
            Raised if there is no such key.
        """
        node, last = self._findParent(key, create=False)
        try:
            value = node._data[last]
        except KeyError:
            raise KeyError(key) from None
        return list(value) if isinstance(value, list) else value

    def __setitem__(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``, replacing any previous value.

        Raises
        ------
        TypeError
            Raised if ``value`` is not a scalar, list of scalars or mapping, or if a component
            of a dotted ``key`` already holds a value that is not a `TaskMetadata`.
        KeyError
            Raised if ``key`` has an empty component (e.g. ``"a..b"``).
        """
        node, last = self._findParent(key, create=True)
        node._data[last] = self._convert(key, value)

    def __delitem__(self, key: str) -> None:
        """Remove ``key`` (which may be dotted)."""
        node, last = self._findParent(key, create=False)
        try:
            del node._data[last]
        except KeyError:
            raise KeyError(key) from None

    def __contains__(self, key: object) -> bool:
        """Return whether ``key`` (which may be dotted) is present."""
        if not isinstance(key, str):
            return False
        try:
            node, last = self._findParent(key, create=False)
        except KeyError:
            return False
        return last in node._data

    def __len__(self) -> int:
        """Return the number of top-level keys."""
        return len(self._data)

    def __iter__(self) -> Iterator[str]:
        """Iterate over the top-level keys in insertion order."""
        return iter(self._data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"

    def add(self, name: str, value: Any) -> None:
        """Append ``value`` to the list stored under ``name``.

        Parameters
        ----------
        name : `str`
            Possibly dotted key.
        value : scalar or sequence of scalars
            Value to append; a list, tuple or 1-D array extends the list by all its elements.

        Raises
        ------
        TypeError
            Raised if ``value`` is not a scalar or list of scalars, or if ``name`` holds a
            nested `TaskMetadata`.

        Notes
        -----
        A missing key is created as a list; a key holding a scalar is turned into a list
        whose first element is that scalar. This is the method `lsst.utils.timer.timeMethod`
        uses to record timings.
        """
        node, last = self._findParent(name, create=True)
        if _isArrayLike(value):
            newValues = [_toScalar(name, v) for v in value]
        else:
            newValues = [_toScalar(name, value)]
        current = node._data.get(last)
        if current is None:
            node._data[last] = newValues
        elif isinstance(current, TaskMetadata):
            raise TypeError(f"cannot add to metadata key {name!r}: it holds a nested TaskMetadata")
        elif isinstance(current, list):
            current.extend(newValues)
        else:
            node._data[last] = [current, *newValues]

    def getScalar(self, key: str) -> Scalar:
        """Return the scalar stored under ``key``, or the last element of a list.

        Parameters
        ----------
        key : `str`
            Possibly dotted key.

        Returns
        -------
        value : `bool`, `int`, `float` or `str`
            The value.

        Raises
        ------
        KeyError
            Raised if there is no such key, or it holds an empty list.
        TypeError
            Raised if ``key`` holds a nested `TaskMetadata`.
        """
        value = self[key]
        if isinstance(value, TaskMetadata):
            raise TypeError(f"metadata key {key!r} holds a nested TaskMetadata, not a scalar")
        if isinstance(value, list):
            if not value:
                raise KeyError(f"metadata key {key!r} holds an empty list")
            return cast(Scalar, value[-1])
        return cast(Scalar, value)

    def getArray(self, key: str) -> list[Scalar]:
        """Return the value stored under ``key`` as a new list.

        Parameters
        ----------
        key : `str`
            Possibly dotted key.

        Returns
        -------
        values : `list`
            The stored list (copied), or a one-element list holding the stored scalar.

        Raises
        ------
        KeyError
            Raised if there is no such key.
        TypeError
            Raised if ``key`` holds a nested `TaskMetadata`.
        """
        value = self[key]
        if isinstance(value, TaskMetadata):
            raise TypeError(f"metadata key {key!r} holds a nested TaskMetadata, not an array")
        return value if isinstance(value, list) else [value]

    def names(self) -> list[str]:
        """Return the fully-qualified keys of all leaves (scalars and lists).

        Returns
        -------
        names : `list` [`str`]
            Dotted keys in insertion order, depth first; nested containers themselves are not
            listed, only their leaves.
        """
        result: list[str] = []
        for key, value in self._data.items():
            if isinstance(value, TaskMetadata):
                result.extend(f"{key}.{name}" for name in value.names())
            else:
                result.append(key)
        return result

    def to_dict(self) -> dict[str, Any]:
        """Return the content as nested plain `dict` objects.

        Returns
        -------
        data : `dict`
            Nested `TaskMetadata` become nested `dict`; lists are copied.
        """
        result: dict[str, Any] = {}
        for key, value in self._data.items():
            if isinstance(value, TaskMetadata):
                result[key] = value.to_dict()
            elif isinstance(value, list):
                result[key] = list(value)
            else:
                result[key] = value
        return result

    def copy(self) -> TaskMetadata:
        """Return a deep copy: nested containers and lists are copied too.

        Returns
        -------
        metadata : `TaskMetadata`
            The copy.
        """
        return TaskMetadata(self.to_dict())
