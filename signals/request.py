"""Request-time signals: typed Python functions of request data and other features, run at request time.

A request-time signal declares the fields a caller sends (``request={"position": Int64()}``), the stored or
request-time features it reads (``inputs=["user_stats:ctr_7d"]``, or a dict naming each input) and the
features it returns. The same definition runs online (``quasar serve``, ``quasar score-serve``) after the
stored features are read, and offline (``training_dataset``) on the point-in-time joined inputs with the
request fields taken from spine columns, so offline and online give the same value.

It has two modes that must agree: a row function ``fn(row: dict) -> dict`` for single requests, and an
optional vectorised ``batch(table: pa.Table) -> pa.Table | dict`` for batches (``@sig.batch``). Which one
runs is chosen by the number of rows (``ROW_MODE_MAX_ROWS``); a signal with only one of them uses it for
every batch size. Either way the outputs are checked and cast to the declared UFR types, so a value has one
representation in training and serving::

    @on_demand(inputs={"ctr": "user_stats:ctr_7d"}, request={"position": Int64()},
               features={"ctr_at_position": Float64()})
    def ctr_at_position(row):
        return {"ctr_at_position": None if row["ctr"] is None else row["ctr"] / (1 + row["position"])}
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from quasar.signals.errors import DefinitionError, RequestError
from quasar.signals.fingerprint import transform_code
from quasar.signals.refs import FeatureRef, parse_feature_ref
from quasar.signals.ufr.schema import FeatureSchema, check_name

RowFn = Callable[[dict[str, Any]], Mapping[str, Any]]
BatchFn = Callable[[pa.Table], Any]

#: Batches of at most this many rows run the row function (a dict per row, no Arrow set-up); larger ones
#: run the vectorised batch function when the signal has one.
ROW_MODE_MAX_ROWS = 8
MODES = ("auto", "row", "batch")


class RequestSignalError(RequestError):
    """A request-time signal's function failed or returned something other than its declared features; the
    message names the signal (the HTTP services answer 422)."""


def _hash(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True, eq=False)
class RequestSignal:
    """A request-time signal. Build it with ``@on_demand``, not directly.

    ``inputs`` are ``(name, reference)`` pairs: the name is the key the function reads (in the row dict or as
    a column of the batch table), the reference a ``signal[@version]:feature`` of a stored or request-time
    signal. ``request`` holds the fields the caller sends, ``schema`` the features returned.
    """

    name: str
    inputs: tuple[tuple[str, str], ...]
    request: FeatureSchema
    schema: FeatureSchema
    owner: str = ""
    description: str = ""
    code: str = ""
    module: str = ""
    row_fn: RowFn | None = field(default=None, repr=False)
    batch_fn: BatchFn | None = field(default=None, repr=False)
    recorded_modes: tuple[str, ...] = field(default=(), repr=False)   # as registered, when no function is attached

    def __post_init__(self) -> None:
        check_name(self.name, "request-time signal")
        where = f"request-time signal {self.name!r}"
        if not len(self.schema):
            raise DefinitionError(f"{where}: declare at least one feature")
        if not self.inputs and not len(self.request):
            raise DefinitionError(f"{where}: give it inputs or request fields to compute from")
        names = [n for n, _ in self.inputs]
        taken: dict[str, str] = {}
        for name in [*names, *self.request.names]:
            if name in taken:
                raise DefinitionError(f"{where}: {name!r} names two inputs; give the inputs as a dict "
                                      "{name: 'signal:feature'} to name them apart")
            taken[name] = name
        for name, ref in self.inputs:
            check_name(name, f"{where} input")
            parsed = parse_feature_ref(ref, DefinitionError)
            if parsed.feature is None:
                raise DefinitionError(f"{where}: input {ref!r} must name one feature, 'signal:feature'")
            if parsed.signal == self.name:
                raise DefinitionError(f"{where}: it cannot read its own features")

    # --- identity -------------------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        return "request"

    @property
    def features(self) -> dict[str, Any]:
        return self.schema.as_dict()

    @property
    def modes(self) -> list[str]:
        """The forms it has, ``row`` and/or ``batch``: of the attached functions, else as registered."""
        attached = [m for m, fn in (("row", self.row_fn), ("batch", self.batch_fn)) if fn is not None]
        return attached or list(self.recorded_modes)

    @property
    def input_refs(self) -> list[FeatureRef]:
        return [parse_feature_ref(ref, DefinitionError) for _, ref in self.inputs]

    @property
    def upstream(self) -> list[str]:
        """Names of the signals (stored or request-time) this one reads."""
        return sorted({r.signal for r in self.input_refs})

    @property
    def definition_fingerprint(self) -> str:
        """What makes a new version: the features, the request fields, the inputs and the code of both
        functions (normalised, with the helpers and constants they use). Owner and description are metadata."""
        return _hash("request", self.schema.fingerprint_hex, self.request.fingerprint_hex,
                     [list(i) for i in self.inputs], self.code)

    def with_fresh_code(self) -> RequestSignal:
        """This signal with its code read again from its functions (after its whole module has run)."""
        code = _code(self.row_fn, self.batch_fn)
        return self if code == self.code else dataclasses.replace(self, code=code)

    def batch(self, fn: BatchFn) -> RequestSignal:
        """Decorate the vectorised form: ``@my_signal.batch`` on ``fn(table: pa.Table) -> pa.Table | dict``.
        Give it the signal's own name, as with ``property.setter``, so the module's variable holds both."""
        if not callable(fn):
            raise DefinitionError(f"request-time signal {self.name!r}: .batch decorates a function")
        return dataclasses.replace(self, batch_fn=fn, code=_code(self.row_fn, fn))

    # --- running --------------------------------------------------------------------------------------
    def mode_for(self, rows: int, mode: str = "auto") -> str:
        """Which function runs for ``rows`` rows: ``row`` or ``batch``."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if (mode == "row" and self.row_fn is None) or (mode == "batch" and self.batch_fn is None and self.row_fn is None):
            raise DefinitionError(f"request-time signal {self.name!r} has no {mode} function")
        if mode != "auto":
            return mode
        if self.row_fn is None:
            return "batch"
        if self.batch_fn is None:
            return "row"
        return "row" if rows <= ROW_MODE_MAX_ROWS else "batch"

    def compute(self, inputs: pa.Table, mode: str = "auto") -> pa.Table:
        """The features for each row of ``inputs`` (columns: the input names and request fields), cast to the
        declared types. Errors in the function are a RequestSignalError naming this signal."""
        got = self.compute_columns({n: inputs.column(n) for n in inputs.column_names}, inputs.num_rows, mode)
        return pa.Table.from_arrays([got[n] for n in self.schema.names], schema=self.schema.arrow_schema())

    def compute_columns(self, inputs: Mapping[str, pa.Array | pa.ChunkedArray], rows: int,
                        mode: str = "auto") -> dict[str, pa.Array]:
        """``compute`` on columns (input name -> Arrow array of ``rows`` values): the feature arrays by name.
        The row form gets one dict per row built straight from the columns, with no table in between, so a
        single request pays for one call of the function and one small array per feature."""
        if self.row_fn is None and self.batch_fn is None:
            raise DefinitionError(f"request-time signal {self.name!r} has no function to call: load it from "
                                  "its module")
        chosen = self.mode_for(rows, mode)
        if chosen == "batch" and self.batch_fn is not None:
            arrays = [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in inputs.values()]
            return self._run_batch(pa.Table.from_arrays(arrays, names=list(inputs)))
        return self._run_rows(inputs, rows)

    def _run_rows(self, inputs: Mapping[str, pa.Array | pa.ChunkedArray], count: int) -> dict[str, pa.Array]:
        assert self.row_fn is not None
        names = self.schema.names
        values = {n: a.to_pylist() for n, a in inputs.items()}
        keys = list(values)
        out: dict[str, list[Any]] = {n: [None] * count for n in names}
        for i in range(count):
            row = {k: values[k][i] for k in keys}
            try:
                got = self.row_fn(row)
            except Exception as exc:
                raise self._failed(exc) from exc
            if not isinstance(got, Mapping):
                raise RequestSignalError(f"request-time signal {self.name!r} returned {type(got).__name__}; "
                                         f"return a dict of its features ({', '.join(names)})")
            if len(got) != len(names) or any(k not in out for k in got):
                extra = [k for k in got if k not in out]
                if extra:
                    raise RequestSignalError(f"request-time signal {self.name!r} returned {extra[0]!r}, which is "
                                             f"not one of its features ({', '.join(names)})")
                missing = [n for n in names if n not in got]
                raise RequestSignalError(f"request-time signal {self.name!r} returned no {missing[0]!r}")
            for n in names:
                out[n][i] = got[n]
        return {n: self._typed(n, out[n]) for n in names}

    def _run_batch(self, inputs: pa.Table) -> dict[str, pa.Array]:
        assert self.batch_fn is not None
        try:
            got = self.batch_fn(inputs)
        except Exception as exc:
            raise self._failed(exc) from exc
        if isinstance(got, pa.Table):
            columns = {n: got.column(n) for n in got.column_names}
        elif isinstance(got, Mapping):
            columns = dict(got)
        else:
            raise RequestSignalError(f"request-time signal {self.name!r}: its batch function returned "
                                     f"{type(got).__name__}; return a pyarrow Table or a dict of columns")
        names = self.schema.names
        extra = [k for k in columns if k not in names]
        if extra:
            raise RequestSignalError(f"request-time signal {self.name!r}: its batch function returned {extra[0]!r}, "
                                     f"which is not one of its features ({', '.join(names)})")
        arrays = {}
        for n in names:
            if n not in columns:
                raise RequestSignalError(f"request-time signal {self.name!r}: its batch function returned no {n!r}")
            arrays[n] = self._typed(n, columns[n])
            if len(arrays[n]) != inputs.num_rows:
                raise RequestSignalError(f"request-time signal {self.name!r}: its batch function returned "
                                         f"{len(arrays[n])} values of {n!r} for {inputs.num_rows} rows")
        return arrays

    def _typed(self, name: str, values: Any) -> pa.Array:
        target = self.schema.type_of(name).arrow_type()
        try:
            if isinstance(values, pa.ChunkedArray):
                values = values.combine_chunks()
            if isinstance(values, pa.Array):
                return values if values.type == target else values.cast(target, safe=True)
            return python_array(values, target)       # NaN stays NaN, None is null (pandas objects: its rules)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError,
                OverflowError) as exc:
            raise RequestSignalError(f"request-time signal {self.name!r}: feature {name!r} is declared "
                                     f"{self.schema.type_of(name)} but the function returned values that are "
                                     f"not: {str(exc).splitlines()[0]}") from exc

    def _failed(self, exc: Exception) -> RequestSignalError:
        text = str(exc).splitlines()[0] if str(exc) else ""
        return RequestSignalError(f"request-time signal {self.name!r} failed: {type(exc).__name__}"
                                  f"{': ' + text if text else ''}")

    # --- serialization --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "request", "inputs": [list(i) for i in self.inputs],
                "request": self.request.to_dict(), "schema": self.schema.to_dict(), "owner": self.owner,
                "description": self.description, "code": self.code, "module": self.module,
                "modes": self.modes}

    @classmethod
    def from_dict(cls, data: dict[str, Any], row_fn: RowFn | None = None,
                  batch_fn: BatchFn | None = None) -> RequestSignal:
        return cls(name=data["name"], inputs=tuple((str(a), str(b)) for a, b in data.get("inputs", [])),
                   request=FeatureSchema.from_dict(data.get("request", [])),
                   schema=FeatureSchema.from_dict(data["schema"]), owner=data.get("owner", ""),
                   description=data.get("description", ""), code=data.get("code", ""),
                   module=data.get("module", ""), row_fn=row_fn, batch_fn=batch_fn,
                   recorded_modes=tuple(str(m) for m in data.get("modes", [])))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RequestSignal) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.name, self.definition_fingerprint))


