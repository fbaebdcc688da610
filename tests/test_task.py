# SPDX-License-Identifier: BSD-3-Clause
"""Tests of the standalone Task framework (psfmatch.task) and debug switches (psfmatch.debug)."""

import logging
import pickle
import weakref

import lsst.pex.config as pexConfig
import numpy as np
import pytest
from lsst.utils.timer import timeMethod

import psfmatch.debug
from psfmatch.task import Struct, Task, TaskMetadata

# The items lsst.utils.timer.logInfo records for each prefix (besides "<prefix>Utc").
USAGE_ITEMS = ("CpuTime", "UserTime", "SystemTime", "MaxResidentSetSize")


class SubSubConfig(pexConfig.Config):
    value = pexConfig.Field(dtype=int, default=3, doc="a number")


class SubSubTask(Task):
    ConfigClass = SubSubConfig
    _DefaultName = "subsub"

    def __init__(self, extra=None, **kwargs):
        super().__init__(**kwargs)
        self.extra = extra

    def getSchemaCatalogs(self):
        return {"subsubCatalog": "subsub"}


class SubConfig(pexConfig.Config):
    subsub = SubSubTask.makeField("the sub-subtask")
    factor = pexConfig.Field(dtype=float, default=2.0, doc="a factor")


class SubTask(Task):
    ConfigClass = SubConfig
    _DefaultName = "sub"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.makeSubtask("subsub", extra="hello")

    def getSchemaCatalogs(self):
        return {"subCatalog": "sub"}

    @timeMethod
    def run(self, x):
        self.metadata["lastX"] = x
        return Struct(y=x * self.config.factor)


class TopConfig(pexConfig.Config):
    sub = SubTask.makeField("the subtask")


class TopTask(Task):
    ConfigClass = TopConfig
    _DefaultName = "top"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.makeSubtask("sub")


@pytest.fixture
def top():
    return TopTask()


def test_names(top):
    assert top.getName() == "top"
    assert top.sub.getName() == "sub"
    assert top.sub.subsub.getName() == "subsub"
    assert top.getFullName() == "top"
    assert top.sub.getFullName() == "top.sub"
    assert top.sub.subsub.getFullName() == "top.sub.subsub"
    assert TopTask(name="other").getFullName() == "other"


def test_subtask_gets_field_config_and_extra_args(top):
    assert isinstance(top.config, TopConfig)
    assert isinstance(top.sub.config, SubConfig)
    assert top.sub.config is top.config.sub.value
    assert top.sub.subsub.config is top.config.sub.subsub.value
    assert top.sub.subsub.extra == "hello"


def test_config_overrides_reach_subtasks():
    config = TopConfig()
    config.sub.subsub.value = 7
    top = TopTask(config=config)
    assert top.sub.subsub.config.value == 7


def test_retarget_subtask():
    class OtherSubSubTask(SubSubTask):
        pass

    config = TopConfig()
    config.sub.subsub.retarget(OtherSubSubTask)
    top = TopTask(config=config)
    assert type(top.sub.subsub) is OtherSubSubTask
    assert top.sub.subsub.getFullName() == "top.sub.subsub"


def test_registry_field_subtask():
    registry = pexConfig.makeRegistry(doc="subtasks")
    registry.register("subsub", SubSubTask)

    class RegConfig(pexConfig.Config):
        thing = registry.makeField("a registry subtask", default="subsub")

    class RegTask(Task):
        ConfigClass = RegConfig
        _DefaultName = "reg"

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.makeSubtask("thing")

    task = RegTask()
    assert isinstance(task.thing, SubSubTask)
    assert task.thing.getFullName() == "reg.thing"
    assert task.thing.config is task.config.thing.active


def test_direct_subtask_construction_uses_parent_config(top):
    top.config.sub.subsub.value = 11
    direct = SubSubTask(name="subsub", parentTask=top.sub)
    assert direct.config.value == 11


def test_task_dict(top):
    taskDict = top.getTaskDict()
    assert set(taskDict) == {"top", "top.sub", "top.sub.subsub"}
    for ref in taskDict.values():
        assert isinstance(ref, weakref.ref)
    assert taskDict["top"]() is top
    assert taskDict["top.sub"]() is top.sub
    assert taskDict["top.sub.subsub"]() is top.sub.subsub
    # Every task of the hierarchy sees the same dictionary...
    assert top.sub.subsub.getTaskDict() == taskDict
    # ...but gets a copy it can modify without effect.
    taskDict.clear()
    assert len(top.getTaskDict()) == 3
    assert top.getTaskDict() is not top.getTaskDict()


