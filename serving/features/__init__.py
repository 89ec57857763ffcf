"""Online feature readers for the rank service.

Two readers return the same :class:`~serving.features.redis_reader.FeatureReadResult`:

- ``redis_reader.RedisFeatureReader`` reads Feast's Redis online store directly, in Feast's
  own key and value layout (``feast_layout``), with one round trip and a vectorised decode.
  It imports neither Feast nor protobuf.
- ``sqlite_reader.SqliteFeatureReader`` reads Feast's SQLite online store (the embedded
  default) directly, one query per view, without Feast.
- ``sdk_reader.SdkFeatureReader`` goes through ``FeatureStore.get_online_features`` (Feast is
  imported lazily): the fallback for any other online store.

This module only holds the exceptions both raise, so importing it costs nothing. They derive
from :class:`serving.errors.ServingError`, like every domain error of the service.
"""

from __future__ import annotations

from serving.errors import ServingError

__all__ = ["FeatureDecodeError", "FeatureStoreUnavailable"]


class FeatureStoreUnavailable(ServingError):
    """The online store could not be reached or answered with an error.

    The rank API maps this to a quick 503 for models that need store features.
    """


class FeatureDecodeError(ServingError, ValueError):
    """A stored value is not the ``Value{float_list_val}`` protobuf this reader expects."""
