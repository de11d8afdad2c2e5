"""Importing signal modules fresh and collecting the Entity, Source and Signal objects at their top level.

Every load compiles the file from its source (never a cached ``.pyc``, whose mtime check has one-second
resolution) and runs it under a new module name, with its folder on ``sys.path`` so sibling imports work.
Sibling modules are imported fresh too and taken out of ``sys.modules`` afterwards, so an edited sibling
is never served stale by the next registration.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.abc
import importlib.machinery
import importlib.util
import itertools
import linecache
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from quasar.signals.entity import Entity
from quasar.signals.errors import QuasarError, RegistrationError
from quasar.signals.request import RequestSignal
from quasar.signals.service import FeatureService
from quasar.signals.signal import Signal
from quasar.signals.source import Source

Definition = Entity | Source | Signal | RequestSignal | FeatureService
_LOCK = threading.RLock()          # sys.path / sys.modules are process-wide
_COUNTER = itertools.count()


@dataclass(frozen=True)
class Found:
    """A definition and where it was found, for error messages (``variable 'x' in /p/mod.py``)."""

    obj: Definition
    where: str


@dataclass
class Collected:
    """The definitions of one registration target, in the order they were found."""

    module: str
    found: list[Found] = field(default_factory=list)


# --- resolving a target -------------------------------------------------------------------------------------
def _looks_like_path(target: str, base: Path) -> bool:
    return (target.endswith(".py") or "/" in target or os.sep in target or target in (".", "..")
            or (base / target).exists())


def resolve_files(target: str | Path, root: Path | None) -> tuple[str, list[Path]] | None:
    """``(label, files)`` for a file or folder target; None when ``target`` is a module name."""
    base = Path(root) if root is not None else Path.cwd()
    if isinstance(target, str) and not _looks_like_path(target, base):
        return None
    path = Path(target).expanduser()
    path = (path if path.is_absolute() else base / path).resolve()
    if path.is_dir():
        files = sorted(p for p in path.glob("*.py") if not p.name.startswith("_"))
        if not files:
            raise RegistrationError(f"cannot register {path}: the folder has no .py files")
        return str(path), files
    if path.is_file():
        if path.suffix != ".py":
            raise RegistrationError(f"cannot register {path}: not a .py file")
        return str(path), [path]
    raise RegistrationError(f"cannot register {target}: no such file or folder (looked at {path})")


# --- fresh imports ------------------------------------------------------------------------------------------
class _FreshLoader(importlib.machinery.SourceFileLoader):
    """Compiles from source every time: no stale bytecode after an edit within the same second."""

    def path_stats(self, path: str) -> Any:
        raise OSError("quasar always compiles signal modules from source")


class _FreshFinder(importlib.abc.MetaPathFinder):
    """Finds top-level sibling modules in the registration folders, loaded by ``_FreshLoader``."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if path is not None or "." in fullname:
            return None
        for folder in self.folders:
            file = folder / f"{fullname}.py"
            if file.is_file():
                return importlib.util.spec_from_file_location(fullname, file,
                                                              loader=_FreshLoader(fullname, str(file)))
        return None


def _in_folders(module: object, folders: set[str]) -> bool:
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
        return False
    folder = _folder_of(file) if os.path.isabs(file) else os.path.dirname(os.path.abspath(file))   # cwd-relative
    return folder in folders


@functools.lru_cache(maxsize=16384)
def _folder_of(file: str) -> str:
    """The absolute folder of a module's ``__file__`` (kept: every signal load asks it of all ~3,000 modules)."""
    return os.path.dirname(os.path.abspath(file))


@contextmanager
def fresh_imports(folders: list[Path]) -> Iterator[dict[str, ModuleType]]:
    """Within the block: ``folders`` on sys.path, their modules imported fresh. Yields the sibling modules
    imported during the block (by name); afterwards sys.path and sys.modules are as they were."""
    names = {str(f) for f in folders}
    with _LOCK:
        saved_path = list(sys.path)
        shadowed = {n: m for n, m in list(sys.modules.items()) if _in_folders(m, names)}
        for n in shadowed:
            del sys.modules[n]
        for folder in folders:
            for file in folder.glob("*.py"):
                linecache.cache.pop(str(file), None)
        before = set(sys.modules)
        finder = _FreshFinder(folders)
        sys.meta_path.insert(0, finder)
        for folder in reversed(folders):
            sys.path.insert(0, str(folder))
        siblings: dict[str, ModuleType] = {}
        try:
            yield siblings
        finally:
            sys.meta_path.remove(finder)
            sys.path[:] = saved_path
            for n in set(sys.modules) - before:
                if _in_folders(sys.modules[n], names):
                    siblings[n] = sys.modules.pop(n)
            sys.modules.update(shadowed)


