"""The sources mypyc compiles: a copy of the package's, with what compiling them needs added.

Two things, so that the sources say neither:

- The built-in strategies (the compiled classes that derive from `Strategy`) are marked
  `mypyc_attr(allow_interpreted_subclasses=True)`: file strategies, which run interpreted,
  may extend them (interpreted code cannot otherwise subclass a compiled class).
- The dataclasses get their `__init__` written out, as follows (and the mutable ones a
  `__copy__` through it).

mypyc compiles a dataclass as a native class, but the methods `dataclasses` generates at import
(`__init__` among them) stay interpreted: every value the hot path builds would pay an
interpreted call, at about ten times the cost of a compiled constructor. So the build compiles a
copy of the sources in which each such dataclass has its `__init__` written out from its
annotations, as dataclass would generate it: every field, keyword-only when the class is, with
its default (None stands for a `default_factory`, which is called for it), frozen ones set
through `object.__setattr__`, then `__post_init__` if the class has one. The sources keep the
fields in one place, the annotations; run interpreted, they use dataclass's own `__init__`.

A dataclass that writes its own `__init__`, is listed in `KEEP_GENERATED_INIT`, or extends or is
extended by a dataclass of another module is left as it is. tests/unit/test_dataclass_inits.py
holds the written constructors to dataclass's, and the sources to declaring no `__init__`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# Compiled classes deriving from these are extended by interpreted code (file strategies).
SUBCLASSED_BASES = {"Strategy"}
_SUBCLASSABLE = "@mypyc_attr(allow_interpreted_subclasses=True)"

# Dataclasses whose constructor stays dataclass's, with why.
KEEP_GENERATED_INIT = {
    # The feed decoders allocate Ticks and write their fields directly; a compiled __init__
    # would run at allocation (a native class's __new__ calls it) without the fields.
    "upstox_bot.domain.Tick",
}


@dataclass(frozen=True)
class Field:
    name: str
    annotation: str
    default: str | None  # the default's source; None: required, or a factory
    factory: str | None  # the default_factory's source
    init: bool


@dataclass(frozen=True)
class DataclassInfo:
    module: str
    name: str
    bases: tuple[str, ...]
    own_fields: tuple[Field, ...]
    frozen: bool
    kw_only: bool
    post_init: bool
    writes_init: bool


def _dataclass_params(node: ast.ClassDef) -> dict[str, bool] | None:
    """The keyword flags of the class's @dataclass(...) decorator; None if not a dataclass."""
    for decorator in node.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        target = call.func if call is not None else decorator
        if ast.unparse(target) in ("dataclass", "dataclasses.dataclass"):
            params: dict[str, bool] = {}
            for keyword in call.keywords if call is not None else ():
                if keyword.arg is not None:
                    params[keyword.arg] = bool(ast.literal_eval(keyword.value))
            return params
    return None


def _field(statement: ast.AnnAssign) -> Field | None:
    assert isinstance(statement.target, ast.Name)
    annotation = ast.unparse(statement.annotation)
    if annotation.split("[")[0].split(".")[-1] in ("ClassVar", "InitVar", "KW_ONLY"):
        if "ClassVar" in annotation:
            return None
        raise ValueError(f"{statement.target.id}: {annotation} is not supported")
    value = statement.value
    default: str | None = None
    factory: str | None = None
    init = True
    if isinstance(value, ast.Call) and ast.unparse(value.func) in ("field", "dataclasses.field"):
        for keyword in value.keywords:
            if keyword.arg == "default":
                default = ast.unparse(keyword.value)
            elif keyword.arg == "default_factory":
                factory = ast.unparse(keyword.value)
            elif keyword.arg == "init":
                init = bool(ast.literal_eval(keyword.value))
            elif keyword.arg == "kw_only":
                raise ValueError(f"{statement.target.id}: field(kw_only=...) is not supported")
    elif value is not None:
        default = ast.unparse(value)
    return Field(statement.target.id, annotation, default, factory, init)


def dataclasses_of(module: str, source: str) -> list[DataclassInfo]:
    """The dataclasses defined at the top level of a module's source."""
    found = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        params = _dataclass_params(node)
        if params is None:
            continue
        fields = tuple(
            f
            for s in node.body
            if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
            for f in [_field(s)]
            if f is not None
        )
        methods = {s.name for s in node.body if isinstance(s, ast.FunctionDef)}
        found.append(
            DataclassInfo(
                module=module,
                name=node.name,
                bases=tuple(ast.unparse(b) for b in node.bases),
                own_fields=fields,
                frozen=params.get("frozen", False),
                kw_only=params.get("kw_only", False),
                post_init="__post_init__" in methods,
                writes_init="__init__" in methods,
            )
        )
    return found


def all_fields(info: DataclassInfo, by_name: Mapping[str, DataclassInfo]) -> list[Field]:
    """The fields in dataclass's order: the dataclass bases' first, a redefinition in place."""
    fields: dict[str, Field] = {}
    for base in info.bases:
        parent = by_name.get(base.split(".")[-1])
        if parent is None:
            continue
        for f in all_fields(parent, by_name):
            fields[f.name] = f
    for f in info.own_fields:
        fields[f.name] = f
    return list(fields.values())