def python_array(values: Any, target: pa.DataType) -> pa.Array:
    """Python values as an array of ``target``, as ``pa.array(values, type=target)`` makes it. For numbers
    Arrow's own inference is taken when it lands on the type (or casts to it safely), which is several times
    faster for a small list than a typed conversion; a bool for a number takes the typed path, as before."""
    if isinstance(values, list) and (pa.types.is_integer(target) or pa.types.is_floating(target)):
        try:
            inferred = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            inferred = None
        if inferred is not None:
            if inferred.type == target:
                return inferred
            narrowing = pa.types.is_floating(inferred.type) and pa.types.is_floating(target)
            if pa.types.is_null(inferred.type) or narrowing:
                return inferred.cast(target)
    return pa.array(values, type=target)


def _code(row_fn: RowFn | None, batch_fn: BatchFn | None) -> str:
    parts = []
    if row_fn is not None:
        parts.append(transform_code(row_fn))
    if batch_fn is not None:
        parts.append("# batch\n" + transform_code(batch_fn))
    return "\n".join(parts)


def _request_fields(request: Mapping[str, Any] | None, where: str) -> FeatureSchema:
    if request is None or (isinstance(request, Mapping) and not request):
        return FeatureSchema(())
    return FeatureSchema.of(request, f"{where} request fields")