def test_separate_hierarchies_do_not_share(top):
    other = TopTask(name="other")
    assert set(other.getTaskDict()) == {"other", "other.sub", "other.sub.subsub"}
    assert set(top.getTaskDict()) == {"top", "top.sub", "top.sub.subsub"}


def test_full_metadata(top):
    top.metadata["a"] = 1
    top.sub.metadata["b"] = 2.5
    top.sub.subsub.metadata.add("c", "x")
    full = top.sub.getFullMetadata()
    assert set(full.keys()) == {"top", "top:sub", "top:sub:subsub"}
    assert full["top:sub"] is top.sub.metadata
    assert full["top.a"] == 1
    assert full["top:sub.b"] == 2.5
    assert full["top:sub:subsub.c"] == ["x"]
    assert set(full.names()) == {"top.a", "top:sub.b", "top:sub:subsub.c"}


def test_empty_metadata(top):
    for task in (top, top.sub, top.sub.subsub):
        task.metadata["x"] = 1
    top.emptyMetadata()
    for task in (top, top.sub, top.sub.subsub):
        assert isinstance(task.metadata, TaskMetadata)
        assert len(task.metadata) == 0


def test_empty_metadata_of_subtask_leaves_parent(top):
    for task in (top, top.sub, top.sub.subsub):
        task.metadata["x"] = 1
    top.sub.emptyMetadata()
    assert "x" in top.metadata
    assert len(top.sub.metadata) == 0
    assert len(top.sub.subsub.metadata) == 0


def test_schema_catalogs(top):
    assert Task.getSchemaCatalogs(top) == {}
    assert top.getSchemaCatalogs() == {}
    expected = {"subCatalog": "sub", "subsubCatalog": "subsub"}
    assert top.getAllSchemaCatalogs() == expected
    assert top.sub.subsub.getAllSchemaCatalogs() == expected


@pytest.mark.parametrize("reserved", ["config", "parentTask"])
def test_make_subtask_refuses_reserved_arguments(top, reserved):
    with pytest.raises(TypeError, match=f"'{reserved}' is provided automatically"):
        top.makeSubtask("sub", **{reserved: None})


def test_make_subtask_errors(top):
    with pytest.raises(AttributeError, match="TopConfig has no field 'nothing'"):
        top.makeSubtask("nothing")

    class PlainConfig(pexConfig.Config):
        number = pexConfig.Field(dtype=int, default=1, doc="not a task")

    class PlainTask(Task):
        ConfigClass = PlainConfig
        _DefaultName = "plain"

    with pytest.raises(TypeError, match="must be a ConfigurableField or RegistryField"):
        PlainTask().makeSubtask("number")


def test_make_field():
    field = SubTask.makeField("doc text")
    assert isinstance(field, pexConfig.ConfigurableField)
    assert field.target is SubTask
    assert field.doc == "doc text"

    class HostConfig(pexConfig.Config):
        worker = SubTask.makeField("a worker")

    config = HostConfig()
    assert isinstance(config.worker.value, SubConfig)
    assert config.worker.target is SubTask
    config.worker.factor = 5.0
    config.validate()
    task = config.worker.apply(name="worker")
    assert task.config.factor == 5.0
    assert task.run(2).y == 10.0


def test_construction_errors():
    class NoNameTask(Task):
        ConfigClass = SubSubConfig

    with pytest.raises(RuntimeError, match="name is required"):
        NoNameTask()
    assert NoNameTask(name="ok").getName() == "ok"

    class NoConfigTask(Task):
        _DefaultName = "noConfig"

    with pytest.raises(RuntimeError, match="config is required"):
        NoConfigTask()
    assert NoConfigTask(config=SubSubConfig()).config.value == 3

    with pytest.raises(ValueError, match="without dots"):
        SubSubTask(name="a.b")


def test_loggers(top):
    assert top.log.name == "psfmatch.top"
    assert top.sub.log.name == "psfmatch.top.sub"
    assert top.sub.subsub.log.name == "psfmatch.top.sub.subsub"
    given = TopTask(log=logging.getLogger("myapp"))
    assert given.log.name == "myapp.top"
    assert given.sub.subsub.log.name == "myapp.top.sub.subsub"


