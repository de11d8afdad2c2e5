"""``POST /v1/score`` without FastAPI's per-request machinery, the same answers as the route.

As the feature service's fast path does (``quasar.online.service.fast_path``, whose body reading it shares),
this pure-ASGI layer sits inside every middleware of the scoring app (request id, auth, the body limit), so
those still see every request, and takes only what is certain to be valid: a POST to ``/v1/score`` with
``Content-Type: application/json`` and a ``Content-Length``, a body that orjson parses (without integers
orjson would read as floats), shaped exactly as ``ScoreRequest`` accepts it (no other field, keys strictly
int or str, ``request_data`` lists, ``return_features`` a bool). The request is then built without validation
(``model_construct``) and answered by the route's own function (``answer_score``), which answers and counts its
errors itself. Anything else, a malformed body included, goes to FastAPI with its body replayed, so its answer
(the 422 of an invalid body, say) is what it always was.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from quasar.online.service.fast_path import BIG_INT, header, read_body, replay
from quasar.online.service.request_id import SCOPE_KEY, new_request_id
from quasar.serving_adapters.scorer import Scorer
from quasar.serving_adapters.service.schemas import ScoreRequest
from quasar.serving_adapters.service.score import SCORE_PATH, answer_score

_FIELDS = frozenset(ScoreRequest.model_fields)
_MAX_MODEL = 256


_KEY_TYPES = frozenset((int, str))


def _keys(value: Any) -> bool:
    """A ``dict[str, list[StrictInt | StrictStr]]`` as pydantic accepts it from JSON (the types of a list's
    items gathered in one C-level pass: a bool is not an int here, as for pydantic's StrictInt)."""
    return type(value) is dict and all(type(v) is list and set(map(type, v)) <= _KEY_TYPES
                                       for v in value.values())


def score_body(data: Any) -> ScoreRequest | None:
    """``data`` as the valid ``ScoreRequest`` it is, or None when it may not be one (pydantic decides)."""
    if type(data) is not dict or not data.keys() <= _FIELDS or "candidates" not in data:
        return None
    model, entities, candidates = data.get("model"), data.get("entities", {}), data["candidates"]
    request_data, features = data.get("request_data", {}), data.get("return_features", False)
    if (type(model) is not str or not 1 <= len(model) <= _MAX_MODEL or not _keys(entities) or not _keys(candidates)
            or type(request_data) is not dict or not all(type(v) is list for v in request_data.values())
            or type(features) is not bool):
        return None
    return ScoreRequest.model_construct(model=model, entities=entities, candidates=candidates,
                                        request_data=request_data, return_features=features)


class FastScore:
    """Answers the score requests it is sure of (see the module); everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, scorer: Scorer) -> None:
        self.app = app
        self.scorer = scorer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST" or scope.get("path") != SCORE_PATH
                or scope.get("root_path") or header(scope, b"content-type") != b"application/json"
                or header(scope, b"content-length") is None):
            await self.app(scope, receive, send)
            return
        body, tail = await read_body(receive)
        request: ScoreRequest | None = None
        if tail is None and body and not BIG_INT.search(body):
            try:
                request = score_body(orjson.loads(body))
            except orjson.JSONDecodeError:
                request = None
        if request is None:
            await self.app(scope, replay(body, tail, receive), send)
            return
        rid = scope.get(SCOPE_KEY)
        response = await answer_score(self.scorer, request, rid if isinstance(rid, str) else new_request_id())
        await response(scope, receive, send)
