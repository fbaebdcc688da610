# SPDX-License-Identifier: BSD-3-Clause
"""A small, standalone Task framework with the API of ``lsst.pipe.base.Task``.

psfmatch does not depend on lsst-pipe-base; this module provides the part of it the
PSF-matching tasks need, written from the documented behaviour:

`TaskMetadata` (defined in `psfmatch._task_metadata`)
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
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from lsst.pex.config import Config, ConfigurableField
from lsst.utils.logging import LsstLogAdapter, getLogger
from lsst.utils.timer import logInfo

from ._task_metadata import TaskMetadata

_LOG_ROOT = "psfmatch"
"""Name of the parent logger of all top-level tasks that are not given a logger."""


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