def test_timer_records_metadata(top, caplog):
    with caplog.at_level(logging.DEBUG, logger="psfmatch.top"):
        with top.timer("block"):
            pass
        with top.timer("block"):
            pass
    md = top.metadata
    for prefix in ("blockStart", "blockEnd"):
        assert len(md.getArray(prefix + "Utc")) == 2
        for item in USAGE_ITEMS:
            assert len(md.getArray(prefix + item)) == 2
    assert md.getScalar("blockEndCpuTime") >= md.getScalar("blockStartCpuTime")
    assert "nodeName" in md
    messages = [r.getMessage() for r in caplog.records if r.name == "psfmatch.top"]
    assert sum(m.startswith("block took ") for m in messages) == 2
    # The duration message is attributed to this file, not to psfmatch/task.py.
    record = next(r for r in caplog.records if r.getMessage().startswith("block took "))
    assert record.pathname == __file__


def test_timer_records_end_on_exception(top):
    with pytest.raises(ZeroDivisionError), top.timer("failing"):
        1 / 0  # noqa: B018
    assert "failingEndCpuTime" in top.metadata


def test_time_method(monkeypatch, top):
    monkeypatch.delenv("LSST_UTILS_DISABLE_TIMER", raising=False)

    class TimedTask(Task):
        ConfigClass = SubSubConfig
        _DefaultName = "timed"

        @timeMethod
        def run(self):
            return Struct(value=self.config.value)

    task = TimedTask()
    assert task.run().value == 3
    assert task.run().value == 3
    for prefix in ("runStart", "runEnd"):
        assert len(task.metadata.getArray(prefix + "Utc")) == 2
        for item in USAGE_ITEMS:
            assert len(task.metadata.getArray(prefix + item)) == 2
    full = task.getFullMetadata()
    assert "timed.runEndCpuTime" in full.names()


def test_pickle_top_level_task():
    config = TopConfig()
    config.sub.factor = 3.0
    task = TopTask(config=config, name="pickled")
    copy = pickle.loads(pickle.dumps(task))
    assert copy.getFullName() == "pickled"
    assert copy.sub.config.factor == 3.0
    assert set(copy.getTaskDict()) == {"pickled", "pickled.sub", "pickled.sub.subsub"}


def test_metadata_nested_keys():
    md = TaskMetadata()
    md["a.b.c"] = 1
    md["a.d"] = "text"
    md["top"] = 2.5
    assert isinstance(md["a"], TaskMetadata)
    assert isinstance(md["a.b"], TaskMetadata)
    assert md["a.b.c"] == 1
    assert md["a"]["b"]["c"] == 1
    assert "a.b.c" in md
    assert "a.b" in md
    assert "a.x" not in md
    assert "top.x" not in md
    assert "" not in md
    assert 3 not in md
    assert len(md) == 2
    assert list(md) == ["a", "top"]
    assert list(md.keys()) == ["a", "top"]
    assert [k for k, _ in md.items()] == ["a", "top"]
    assert md.get("a.b.c") == 1
    assert md.get("a.zz", 42) == 42
    assert md.get("missing") is None
    assert md.names() == ["a.b.c", "a.d", "top"]
    assert md.to_dict() == {"a": {"b": {"c": 1}, "d": "text"}, "top": 2.5}
    del md["a.b.c"]
    assert "a.b.c" not in md
    assert "a.b" in md
    with pytest.raises(KeyError):
        md["nothing"]
    with pytest.raises(KeyError):
        md["top.below"]
    with pytest.raises(KeyError, match="empty component"):
        md["a..b"] = 1
    with pytest.raises(TypeError, match="'top' holds a value"):
        md["top.below"] = 1


def test_metadata_add_get_array_get_scalar():
    md = TaskMetadata()
    md.add("x", 1)
    md.add("x", 2)
    assert md["x"] == [1, 2]
    assert md.getArray("x") == [1, 2]
    assert md.getScalar("x") == 2
    md["s"] = 5
    assert md.getScalar("s") == 5
    assert md.getArray("s") == [5]
    md.add("s", 6)
    assert md.getArray("s") == [5, 6]
    md.add("nested.list", [1.0, 2.0])
    md.add("nested.list", (3.0,))
    assert md.getArray("nested.list") == [1.0, 2.0, 3.0]
    # Reading returns copies: the stored list is changed only through add().
    md.getArray("x").append(99)
    md["x"].append(99)
    assert md["x"] == [1, 2]
    with pytest.raises(TypeError, match="nested TaskMetadata"):
        md.getScalar("nested")
    with pytest.raises(TypeError, match="nested TaskMetadata"):
        md.getArray("nested")
    with pytest.raises(TypeError, match="nested TaskMetadata"):
        md.add("nested", 1)
    with pytest.raises(KeyError):
        md.getScalar("missing")
    md["empty"] = []
    with pytest.raises(KeyError, match="empty list"):
        md.getScalar("empty")