def init_source(info: DataclassInfo, by_name: Mapping[str, DataclassInfo]) -> str:
    """The `__init__` dataclass would generate for the class, as source."""
    fields = all_fields(info, by_name)
    params: list[str] = []
    body: list[str] = []
    for f in fields:
        if f.init:
            if f.factory is not None:
                params.append(f"{f.name}: ({f.annotation}) | None = None")
                value = f"({f.factory})() if {f.name} is None else {f.name}"
            elif f.default is not None:
                params.append(f"{f.name}: {f.annotation} = {f.default}")
                value = f.name
            else:
                params.append(f"{f.name}: {f.annotation}")
                value = f.name
        elif f.factory is not None:
            value = f"({f.factory})()"
        elif f.default is not None:
            value = f.default
        else:
            continue
        if info.frozen:
            body.append(f"object.__setattr__(self, {f.name!r}, {value})")
        else:
            body.append(f"self.{f.name} = {value}")
    if info.post_init:
        body.append("self.__post_init__()")
    signature = ", ".join(["self", *(["*"] if info.kw_only and params else []), *params])
    lines = [f"def __init__({signature}) -> None:", *(f"    {b}" for b in body or ["pass"])]
    if not info.frozen:
        # A mutable value's copy.copy() through its compiled constructor (a copy by __reduce__
        # costs ten times as much): a broker and a journal each keep their own of every order.
        call = ", ".join(f"{f.name}=self.{f.name}" for f in fields if f.init)
        lines += ["", f"def __copy__(self) -> {info.name}:", f"    return {info.name}({call})"]
    return "\n".join(lines) + "\n"


def expand(module: str, source: str, by_name: Mapping[str, DataclassInfo]) -> str:
    """The module's source with each of its dataclasses' `__init__` written out at the end of
    its class body, and its classes that interpreted code extends marked so (the rest of the
    text, comments and all, as it is)."""
    lines = source.splitlines(keepends=True)
    tree = ast.parse(source)
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    subclassable = False
    for node in reversed(classes):
        info = by_name.get(node.name)
        if info is not None and info.module == module and needs_init(info, by_name):
            indent = " " * (node.body[0].col_offset if node.body else node.col_offset + 4)
            init = "".join(f"{indent}{line}\n" for line in init_source(info, by_name).splitlines())
            assert node.end_lineno is not None
            lines.insert(node.end_lineno, "\n" + init)
        if {ast.unparse(b).split(".")[-1] for b in node.bases} & SUBCLASSED_BASES:
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            lines.insert(first - 1, " " * node.col_offset + _SUBCLASSABLE + "\n")
            subclassable = True
    if subclassable:
        # After the module's docstring and `from __future__` imports: an import of its own.
        after = max([0, *(n.end_lineno or 0 for n in tree.body[:2] if _is_preamble(n))])
        lines.insert(after, "from mypy_extensions import mypyc_attr\n")
    return "".join(lines)


def _is_preamble(node: ast.stmt) -> bool:
    docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    future = isinstance(node, ast.ImportFrom) and node.module == "__future__"
    return docstring or future


def needs_init(info: DataclassInfo, by_name: Mapping[str, DataclassInfo]) -> bool:
    """Whether the build writes the class's `__init__` out: not if it writes its own, is kept
    as dataclass makes it, or extends or is extended by a dataclass of another module (the
    fields' annotations name what their own module imports, and a compiled subclass needs its
    own compiled `__init__` when its base has one)."""
    if info.writes_init or f"{info.module}.{info.name}" in KEEP_GENERATED_INIT:
        return False
    for other in by_name.values():
        related = other.name in _base_names(info) or info.name in _base_names(other)
        if related and other.module != info.module:
            return False
    return True


def _base_names(info: DataclassInfo) -> set[str]:
    return {base.split(".")[-1] for base in info.bases}


def index(sources: Iterable[tuple[str, str]]) -> dict[str, DataclassInfo]:
    """The dataclasses of (module, source) pairs by class name (unique among them)."""
    by_name: dict[str, DataclassInfo] = {}
    for module, source in sources:
        for info in dataclasses_of(module, source):
            if info.name in by_name:
                raise ValueError(f"two compiled dataclasses named {info.name}")
            by_name[info.name] = info
    return by_name


def write_tree(src: Path, out: Path, compiled: Iterable[str]) -> None:
    """Copy the package sources under `src` to `out`, the `compiled` ones (paths relative to
    `src`) with their dataclasses' constructors written out; unchanged files are not rewritten
    (the C compiler's inputs keep their times)."""
    paths = list(compiled)
    sources = {p: (src / p).read_text() for p in paths}
    by_name = index((p.removesuffix(".py").replace("/", "."), s) for p, s in sources.items())
    for path in sorted(src.rglob("*.py*")):
        if path.suffix not in (".py", ".pyi"):
            continue
        relative = path.relative_to(src).as_posix()
        text = path.read_text()
        if relative in sources:
            text = expand(relative.removesuffix(".py").replace("/", "."), text, by_name)
        target = out / relative
        if not target.exists() or target.read_text() != text:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
