"""Entities and sources of the example project: users see pins; events record impressions and clicks."""

from quasar.signals import Entity, Source

user = Entity(name="user", join_key="user_id", description="A person using the app.")
pin = Entity(name="pin", join_key="pin_id", description="An image with a description.")

events = Source.parquet(name="events", path="data/events", timestamp="ts",
                        description="One row per impression: user, pin, clicked (0/1), dwell seconds.")
pins = Source.parquet(name="pins", path="data/pins", timestamp="updated_at",
                      description="Pin metadata snapshots: embedding, category, topic ids.")
users = Source.parquet(name="users", path="data/users", timestamp="updated_at",
                       description="User profile snapshots: country and a taste embedding.")
