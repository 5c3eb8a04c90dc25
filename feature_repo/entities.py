"""Entities: the two things every CTR sample joins on."""

from feast import Entity, ValueType

# A MovieLens user (or any data set's user); profile and text features hang off it.
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64, description="A user who rates items")

# A movie (any data set's item).
item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64, description="An item users rate")

ENTITIES = {"user": user, "item": item}
