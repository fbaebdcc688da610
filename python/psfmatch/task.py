# SPDX-License-Identifier: BSD-3-Clause
"""A small, standalone Task framework with the API of ``lsst.pipe.base.Task``.

psfmatch does not depend on lsst-pipe-base; this module provides the part of it the
PSF-matching tasks need, written from the documented behaviour:

`TaskMetadata`
    A hierarchical mapping for the numbers and strings a task records (``spatialKernelSum``,
    timing information, ...). Dotted keys (``md["a.b"]``) address nested containers.
`Struct`
    A plain attribute container, used for the results of ``run``-style methods.
`Task`
    The base class of every psfmatch task: configuration, a name within a hierarchy of
    subtasks, a logger, metadata and timers. `lsst.utils.timer.timeMethod` works as a
    decorator on its methods.

Loggers
-------
Every task has a ``log`` attribute, an `lsst.utils.logging.LsstLogAdapter`:

- a top-level task without a ``log`` argument logs to ``"psfmatch.<name>"``;
- a top-level task given ``log`` logs to the child ``<log name>.<name>`` of that logger (the
  given logger is used as the parent, as in ``lsst.pipe.base``);
- a subtask logs to the child ``<parent log name>.<name>`` of its parent's logger, so the
  logger names follow the task hierarchy (``psfmatch.top.sub.subsub``); a ``log`` argument
  is ignored when ``parentTask`` is given.

Thus ``logging.getLogger("psfmatch").setLevel(...)`` or
``lsst.utils.logging.trace_set_at("psfmatch", 4)`` reaches every task that was not given a
logger of its own.
"""

from __future__ import annotations

__all__ = ["Struct", "Task", "TaskMetadata"]

import contextlib
import logging
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias, cast

import numpy as np
from lsst.pex.config import Config, ConfigurableField
from lsst.utils.logging import LsstLogAdapter, getLogger
from lsst.utils.timer import logInfo

Scalar: TypeAlias = bool | int | float | str
"""The types of a single metadata value."""

MetadataValue: TypeAlias = "Scalar | list[Scalar] | TaskMetadata"
"""The types stored in a `TaskMetadata`: a scalar, a list of scalars, or a nested container."""

_LOG_ROOT = "psfmatch"
"""Name of the parent logger of all top-level tasks that are not given a logger."""


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


class Struct:
    """A simple container of named attributes.

    Parameters
    ----------
    **keyArgs
        Names and values of the attributes.

    Raises
    ------
    RuntimeError
        Raised if a name starts with ``"__"`` or is the name of a `Struct` method.

    Examples
    --------
    >>> result = Struct(kernel=1, background=2)
    >>> result.kernel
    1
    >>> result.getDict()
    {'kernel': 1, 'background': 2}
    """

    _RESERVED: ClassVar[frozenset[str]] = frozenset({"getDict", "mergeItems", "copy"})

    def __init__(self, **keyArgs: Any) -> None:
        for name, value in keyArgs.items():
            self._safeSet(name, value)

    if TYPE_CHECKING:
        # Attributes are set per instance; tell type checkers any name may exist.
        def __getattr__(self, name: str) -> Any: ...

    def _safeSet(self, name: str, value: Any) -> None:
        """Set a new attribute, refusing names that would hide methods or dunders."""
        if name.startswith("__") or name in self._RESERVED:
            raise RuntimeError(f"invalid Struct item name {name!r}: reserved")
        setattr(self, name, value)

    def getDict(self) -> dict[str, Any]:
        """Return the attributes as a new `dict`.

        Returns
        -------
        items : `dict`
            Attribute name to value (a shallow copy).
        """
        return dict(self.__dict__)

    def mergeItems(self, struct: Struct, *nameList: str) -> None:
        """Copy the named attributes of another `Struct` into this one.

        Parameters
        ----------
        struct : `Struct`
            The source.
        *nameList : `str`
            Names of the attributes to copy.

        Raises
        ------
        RuntimeError
            Raised if this struct already has one of the attributes.
        AttributeError
            Raised if ``struct`` lacks one of the attributes.
        """
        for name in nameList:
            if name in self.__dict__:
                raise RuntimeError(f"cannot merge item {name!r}: this Struct already has it")
            self._safeSet(name, getattr(struct, name))

    def copy(self) -> Struct:
        """Return a shallow copy.

        Returns
        -------
        struct : `Struct`
            A new struct with the same attributes (the values are not copied).
        """
        return Struct(**self.getDict())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Struct):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]

    def __len__(self) -> int:
        """Return the number of attributes."""
        return len(self.__dict__)

    def __repr__(self) -> str:
        items = ", ".join(f"{name}={value!r}" for name, value in self.__dict__.items())
        return f"{type(self).__name__}({items})"


