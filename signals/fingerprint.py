"""What a transform computes, as canonical text: the part of a signal's version identity that is code.

``transform_code(fn)`` gives the transform's code normalised through the AST (no comments, docstrings,
annotations, decorators or formatting), followed by what the code uses from outside itself, each on its
own line, sorted by name:

* module-level functions and classes of the signal's own code (the transform's module, or a sibling module
  in its folder): their normalised code, and, recursively, what *they* use;
* module-level constants (numbers, strings, bytes, None, booleans, dates and durations, and tuples, lists,
  sets and dicts of those): their value;
* imported modules and objects from other packages: their qualified name only (a library upgrade is not a
  new version);
* variables a closure captured: their value, like a constant.

So a comment, a reformat or a new docstring keeps the version, while a changed helper or constant, even two
calls away, makes a new one. The text is stored as the signal's ``code``, so the fingerprint recomputed from
the registry is the one computed at registration.
"""

from __future__ import annotations

import ast
import builtins
import datetime as dt
import decimal
import enum
import fractions
import hashlib
import inspect
import os
import textwrap
import types
from collections.abc import Callable, Iterator
from dataclasses import fields, is_dataclass
from typing import Any

from quasar.signals.errors import DefinitionError

#: Values whose text is longer than this are stored as a hash of the text.
MAX_VALUE_CHARS = 2_000
_SIMPLE = (type(None), bool, int, float, complex, str, bytes)
_VALUES = (dt.datetime, dt.date, dt.time, dt.timedelta, decimal.Decimal, fractions.Fraction)


def transform_code(fn: Callable[..., Any]) -> str:
    """The canonical code of transform ``fn`` and of everything it uses from its module (see the module doc)."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as exc:
        raise DefinitionError(f"cannot read the source of transform {getattr(fn, '__name__', fn)!r}: "
                              "define it in a .py file") from exc
    root = _normalised(_first_definition(source), strip_decorators=True)
    body = ast.unparse(root) + "\n" if root is not None else source   # unparseable (a lambda mid-call): raw text
    uses: dict[str, str] = {}
    _collect(fn, root, uses, visited={id(fn)}, owner=_Owner.of(fn))
    if not uses:
        return body
    return body + "\n# uses\n" + "".join(uses[name] + "\n" for name in sorted(uses))


# --- normalising code -----------------------------------------------------------------------------------
def _first_definition(source: str | None) -> ast.AST | None:
    """The first def / class / lambda node of ``source``, or None when it does not parse."""
    if source is None:
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            return node
    return None


def _source(obj: Any) -> str | None:
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        return None


def _normalised(node: ast.AST | None, *, strip_decorators: bool) -> ast.AST | None:
    if node is None:
        return None
    if strip_decorators and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        node.decorator_list = []              # ``@signal(owner=..., ttl=...)``: features etc. count elsewhere
    return _Normalise().visit(node)  # type: ignore[no-any-return]


class _Normalise(ast.NodeTransformer):
    """Drop docstrings and annotations, which say what code means without changing what it computes."""

    def _strip(self, node: Any) -> Any:
        self.generic_visit(node)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:]
        node.body = body or [ast.Pass()]
        if not isinstance(node, ast.ClassDef):
            node.returns = None
            for arg in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                        node.args.vararg, node.args.kwarg):
                if arg is not None:
                    arg.annotation = None
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _strip


# --- what the code uses ---------------------------------------------------------------------------------
class _Owner:
    """Whose code is the signal author's own: the transform's module, and modules in the transform's folder
    (siblings). Own code counts by its text; anything else (libraries) by its qualified name."""

    def __init__(self, module: str | None, folder: str | None) -> None:
        self.module = module
        self.folder = folder

    @classmethod
    def of(cls, fn: Any) -> _Owner:
        file = getattr(getattr(fn, "__code__", None), "co_filename", None)
        folder = os.path.dirname(os.path.abspath(file)) if isinstance(file, str) and os.path.isfile(file) else None
        return cls(getattr(fn, "__module__", None), folder)

    def owns_module(self, obj: Any) -> bool:
        file = getattr(obj, "__file__", None) if isinstance(obj, types.ModuleType) else None
        return (self.folder is not None and isinstance(file, str)
                and os.path.dirname(os.path.abspath(file)) == self.folder)

    def owns(self, obj: Any) -> bool:
        if not isinstance(obj, types.FunctionType | type):
            return False
        if self.module is not None and getattr(obj, "__module__", None) == self.module:
            return True
        file = getattr(getattr(obj, "__code__", None), "co_filename", None)
        if file is None:
            try:
                file = inspect.getsourcefile(obj)
            except TypeError:
                return False
        return (self.folder is not None and isinstance(file, str)
                and os.path.dirname(os.path.abspath(file)) == self.folder)


def _code_names(code: types.CodeType) -> Iterator[str]:
    """Global (and attribute) names of a code object and the code objects nested in it."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def _references(fn: Any, node: ast.AST | None, owner: _Owner) -> dict[str, Any]:
    """``name -> value`` for the globals and closure variables ``fn`` reads, and ``mod.attr`` for what it reads
    from the author's own (sibling) modules."""
    nodes = list(ast.walk(node)) if node is not None else []
    loaded = {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    code = getattr(fn, "__code__", None)
    found: dict[str, Any] = {}
    if code is not None:
        cells = dict(zip(code.co_freevars, fn.__closure__ or (), strict=False))
        for name, cell in cells.items():
            try:
                found[name] = cell.cell_contents
            except ValueError:                   # an empty cell: the variable is not assigned yet
                found[name] = _Unbound()
        global_names = set(_code_names(code))
        if node is not None:                     # co_names also holds attribute names: keep loaded names only
            global_names &= loaded
    else:                                        # a class: every name it loads that the module defines
        global_names = loaded
    namespace = getattr(fn, "__globals__", None) or vars(inspect.getmodule(fn) or types.ModuleType("_"))
    for name in sorted(global_names - set(found)):
        if name in namespace:
            found[name] = namespace[name]
        elif not hasattr(builtins, name):
            found[name] = _Unbound()
    for n in nodes:
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) \
                and owner.owns_module(found.get(n.value.id)):
            found.setdefault(f"{n.value.id}.{n.attr}", getattr(found[n.value.id], n.attr, _Unbound()))
    return found


