"""Request and response bodies of the scoring service."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

Key = StrictInt | StrictStr


class ScoreRequest(BaseModel):
    """``{"model": "ranker", "entities": {"user_id": [7]}, "candidates": {"pin_id": [1, 2, 3]}}``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256, description="Name of the model bundle",
                       examples=["ranker"])
    entities: dict[str, list[Key]] = Field(default_factory=dict,
                                           description="The request entity's join key and its one key",
                                           examples=[{"user_id": [7]}])
    candidates: dict[str, list[Key]] = Field(description="The candidates' join key and their keys, in order",
                                             examples=[{"pin_id": [1, 2, 3]}])
    request_data: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Request fields of the model's request-time signals (its feature service's): field -> a "
                    "list with one value per candidate (e.g. the slot each is shown in), or with one value for "
                    "every candidate (a request-level field such as the query), as the request entity's features "
                    "broadcast. Any other length, a missing, unknown or mistyped field is a 422 naming it.",
        examples=[{"position": [0, 1, 2], "query": ["red shoes"]}])
    return_features: bool = Field(
        default=False,
        description="Also answer `features`: what the model read for each candidate (stored and request-time), "
                    "in the Feast response shape of /v1/features, for debugging skew")


class ScoreResponse(BaseModel):
    """Scores in candidate order (and, with ``return_features``, the features they were computed from)."""

    model: str
    scores: list[float]
    features: dict[str, Any] | None = None


class ModelError(BaseModel):
    type: str
    message: str


class ModelInfo(BaseModel):
    """One bundle of the models folder: ``loaded`` (with what it reads), ``failed`` (with why), or
    ``unloaded`` (it loads on its first request)."""

    name: str
    state: str
    model_class: str | None = None
    request_key: str | None = None
    candidate_key: str | None = None
    inputs: list[str] | None = None
    service: str | None = Field(default=None, description="The feature service version the bundle reads")
    request_fields: list[str] | None = None
    created_at: str | None = None
    error: ModelError | None = None


class HealthResponse(BaseModel):
    status: str                 # "ok" or "unavailable"
    online_store: str           # "ok" or the reason it is not
    device: str                 # "cpu", "cuda", "cuda:1"
    device_name: str            # "cpu" or the GPU's name
    batching: bool
    models: list[ModelInfo]     # to an authorized caller only
    model_states: dict[str, int] = Field(default_factory=dict, description="How many bundles are in each state")
