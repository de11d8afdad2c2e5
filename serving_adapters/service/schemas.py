"""Request and response bodies of the scoring service."""

from __future__ import annotations

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


class ScoreResponse(BaseModel):
    """Scores in candidate order."""

    model: str
    scores: list[float]


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