def _inputs(inputs: Sequence[str] | Mapping[str, str], where: str) -> tuple[tuple[str, str], ...]:
    if isinstance(inputs, str):
        raise DefinitionError(f"{where}: inputs must be a list of 'signal:feature' or a dict name -> reference")
    if isinstance(inputs, Mapping):
        return tuple((str(k), str(v)) for k, v in inputs.items())
    pairs = []
    for ref in inputs:
        parsed = parse_feature_ref(ref, DefinitionError)
        if parsed.feature is None:
            raise DefinitionError(f"{where}: input {ref!r} must name one feature, 'signal:feature'")
        pairs.append((parsed.feature, str(ref)))
    return tuple(pairs)


def on_demand(*, features: Mapping[str, Any], inputs: Sequence[str] | Mapping[str, str] = (),
              request: Mapping[str, Any] | None = None, name: str | None = None, owner: str = "",
              description: str | None = None, batch: BatchFn | None = None,
              vectorized: bool = False) -> Callable[[Callable[..., Any]], RequestSignal]:
    """Decorate a request-time signal's function.

    By default the function is the row form, ``fn(row: dict) -> dict``: ``row`` holds each input (by its
    name: the feature name for a list of inputs, the key for a dict) and each request field, None where
    missing; it returns a dict of the declared features. Add the vectorised form with ``batch=`` or
    ``@signal.batch``; ``vectorized=True`` makes the decorated function itself the batch form
    (``fn(table: pa.Table) -> pa.Table | dict``), used for every batch size.
    """

    def wrap(fn: Callable[..., Any]) -> RequestSignal:
        if not callable(fn):
            raise DefinitionError(f"@on_demand decorates a function, got {fn!r}")
        sig_name = name or fn.__name__
        where = f"request-time signal {sig_name!r}"
        row_fn = None if vectorized else fn
        batch_fn = fn if vectorized else batch
        doc = description if description is not None else inspect.getdoc(fn) or ""
        return RequestSignal(name=sig_name, inputs=_inputs(inputs, where),
                             request=_request_fields(request, where),
                             schema=FeatureSchema.of(features, f"{where} features"), owner=owner,
                             description=doc.strip().splitlines()[0] if doc.strip() else "",
                             code=_code(row_fn, batch_fn), module=getattr(fn, "__module__", ""),
                             row_fn=row_fn, batch_fn=batch_fn)

    return wrap
