"""The online store: Redis layout, newer-wins reads and writes, materialization from the offline store, push,
and (in ``quasar.online.service``) the FastAPI feature service. Backends load lazily (``load_online_store``)."""

from quasar.online.store import (
    ASYNC_ONLINE_STORES,
    ONLINE_STORES,
    AsyncOnlineStore,
    FeatureStatus,
    OnlineColumns,
    OnlineStore,
    load_async_online_store,
    load_online_store,
)

__all__ = [
    "ASYNC_ONLINE_STORES", "ONLINE_STORES", "AsyncOnlineStore", "FeatureStatus", "OnlineColumns", "OnlineStore",
    "load_async_online_store", "load_online_store",
]
