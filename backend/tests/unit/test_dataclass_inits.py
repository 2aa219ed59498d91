"""The build writes out the `__init__` of the compiled modules' dataclasses (native_sources.py):
each must build what dataclass would generate: every field, keyword-only, with its default, each
value in its own field, and the rest of the dataclass (frozen, eq, replace, copy, pickle)
untouched. The sources declare each field once, in the class's annotations."""

from __future__ import annotations

import ast
import copy
import dataclasses
import importlib
import pickle
import re
import types
import typing
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import Enum
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, cast

import native_sources
import pytest

from upstox_bot import _native, domain

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "upstox_bot"


def _compiled_modules() -> list[str]:
    setup = (PACKAGE.parents[1] / "setup.py").read_text()
    listed = re.search(r"^COMPILED = \((.*?)^\)", setup, re.M | re.S)
    assert listed is not None
    paths = re.findall(r'"upstox_bot/([\w/]+)\.py"', listed.group(1))
    return ["upstox_bot." + path.replace("/", ".") for path in paths]


def _source(module: str) -> str:
    return PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py").read_text()


INDEX = native_sources.index((m, _source(m)) for m in _compiled_modules())
GENERATED = [
    (
        info.module,
        info.name,
        typing.cast(ast.FunctionDef, ast.parse(native_sources.init_source(info, INDEX)).body[0]),
    )
    for info in INDEX.values()
    if native_sources.needs_init(info, INDEX)
]


def test_no_compiled_dataclass_writes_its_init() -> None:
    """A field is declared once, in the class's annotations: the build writes the rest."""
    written = sorted(f"{i.module}.{i.name}" for i in INDEX.values() if i.writes_init)
    assert written == []


def test_the_hot_values_get_a_written_init() -> None:
    """The values a backtest builds by the hundred thousand are among them."""
    names = {name for _, name, _ in GENERATED}
    assert {"Candle", "Signal", "RiskDecision", "OrderIntent", "Order", "Fill", "Trade"} <= names
    assert {"StrategySignal", "Route", "EntryRequest", "BookState", "Sizing"} <= names
    # The feed decoders allocate Ticks and write their fields: Tick keeps dataclass's __init__.
    assert "Tick" not in names


def test_the_build_compiles_the_written_inits() -> None:
    if not _native.compiled(domain):
        pytest.skip("the sources run: dataclass's own __init__ is the one in use")
    for module, name, _ in GENERATED:
        init = vars(importlib.import_module(module))[name].__init__
        assert not isinstance(init, types.FunctionType), f"{name}.__init__ is not compiled"
    assert isinstance(domain.Tick.__init__, types.FunctionType)


def _value(hint: Any, index: int, flip: bool) -> Any:
    """A value of type `hint`, distinct for each field index."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, UnionType):
        return _value(next(a for a in args if a is not NoneType), index, flip)
    if origin is not None and isinstance(origin, type) and issubclass(origin, Mapping):
        return {f"k{index}": float(index)}
    if origin in (list, tuple):
        return origin([f"e{index}"])
    if hint is bool:
        return (index % 2 == 0) != flip
    if hint is int:
        return 1_000 + index
    if hint is float:
        return index + 0.25
    if hint is str:
        return f"v{index}"
    if hint is datetime:
        return datetime(2026, 1, 1, 9, index % 60, tzinfo=UTC)
    if hint is date:
        return date(2026, 1, 1 + index % 28)
    if hint is time:
        return time(9, index % 60)
    if hint is Decimal:
        return Decimal(index) / 4
    if isinstance(hint, type) and issubclass(hint, Enum):
        members = list(hint)
        return members[index % len(members)]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, flip)
    supertype = getattr(hint, "__supertype__", None)  # a NewType
    if supertype is not None:
        return _value(supertype, index, flip)
    raise AssertionError(f"no test value for {hint!r}")


def _hints(cls: type[Any]) -> dict[str, Any]:
    """The fields' types as the source writes them (a compiled class keeps only their erasure),
    its dataclass bases' included."""
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if not (dataclasses.is_dataclass(klass) and klass.__module__.startswith("upstox_bot.")):
            continue
        module = importlib.import_module(klass.__module__)
        path = PACKAGE.joinpath(*klass.__module__.split(".")[1:]).with_suffix(".py")
        tree = ast.parse(path.read_text(), str(path))
        node = next(
            n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == klass.__name__
        )
        hints.update(
            {
                a.target.id: eval(ast.unparse(a.annotation), vars(module))  # noqa: S307 - our source
                for a in node.body
                if isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name)
            }
        )
    return hints


def _build(cls: type[Any], flip: bool) -> Any:
    hints = _hints(cls)
    values = {f.name: _value(hints[f.name], i, flip) for i, f in enumerate(dataclasses.fields(cls))}
    return cls(**values)