def test_metadata_values():
    md = TaskMetadata()
    md["i"] = np.int64(3)
    md["f"] = np.float32(0.5)
    md["b"] = np.bool_(True)
    md["arr"] = np.array([1, 2, 3])
    assert type(md["i"]) is int
    assert type(md["f"]) is float
    assert md["b"] is True
    assert md["arr"] == [1, 2, 3]
    assert all(type(v) is int for v in md["arr"])
    md["d"] = {"p": 1, "q": {"r": "s"}}
    assert md["d.q.r"] == "s"
    with pytest.raises(TypeError, match="must be a bool, int, float or str"):
        md["bad"] = None
    with pytest.raises(TypeError, match="must be a bool, int, float or str"):
        md["bad"] = [object()]
    with pytest.raises(TypeError, match="must be a bool, int, float or str"):
        md.add("bad", object())
    with pytest.raises(TypeError, match="keys must be str"):
        md[1] = 1


def test_metadata_copy_and_equality():
    md = TaskMetadata({"a": 1, "b.c": [1, 2]})
    copy = md.copy()
    assert copy == md
    assert copy is not md
    copy.add("b.c", 3)
    copy["a"] = 5
    assert md.to_dict() == {"a": 1, "b": {"c": [1, 2]}}
    assert copy.to_dict() == {"a": 5, "b": {"c": [1, 2, 3]}}
    assert "TaskMetadata(" in repr(md)


def test_struct():
    s = Struct(a=1, b=[2])
    assert s.a == 1
    assert len(s) == 2
    assert s.getDict() == {"a": 1, "b": [2]}
    assert repr(s) == "Struct(a=1, b=[2])"
    assert s == Struct(a=1, b=[2])
    assert s != Struct(a=1)
    assert s != {"a": 1, "b": [2]}
    c = s.copy()
    assert c == s and c is not s
    assert c.b is s.b  # shallow copy
    c.a = 10
    assert s.a == 1
    other = Struct(x=5, y=6, a=7)
    s.mergeItems(other, "x", "y")
    assert s.getDict() == {"a": 1, "b": [2], "x": 5, "y": 6}
    with pytest.raises(RuntimeError, match="already has it"):
        s.mergeItems(other, "a")
    with pytest.raises(AttributeError):
        s.mergeItems(other, "nothere")
    with pytest.raises(RuntimeError, match="reserved"):
        Struct(__x=1)
    with pytest.raises(RuntimeError, match="reserved"):
        Struct(getDict=1)


def test_debug_info_defaults_false():
    info = psfmatch.debug.getInfo("psfmatch.some_module")
    assert isinstance(info, psfmatch.debug.Info)
    for switch in ("display", "maskTransparency", "displayCandidates", "showBadCandidates"):
        assert getattr(info, switch) is False
    info.display = True
    assert info.display is True
    # Underscore names are not switches: protocols such as copy keep working.
    with pytest.raises(AttributeError):
        info._private  # noqa: B018
    assert "display" in repr(info)


def test_debug_info_replacement(monkeypatch):
    def DebugInfo(name):
        di = psfmatch.debug.getInfo(name)  # the default object, no recursion
        if name == "psfmatch.psf_match":
            di.display = True
            di.maskTransparency = 80
        return di

    monkeypatch.setattr(psfmatch.debug, "Info", DebugInfo)
    info = psfmatch.debug.getInfo("psfmatch.psf_match")
    assert info.display is True
    assert info.maskTransparency == 80
    assert info.displayKernelBasis is False
    assert psfmatch.debug.getInfo("psfmatch.other").display is False

    class MyInfo(psfmatch.debug.DefaultInfo):
        def __init__(self, name):
            super().__init__(name)
            self.displayKernelMosaic = True

    monkeypatch.setattr(psfmatch.debug, "Info", MyInfo)
    assert psfmatch.debug.getInfo("x").displayKernelMosaic is True
    assert psfmatch.debug.getInfo("x").plotKernelCoefficients is False
