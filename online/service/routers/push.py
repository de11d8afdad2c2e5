"""``POST /v1/push``: rows of a signal written to the online store (newer event time wins), and on request
appended to the offline store through the service's offline-push callback."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import anyio.to_thread
import pyarrow as pa
from fastapi import APIRouter
from starlette.responses import Response

from quasar.online.push import validate_push_rows
from quasar.online.service.context import ServiceContext
from quasar.online.service.errors import JSONResponse
from quasar.online.service.models import ErrorResponse, PushRequest, PushResponse
from quasar.signals.errors import RequestError, TooManyEntitiesError
from quasar.signals.refs import FeatureRef, parse_feature_ref
from quasar.signals.signal import Signal
from quasar.signals.times import parse_time
from quasar.signals.ufr.schema import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from quasar.signals.ufr.types import Timestamp

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorResponse} for code in (401, 413, 422, 502, 503)}


def timestamp_columns(signal: Signal) -> list[str]:
    """Columns whose JSON values are ISO-8601 strings: the event and created times, Timestamp features."""
    return [EVENT_TIMESTAMP, CREATED_TIMESTAMP, *(n for n, t in signal.schema if isinstance(t, Timestamp))]


def parse_timestamp(value: Any, signal: Signal, column: str, row: int) -> datetime | None:
    """An ISO-8601 string as an aware UTC datetime by the one time rule (``quasar.signals.times``: naive is UTC);
    null stays None."""
    if value is None:
        return None
    return parse_time(value, f"signal {signal.name}: column {column!r} row {row}")


def rows_from_json(signal: Signal, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """JSON rows with their timestamp strings parsed; everything else is checked by ``validate_push_rows``."""
    stamps = timestamp_columns(signal)
    out = []
    for i, row in enumerate(rows):
        fixed = dict(row)
        for column in stamps:
            if column in fixed:
                fixed[column] = parse_timestamp(fixed[column], signal, column, i)
        out.append(fixed)
    return out


def check_push(ctx: ServiceContext, rows: int, offline: str = "") -> None:
    """Refuse a push of more rows than the service takes, or one for the offline store (``offline`` says how
    the request asked for it, e.g. ``to: "online_and_offline"``) when the service has no offline push."""
    if rows > ctx.max_push_rows:
        raise TooManyEntitiesError(f"rows: {rows} rows pushed; this service takes at most "
                                   f"{ctx.max_push_rows} per request")
    if offline and ctx.offline_push is None:
        raise RequestError(f'{offline} needs the offline store, but this service was started without offline '
                           'push; push "to": "online" or start it with offline push')


async def pushed_signal(ctx: ServiceContext, ref: FeatureRef) -> tuple[Signal, int]:
    """The online signal version a push writes (through the resolve cache)."""
    await ctx.resolver.prefetch([(ref.signal, ref.version)])
    signal, version = ctx.resolver.get(ref.signal, ref.version)
    if not signal.online:
        raise RequestError(f"signal {signal.name!r} is not an online signal: declare it with online=True to "
                           "push rows to it")
    return signal, version


async def write_pushed(ctx: ServiceContext, signal: Signal, version: int, table: pa.Table, *, online: bool = True,
                       offline: bool = False) -> tuple[int, bool]:
    """Write validated rows online (newer event time wins), then append them offline when asked (online first,
    so a retry after an offline failure converges: the online write is idempotent). Returns (written, offline)."""
    written = await ctx.store.write(signal, version, table) if online else 0
    if offline and ctx.offline_push is not None and table.num_rows:
        await anyio.to_thread.run_sync(ctx.offline_push, signal, version, table)
        return written, True
    return written, False


def push_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter(tags=["push"])

    @router.post("/v1/push", response_model=PushResponse, responses=ERRORS)  # type: ignore[misc]
    async def push(body: PushRequest) -> Response:
        """Write rows of a signal online (a row older than the stored one for its key is skipped), and with
        ``"to": "online_and_offline"`` append them to the offline store too (online first, so a retry after
        an offline failure converges: the online write is idempotent). A time outside the service's bounds
        (``quasar.signals.bounds``) answers 422 naming the column, the row, the value and the bound, and writes
        nothing; rows without ``created_timestamp`` get their arrival time."""
        check_push(ctx, len(body.rows), 'to: "online_and_offline"' if body.to == "online_and_offline" else "")
        signal, version = await pushed_signal(ctx, parse_feature_ref(body.signal, RequestError))
        table = validate_push_rows(signal, rows_from_json(signal, body.rows), bounds=ctx.time_bounds)
        written, offline = await write_pushed(ctx, signal, version, table, offline=body.to == "online_and_offline")
        return JSONResponse({"signal": signal.name, "version": version, "rows": table.num_rows,
                             "written": written, "offline": offline})

    return router