class _Unbound:
    """A name the code reads that its module does not define (yet)."""


def _collect(fn: Any, node: ast.AST | None, uses: dict[str, str], *, visited: set[int], owner: _Owner) -> None:
    module = getattr(fn, "__module__", None)
    prefix = "" if module == owner.module or not module else f"{module}:"   # a sibling's names are its own
    for bare, value in _references(fn, node, owner).items():
        name = prefix + bare
        if name in uses:
            continue
        child = None
        if owner.owns(value) and id(value) not in visited:
            visited.add(id(value))
            child = _normalised(_first_definition(_source(value)), strip_decorators=False)
            _collect(value, child, uses, visited=visited, owner=owner)
        uses[name] = _describe(name, value, owner, child)


def _describe(name: str, value: Any, owner: _Owner, node: ast.AST | None) -> str:
    """One line (or block) of the ``# uses`` section for ``name``."""
    if isinstance(value, _Unbound):
        return f"{name} = <undefined>"
    if isinstance(value, types.ModuleType):
        if "." not in name:
            return f"import {value.__name__} as {name.rpartition(':')[2]}" + (
                f"  # in {name.rpartition(':')[0]}" if ":" in name else "")
        return f"{name} = <module {value.__name__}>"
    if owner.owns(value):
        if node is None:
            node = _normalised(_first_definition(_source(value)), strip_decorators=False)
        if node is not None:
            return f"{name} = <{_qualname(value, own=True)}>\n{ast.unparse(node)}"
        return f"{name} = <{_qualname(value, own=True)} {_bytecode(value)}>"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{name} = <{_qualname(value, own=False)}>"
    text = value_text(value)
    if text is None:
        return f"{name} = <{type(value).__module__}.{type(value).__qualname__} object>"
    if len(text) > MAX_VALUE_CHARS:
        text = f"<value sha256:{hashlib.sha256(text.encode()).hexdigest()} ({len(text)} chars)>"
    return f"{name} = {text}"


def _qualname(obj: Any, *, own: bool) -> str:
    kind = "class" if isinstance(obj, type) else "function"
    if own:                                      # the registry imports the module under a generated name
        return f"{kind} {obj.__qualname__}"
    return f"{kind} {getattr(obj, '__module__', '?')}.{obj.__qualname__}"


def _bytecode(fn: Any) -> str:
    code = getattr(fn, "__code__", None)
    raw = code.co_code + repr(code.co_consts).encode() if code is not None else repr(fn).encode()
    return "bytecode sha256:" + hashlib.sha256(raw).hexdigest()[:16]


def value_text(value: Any, depth: int = 0) -> str | None:
    """Deterministic text of a constant value, or None when ``value`` is not one (sets are sorted, so the
    text does not depend on hash randomisation)."""
    if depth > 20:
        return None
    if isinstance(value, _SIMPLE + _VALUES):
        return repr(value)
    if isinstance(value, enum.Enum):
        return f"{type(value).__qualname__}.{value.name}"
    identity = getattr(value, "identity", None)
    if callable(identity) and type(value).__module__.startswith("signals."):
        return f"{type(value).__name__}({identity()!r})"         # Entity / Source: identity, not description
    if isinstance(value, tuple | list):
        items = [value_text(v, depth + 1) for v in value]
        if any(i is None for i in items):
            return None
        inner = ", ".join(items)  # type: ignore[arg-type]
        return f"({inner}{',' if len(items) == 1 else ''})" if isinstance(value, tuple) else f"[{inner}]"
    if isinstance(value, set | frozenset):
        items = [value_text(v, depth + 1) for v in value]
        if any(i is None for i in items):
            return None
        return f"{type(value).__name__}({{{', '.join(sorted(items))}}})"  # type: ignore[arg-type]
    if isinstance(value, dict):
        pairs = [(value_text(k, depth + 1), value_text(v, depth + 1)) for k, v in value.items()]
        if any(k is None or v is None for k, v in pairs):
            return None
        return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
    if is_dataclass(value) and not isinstance(value, type):
        parts = [(f.name, value_text(getattr(value, f.name), depth + 1)) for f in fields(value)]
        if any(t is None for _, t in parts):
            return None
        return f"{type(value).__qualname__}({', '.join(f'{n}={t}' for n, t in parts)})"
    return _array_text(value)


def _array_text(value: Any) -> str | None:
    """Arrow data types and schemas, numpy scalars, dtypes and arrays: deterministic text (arrays by hash)."""
    import numpy as np
    import pyarrow as pa
    if isinstance(value, pa.DataType | pa.Field | pa.Schema):
        return f"pyarrow.{type(value).__name__}({value})"
    if isinstance(value, np.generic | np.dtype):
        return f"numpy.{value!r}"
    if isinstance(value, np.ndarray) and value.dtype != object:
        digest = hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()[:16]
        return f"numpy.ndarray(dtype={value.dtype}, shape={value.shape}, sha256={digest})"
    return None
