"""Content signals: pin metadata and user profiles, with vectors, strings, id lists and timestamps."""

import pyarrow as pa
from entities import pin, pins, user, users

from quasar.signals import IdList, String, Timestamp, Vector, signal


@signal(entity=pin, source=pins, ttl="30d", online=True, owner="content",
        features={"embedding": Vector(16, "float16"), "category": String(), "topics": IdList(),
                  "created_at": Timestamp()})
def pin_profile(batch: pa.Table) -> pa.Table:
    """The latest metadata of each pin: its embedding (float16), category, topics and creation time."""
    return pa.table({
        "pin_id": batch["pin_id"],
        "event_timestamp": batch["updated_at"],
        "embedding": batch["embedding"].cast(Vector(16, "float16").arrow_type()),
        "category": batch["category"],
        "topics": batch["topics"],
        "created_at": batch["created_at"],
    })


@signal(entity=user, source=users, ttl="30d", online=True, owner="growth",
        features={"taste": Vector(16), "country": String()})
def user_profile(batch: pa.Table) -> pa.Table:
    """The latest profile of each user: a taste embedding and a country."""
    return pa.table({"user_id": batch["user_id"], "event_timestamp": batch["updated_at"],
                     "taste": batch["taste"], "country": batch["country"]})