def _unpickleTask(cls: type[Task], keyArgs: dict[str, Any]) -> Task:
    """Rebuild a task from its constructor arguments (used by `Task.__reduce__`)."""
    return cls(**keyArgs)


class Task:
    """Base class for psfmatch tasks: configuration, subtasks, logging, metadata and timers.

    Parameters
    ----------
    config : `lsst.pex.config.Config`, optional
        Configuration of this task, an instance of ``self.ConfigClass``. If `None`, a subtask
        takes the corresponding config of its parent (``parentTask.config.<name>``, if there
        is one) and a top-level task uses ``self.ConfigClass()``.
    name : `str`, optional
        Brief name of the task (no dots). If `None`, ``self._DefaultName`` is used.
    parentTask : `Task`, optional
        The parent task, if this is a subtask.
    log : `logging.Logger` or `lsst.utils.logging.LsstLogAdapter`, optional
        Parent logger of a top-level task; ignored for subtasks (see the module docstring).

    Raises
    ------
    RuntimeError
        Raised if ``name`` is `None` and the class has no ``_DefaultName``, or if ``config``
        is `None` and the class has no ``ConfigClass``.
    ValueError
        Raised if ``name`` is empty or contains a dot.

    Attributes
    ----------
    config : `lsst.pex.config.Config`
        The configuration.
    metadata : `TaskMetadata`
        Metadata recorded by this task (not its subtasks; see `getFullMetadata`).
    log : `lsst.utils.logging.LsstLogAdapter`
        The task's logger.

    Notes
    -----
    Subclasses set the class attributes ``ConfigClass`` (a `lsst.pex.config.Config` subclass)
    and usually ``_DefaultName``, and create their subtasks in ``__init__`` with
    `makeSubtask`::

        class TopConfig(lsst.pex.config.Config):
            sub = SubTask.makeField("the subtask")

        class TopTask(Task):
            ConfigClass = TopConfig
            _DefaultName = "top"

            def __init__(self, **kwargs):
                super().__init__(**kwargs)
                self.makeSubtask("sub")

    All tasks of a hierarchy share one dictionary of full task names to weak references
    (`getTaskDict`).
    """

    ConfigClass: ClassVar[type[Config]]
    _DefaultName: ClassVar[str]

    def __init__(
        self,
        config: Config | None = None,
        *,
        name: str | None = None,
        parentTask: Task | None = None,
        log: logging.Logger | LsstLogAdapter | None = None,
    ) -> None:
        if name is None:
            name = getattr(self, "_DefaultName", None)
            if name is None:
                raise RuntimeError(
                    f"{type(self).__name__}: name is required because the class has no _DefaultName"
                )
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"task name must be a non-empty str without dots, got {name!r}")
        self._name: str = name
        self._fullName: str
        self._taskDict: dict[str, weakref.ref[Task]]
        self.log: LsstLogAdapter

        if parentTask is not None:
            self._fullName = f"{parentTask._fullName}.{name}"
            self._taskDict = parentTask._taskDict
            self.log = parentTask.log.getChild(name)
            if config is None:
                config = self._configFromParent(parentTask, name)
        else:
            self._fullName = name
            self._taskDict = {}
            if log is None:
                self.log = getLogger(f"{_LOG_ROOT}.{name}")
            else:
                base = log.logger if isinstance(log, logging.LoggerAdapter) else log
                self.log = getLogger(name, logger=base)

        if config is None:
            configClass = getattr(self, "ConfigClass", None)
            if configClass is None:
                raise RuntimeError(
                    f"{type(self).__name__}: config is required because the class has no "
                    "ConfigClass"
                )
            config = configClass()
        self.config = config
        self._parentTask = parentTask
        self.metadata = TaskMetadata()
        self._taskDict[self._fullName] = weakref.ref(self)

    @staticmethod
    def _configFromParent(parentTask: Task, name: str) -> Config | None:
        """Return ``parentTask.config.<name>`` as a `Config`, or `None` if there is none."""
        field = getattr(parentTask.config, name, None)
        if isinstance(field, Config):
            return field
        # ConfigurableField instances expose the config as ``value``, RegistryField
        # instances the selected one as ``active``.
        for attr in ("value", "active"):
            candidate = getattr(field, attr, None)
            if isinstance(candidate, Config):
                return candidate
        return None

    def getName(self) -> str:
        """Get the name of the task.

        Returns
        -------
        name : `str`
            The brief name, e.g. ``"sub"`` for the subtask with full name ``"top.sub"``.
        """
        return self._name

    def getFullName(self) -> str:
        """Get the task name as a hierarchical name including parent task names.

        Returns
        -------
        fullName : `str`
            The names of the top-level task and each subtask down to this one, separated by
            periods: ``"top"``, ``"top.sub"``, ``"top.sub.sub2"``.
        """
        return self._fullName

    def getTaskDict(self) -> dict[str, weakref.ref[Task]]:
        """Get a dictionary of all tasks as a shallow copy.

        Returns
        -------
        taskDict : `dict` [`str`, `weakref.ref`]
            Full task name to a weak reference to the task, for the top-level task and all
            subtasks, sub-subtasks, etc. The same for every task of the hierarchy.
        """
        return dict(self._taskDict)

    def _iterTasks(self) -> Iterable[Task]:
        """Yield the live tasks of the hierarchy, top-level first."""
        for ref in list(self._taskDict.values()):
            task = ref()
            if task is not None:
                yield task

    def makeSubtask(self, name: str, **keyArgs: Any) -> None:
        """Create a subtask as a new instance as the ``name`` attribute of this task.

        Parameters
        ----------
        name : `str`
            Brief name of the subtask.
        **keyArgs
            Extra keyword arguments used to construct the task. The following arguments are
            provided automatically and cannot be overridden: ``config`` and ``parentTask``.

        Raises
        ------
        TypeError
            Raised if ``config`` or ``parentTask`` is given, or if ``self.config.<name>`` is
            not a `lsst.pex.config.ConfigurableField` or `lsst.pex.config.RegistryField`.
        AttributeError
            Raised if ``self.config`` has no field ``name``.

        Notes
        -----
        The subtask must be defined by ``self.config.<name>``, an instance of
        `lsst.pex.config.ConfigurableField` or `lsst.pex.config.RegistryField`; its ``apply``
        method builds the target task with the field's config.
        """
        for reserved in ("config", "parentTask"):
            if reserved in keyArgs:
                raise TypeError(
                    f"makeSubtask({name!r}): {reserved!r} is provided automatically and "
                    "cannot be overridden"
                )
        try:
            taskField = getattr(self.config, name)
        except AttributeError:
            raise AttributeError(
                f"makeSubtask({name!r}): {type(self.config).__name__} has no field {name!r}"
            ) from None
        if not callable(getattr(taskField, "apply", None)):
            raise TypeError(
                f"makeSubtask({name!r}): {type(self.config).__name__}.{name} must be a "
                f"ConfigurableField or RegistryField, got {type(taskField).__name__}"
            )
        subtask = taskField.apply(name=name, parentTask=self, **keyArgs)
        setattr(self, name, subtask)

    @classmethod
    def makeField(cls, doc: str) -> ConfigurableField[Any]:
        """Make a `lsst.pex.config.ConfigurableField` for this task.

        Parameters
        ----------
        doc : `str`
            Help text for the field.

        Returns
        -------
        configurableField : `lsst.pex.config.ConfigurableField`
            A ``ConfigurableField`` targeting this task, with default ``cls.ConfigClass()``.

        Examples
        --------
        Declare a subtask in the config of another task::

            class OtherTaskConfig(lsst.pex.config.Config):
                aSubtask = ATaskClass.makeField("brief description of task")
        """
        return ConfigurableField(doc=doc, target=cls)

    @contextlib.contextmanager
    def timer(self, name: str, logLevel: int = logging.DEBUG) -> Iterator[None]:
        """Context manager to log performance data for an arbitrary block of code.

        Parameters
        ----------
        name : `str`
            Name of the code being timed; the metadata items are prefixed with it.
        logLevel : `int`, optional
            Log level (a `logging` constant) of the timing messages.

        Notes
        -----
        On entry and exit, `lsst.utils.timer.logInfo` adds to `metadata` the items
        ``<name>StartUtc``, ``<name>StartCpuTime``, ``<name>StartUserTime``,
        ``<name>StartSystemTime``, ``<name>StartMaxResidentSetSize``, ... and the same with
        ``End``; each is a list that grows by one element per use. The wall-clock duration is
        logged to ``self.log`` at ``logLevel``. The exit items are recorded even if the block
        raises.

        Examples
        --------
        ::

            with self.timer("someCodeToTime"):
                pass  # code to time
        """
        # stacklevel=3 attributes the timer log messages (logInfo adds two frames of its own)
        # to the code containing the ``with`` statement rather than to this module.
        logInfo(obj=self, prefix=name + "Start", logLevel=logLevel, stacklevel=3)
        start = time.perf_counter()
        try:
            yield
        finally:
            duration = time.perf_counter() - start
            logInfo(obj=self, prefix=name + "End", logLevel=logLevel, stacklevel=3)
            self.log.log(logLevel, "%s took %.6f s", name, duration, stacklevel=3)

    def getFullMetadata(self) -> TaskMetadata:
        """Get metadata for all tasks.

        Returns
        -------
        metadata : `TaskMetadata`
            The keys are the full task names with ``.`` replaced by ``:``; the values are the
            ``metadata`` of the top-level task and all subtasks, sub-subtasks, etc. (the live
            objects, not copies).

        Notes
        -----
        An item is therefore addressed as ``topLevelTaskName:subtaskName.itemName``; the
        ``:`` disambiguates a subtask from a metadata item of the same name.
        """
        fullMetadata = TaskMetadata()
        for task in self._iterTasks():
            fullMetadata[task.getFullName().replace(".", ":")] = task.metadata
        return fullMetadata

    def emptyMetadata(self) -> None:
        """Empty (clear) the metadata for this task and all subtasks.

        Notes
        -----
        Every task of the hierarchy below this one (and this one) gets a new, empty
        `TaskMetadata`.
        """
        prefix = self._fullName + "."
        for task in self._iterTasks():
            if task is self or task._fullName.startswith(prefix):
                task.metadata = TaskMetadata()

    def getSchemaCatalogs(self) -> dict[str, Any]:
        """Get the schemas generated by this task.

        Returns
        -------
        schemaCatalogs : `dict`
            Dataset type to an empty catalog. The default implementation returns an empty
            `dict`; subclasses that use schemas must override this method.
        """
        return {}

    def getAllSchemaCatalogs(self) -> dict[str, Any]:
        """Get schema catalogs for all tasks in the hierarchy, combined into a single dict.

        Returns
        -------
        schemaCatalogs : `dict`
            The union of `getSchemaCatalogs` over the top-level task and all subtasks; the
            same whichever task of the hierarchy it is called on.
        """
        schemaDict: dict[str, Any] = {}
        for task in self._iterTasks():
            schemaDict.update(task.getSchemaCatalogs())
        return schemaDict

    def _reduce_kwargs(self) -> dict[str, Any]:
        """Return the constructor keyword arguments needed to rebuild this task by pickling.

        Subclasses whose constructors need more arguments extend the returned dict.
        """
        return {"config": self.config, "name": self._name, "parentTask": self._parentTask}

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle the task as its constructor arguments."""
        return (_unpickleTask, (type(self), self._reduce_kwargs()))