def exec_file(file: Path, module_name: str | None, folders: list[Path]) -> ModuleType:
    """Run ``file`` as a new module (inside ``fresh_imports``); errors become RegistrationError with file:line."""
    name = module_name or f"_quasar_signals_{file.stem}_{next(_COUNTER)}"
    package = [str(file.parent)] if file.name == "__init__.py" else None
    spec = importlib.util.spec_from_file_location(name, file, loader=_FreshLoader(name, str(file)),
                                                  submodule_search_locations=package)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    previous = sys.modules.get(name)
    sys.modules[name] = module          # dataclasses, typing and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
        _refresh_code(module)
    except SyntaxError as exc:
        where = f"{exc.filename or file}:{exc.lineno}" if exc.lineno else str(exc.filename or file)
        raise RegistrationError(f"{where}: syntax error: {exc.msg}") from exc
    except (Exception, SystemExit) as exc:
        raise RegistrationError(f"{_where(exc.__traceback__, file, folders)}: {_problem(exc)}") from exc
    finally:
        if previous is not None:
            sys.modules[name] = previous
        else:
            sys.modules.pop(name, None)
    return module


def _refresh_code(module: ModuleType) -> None:
    """Re-read each top-level signal's code now that the whole module has run (and its sibling modules are
    still importable), so helpers and constants defined below a signal are part of its version."""
    for var, obj in list(vars(module).items()):
        if isinstance(obj, Signal | RequestSignal):
            setattr(module, var, obj.with_fresh_code())


def _problem(exc: BaseException) -> str:
    if isinstance(exc, QuasarError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _where(tb: TracebackType | None, file: Path, folders: list[Path]) -> str:
    """``file:line`` of the innermost traceback frame that runs code of the registered folder(s)."""
    names = {str(f) for f in folders}
    found = None
    while tb is not None:
        code_file = tb.tb_frame.f_code.co_filename
        if os.path.dirname(os.path.abspath(code_file)) in names:
            found = f"{code_file}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found or str(file)


# --- collecting ---------------------------------------------------------------------------------------------
def top_level(module: ModuleType) -> list[tuple[str, Definition]]:
    """``(variable, object)`` for every Entity, Source, Signal, RequestSignal and FeatureService at the module's
    top level."""
    return [(var, obj) for var, obj in vars(module).items()
            if isinstance(obj, Entity | Source | Signal | RequestSignal | FeatureService)]


def home_of(obj: Definition, siblings: dict[str, ModuleType]) -> str | None:
    """The file of the sibling module ``obj`` was imported from, if it was imported from one."""
    fn = (obj.transform if isinstance(obj, Signal) else (obj.row_fn or obj.batch_fn)
          if isinstance(obj, RequestSignal) else None)
    if fn is not None:
        code = getattr(fn, "__code__", None)
        file = getattr(code, "co_filename", "")
        return file if file and os.path.isfile(file) else None
    for name in sorted(siblings):
        if any(value is obj for value in vars(siblings[name]).values()):
            return getattr(siblings[name], "__file__", None)
    return None


def collect_files(label: str, files: list[Path]) -> Collected:
    """Import each file fresh and collect its definitions; signals get ``module`` = their file's path."""
    folders = sorted({f.parent for f in files})
    loaded: list[tuple[Path, ModuleType]] = []
    with fresh_imports(folders) as siblings:
        for file in files:
            loaded.append((file, exec_file(file, None, folders)))
    collected = Collected(module=label)
    for file, module in loaded:
        for var, obj in top_level(module):
            home = home_of(obj, siblings) or str(file)
            collected.found.append(Found(_with_module(obj, home), f"variable {var!r} in {file}"))
    return collected


def collect_module(name: str) -> Collected:
    """Import the module ``name`` fresh (its folder on sys.path) and collect its definitions."""
    file = module_file(name)
    with fresh_imports([file.parent]) as siblings:
        module = exec_file(file, name, [file.parent])
    collected = Collected(module=name)
    for var, obj in top_level(module):
        home = home_of(obj, siblings)
        collected.found.append(Found(_with_module(obj, name if home in (None, str(file)) else str(home)),
                                     f"variable {var!r} in {name} ({file})"))
    return collected


def module_file(name: str) -> Path:
    """The source file of an importable module, without running it; RegistrationError if there is none."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise RegistrationError(f"cannot register {name}: no file, folder or module of that name ({exc})") from exc
    if spec is None:
        raise RegistrationError(f"cannot register {name}: no file, folder or module of that name")
    origin = spec.origin
    if not origin or not origin.endswith(".py") or not os.path.isfile(origin):
        raise RegistrationError(f"cannot register {name}: it is not a Python source module ({origin})")
    return Path(origin).resolve()


def _with_module(obj: Definition, module: str) -> Definition:
    if isinstance(obj, Signal | RequestSignal):
        return dataclasses.replace(obj, module=module)
    if isinstance(obj, FeatureService):
        return FeatureService(name=obj.name, features=obj.features, logging=obj.logging, owner=obj.owner,
                              description=obj.description, pins=obj.pins, module=module)
    return obj