@pytest.mark.parametrize(("module", "name", "init"), GENERATED, ids=[n for _, n, _ in GENERATED])
def test_written_init_takes_the_fields(module: str, name: str, init: ast.FunctionDef) -> None:
    namespace = vars(importlib.import_module(module))
    cls = namespace[name]
    fields = [f for f in dataclasses.fields(cls) if f.init]
    positional = [f for f in fields if not f.kw_only]
    keyword = [f for f in fields if f.kw_only]
    params = init.args
    assert not params.posonlyargs, f"{name}.__init__ takes no positional-only field"
    assert params.vararg is None
    assert params.kwarg is None
    assert [a.arg for a in params.args] == ["self", *(f.name for f in positional)]
    assert [a.arg for a in params.kwonlyargs] == [f.name for f in keyword]
    padding: list[ast.expr | None] = [None] * (len(positional) - len(params.defaults))
    defaults = [*padding, *params.defaults, *params.kw_defaults]
    for f, default in zip(positional + keyword, defaults, strict=True):
        if f.default is not dataclasses.MISSING:
            assert default is not None, f"{name}.{f.name} must default to {f.default!r}"
            value = eval(ast.unparse(default), namespace)  # noqa: S307 - our own source
            assert value == f.default, f"{name}.{f.name}"
        elif f.default_factory is not dataclasses.MISSING:
            assert default is not None, f"{name}.{f.name} must default to None"
            assert ast.unparse(default) == "None", f"{name}.{f.name} must default to None"
        else:
            assert default is None, f"{name}.{f.name} is required"


@pytest.mark.parametrize(("module", "name", "init"), GENERATED, ids=[n for _, n, _ in GENERATED])
def test_written_init_sets_each_field(module: str, name: str, init: ast.FunctionDef) -> None:
    cls = vars(importlib.import_module(module))[name]
    hints = _hints(cls)
    fields = dataclasses.fields(cls)
    try:
        _build(cls, False)
    except AssertionError as unfillable:  # arrays, protocols: the signature test stands
        pytest.skip(str(unfillable))
    for flip in (False, True):
        given = {f.name: _value(hints[f.name], i, flip) for i, f in enumerate(fields)}
        built = cls(**given)
        assert {f.name: getattr(built, f.name) for f in fields} == given
        assert built == cls(**given)
        assert dataclasses.replace(built) == built
    # Only the required fields: the others take their defaults, a factory's a new value each.
    required = {
        f.name: _value(hints[f.name], i, False)
        for i, f in enumerate(fields)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    first, second = cls(**required), cls(**required)
    for f in fields:
        if f.default is not dataclasses.MISSING:
            assert getattr(first, f.name) == f.default, f"{name}.{f.name}"
        elif f.default_factory is not dataclasses.MISSING:
            assert getattr(first, f.name) == f.default_factory(), f"{name}.{f.name}"
            assert getattr(first, f.name) is not getattr(second, f.name)
    if _params(cls).frozen:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(first, fields[0].name, getattr(second, fields[0].name))
    with pytest.raises(TypeError):
        cls(**required, not_a_field=1)


DOMAIN_VALUES = [
    cls
    for cls in vars(domain).values()
    if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == domain.__name__
]
COPIED = sorted(
    {*DOMAIN_VALUES, *(vars(importlib.import_module(m))[n] for m, n, _ in GENERATED)},
    key=lambda c: c.__qualname__,
)


@pytest.mark.parametrize("cls", COPIED, ids=[c.__name__ for c in COPIED])
def test_copies_and_pickles(cls: type[Any]) -> None:
    """Compiled, such a class cannot be allocated empty (its __init__ runs) or have its fields
    set afterwards (frozen): copies and pickles go through its constructor."""
    try:
        _build(cls, False)
    except AssertionError as unfillable:  # arrays, protocols
        pytest.skip(str(unfillable))
    for flip in (False, True):
        built = _build(cls, flip)
        pickled = pickle.loads(pickle.dumps(built))  # noqa: S301 - our own bytes
        for twin in (copy.copy(built), copy.deepcopy(built), pickled):
            assert type(twin) is cls
            assert twin == built
            assert twin is not built


def _params(cls: type) -> Any:
    """A dataclass's parameters (typeshed's DataclassInstance does not declare them)."""
    return cast(Any, cls).__dataclass_params__


COMPILED_FROZEN = sorted(
    (
        cls
        for module in _compiled_modules()
        for cls in vars(importlib.import_module(module)).values()
        if isinstance(cls, type)
        and dataclasses.is_dataclass(cls)
        and cls.__module__ == module
        and _params(cls).frozen
    ),
    key=lambda c: c.__qualname__,
)


@pytest.mark.parametrize("cls", COMPILED_FROZEN, ids=[c.__name__ for c in COMPILED_FROZEN])
def test_compiled_frozen_values_copy_through_their_constructor(cls: type[Any]) -> None:
    """Compiled, a frozen dataclass cannot have its fields set after allocation, which is how
    copy and pickle restore one: each rebuilds through its constructor instead."""
    reduce: object = cls.__reduce__
    assert reduce is not object.__reduce__, f"{cls.__name__} needs __reduce__"
    try:
        built = _build(cls, False)
    except (AssertionError, TypeError, ValueError):
        return  # fields this test cannot fill (arrays, protocols): the __reduce__ check stands
    pickled = pickle.loads(pickle.dumps(built))  # noqa: S301 - our own bytes
    for twin in (copy.copy(built), copy.deepcopy(built), pickled):
        assert type(twin) is cls
        assert twin == built


@pytest.mark.parametrize(("module", "name", "init"), GENERATED, ids=[n for _, n, _ in GENERATED])
def test_values_with_required_fields_reduce_through_their_constructor(
    module: str, name: str, init: ast.FunctionDef
) -> None:
    """Compiled, a class whose __init__ needs fields cannot be allocated empty, which is how
    copy and pickle start: it must rebuild through its constructor."""
    cls = vars(importlib.import_module(module))[name]
    required = [
        f
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if required:
        assert cls.__reduce__ is not object.__reduce__, f"{name} needs __reduce__"
