"""Request and response bodies of the feature service (they are also its OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

#: A join key value: an int64 or a string, never a float or a bool.
Key = StrictInt | StrictStr
_SIGNAL = r"^[A-Za-z_][A-Za-z0-9_]*(@[0-9]+)?$"


class FeaturesRequest(BaseModel):
    """``{"entities": {"user_id": [1, 2]}, "features": ["user_engagement:ctr_7d"]}``, or a feature service
    (``"feature_service": "ranker"``) instead of ``features``; request-time signals' fields in
    ``request_data`` or, as Feast's SDK sends them, among the ``entities``."""

    model_config = ConfigDict(extra="forbid")

    entities: dict[str, list[Any]] = Field(
        description="Join key -> keys (int64 or string), one per entity row; every join key the features need, "
                    "all of one length. Request fields may be given here too (as Feast sends request data)",
        examples=[{"user_id": [1, 2]}])
    features: list[StrictStr] | None = Field(
        None, description="'signal', 'signal:feature' or 'signal@version:feature' (stored or request-time); "
                          "give this or feature_service",
        examples=[["user_engagement:ctr_7d"]])
    feature_service: StrictStr | None = Field(
        None, description="A registered feature service, 'name' (its latest version) or 'name@N': its pinned "
                          "features; give this or features", examples=["ranker"])
    request_data: dict[str, list[Any]] | None = Field(
        None, description="Request field -> values, one per entity row, for request-time signals",
        examples=[{"position": [0, 3]}])
    full_feature_names: StrictBool = Field(False, description="Name columns '<signal>__<feature>'")


class FeastFeaturesRequest(BaseModel):
    """Feast's ``GetOnlineFeaturesRequest`` as Feast 0.67's SDK sends it (remote online store): fields Feast
    ignores are ignored here too, and keys are coerced when exact (``quasar.signals.keys``)."""

    model_config = ConfigDict(extra="ignore")

    entities: dict[str, list[Any]] = Field(description="Join key -> keys, one per entity row",
                                           examples=[{"user_id": [1, 2]}])
    features: list[StrictStr] = Field(default_factory=list,
                                      description="'view:feature' references (a view is a signal; "
                                                  "'view@v2:feature' pins a version)")
    feature_service: StrictStr | None = Field(None, description="A registered feature service ('name' or "
                                                                "'name@N') instead of features; request fields "
                                                                "go among the entities")
    full_feature_names: bool = Field(False, description="Name columns '<view>__<feature>'")
    include_feature_view_version_metadata: bool = Field(
        False, description="Add metadata.feature_view_metadata: each view read and the signal version read")


class FeastWriteRequest(BaseModel):
    """Feast's ``WriteToFeatureStoreRequest``: columns of rows of one feature view (a signal), as Feast's SDK
    sends them from ``write_to_online_store`` and ``push`` (remote online store)."""

    model_config = ConfigDict(extra="ignore")

    feature_view_name: StrictStr = Field(description="The signal ('signal' or 'signal@version')")
    df: dict[str, list[Any]] = Field(description="Column -> values: the join key, event_timestamp, created "
                                                 "(optional) and every feature; Timestamp features in epoch seconds")
    allow_registry_cache: bool = Field(True, description="Accepted and ignored (signals are cached 5 s)")
    transform_on_write: bool = Field(True, description="Accepted and ignored (no on-write transforms)")


class FeastPushRequest(BaseModel):
    """Feast's ``PushFeaturesRequest``: a push source is the signal of its name."""

    model_config = ConfigDict(extra="ignore")

    push_source_name: StrictStr = Field(description="The signal to write ('signal' or 'signal@version')")
    df: dict[str, list[Any]] = Field(description="Column -> values, as for /write-to-online-store")
    allow_registry_cache: bool = Field(True, description="Accepted and ignored")
    to: Literal["online", "offline", "online_and_offline"] = "online"
    transform_on_write: bool = Field(True, description="Accepted and ignored")


class FeatureViewMetadata(BaseModel):
    name: str = Field(description="The view (signal) read")
    version: int = Field(description="The signal version read")


class Metadata(BaseModel):
    feature_names: list[str]
    feature_view_metadata: list[FeatureViewMetadata] | None = Field(
        None, description="Only on /get-online-features with include_feature_view_version_metadata")


class FeatureColumn(BaseModel):
    """One column over the entity rows. Values are JSON: vectors and id lists are lists, weighted id lists
    lists of ``{"id", "weight"}``, timestamps ISO-8601 UTC strings, NaN and ±inf null."""

    values: list[Any]
    statuses: list[Literal["PRESENT", "NOT_FOUND", "NULL_VALUE", "OUTSIDE_MAX_AGE"]]
    event_timestamps: list[str]


class FeaturesResponse(BaseModel):
    """Feast's response shape: the join keys first, then the features in request order."""

    metadata: Metadata
    results: list[FeatureColumn]


class PushRequest(BaseModel):
    """Rows of one signal (its latest version, or ``name@version``) to write, newer event time wins."""

    model_config = ConfigDict(extra="forbid")

    signal: StrictStr = Field(pattern=_SIGNAL, description="'signal' or 'signal@version'",
                              examples=["user_engagement"])
    rows: list[dict[str, Any]] = Field(
        description="Rows of the join key, event_timestamp (ISO-8601; naive is UTC), created_timestamp "
                    "(optional) and every feature (null for a missing value)")
    to: Literal["online", "online_and_offline"] = "online"


class PushResponse(BaseModel):
    signal: str
    version: int
    rows: int = Field(description="Rows received")
    written: int = Field(description="Rows written online (not older than what was stored)")
    offline: bool = Field(description="Whether the rows were appended to the offline store too")


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"]
    online_store: str = Field(description="'ok' or why it cannot be reached")


class ErrorDetail(BaseModel):
    type: str = Field(description="The error class, e.g. NotFoundError, RequestError")
    message: str = Field(description="What is wrong, naming the signal, feature, key or column")


class ErrorResponse(BaseModel):
    """Every error answer."""

    error: ErrorDetail
