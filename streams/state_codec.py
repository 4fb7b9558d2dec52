"""The worker's table values: one user's engine state, tagged with its partition.

A value is 4 bytes of partition number, 1 byte of format version, then a pickle of the
immutable state. The partition lets a worker rebuild each partition's engine from the
table after a restart or a rebalance without knowing the producers' partitioner. The
format version guards upgrades: a worker refuses state written by an unknown format
(reset the changelog, or replay, to move on). Watermarks are kept under their own keys.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Mapping

from streams.engine import UserState
from streams.errors import WorkerError
from streams.timefmt import Millis

FORMAT_VERSION = 2  # 2: events, legs, tombstones, origins pickled as value classes, not tuples
WATERMARK_PREFIX = b"\x00watermark/"
_HEADER = struct.Struct(">IB")


def encode_user_state(partition: int, state: UserState) -> bytes:
    return _HEADER.pack(partition, FORMAT_VERSION) + pickle.dumps(state, pickle.HIGHEST_PROTOCOL)


def partition_of(value: bytes) -> int:
    partition, version = _HEADER.unpack_from(value)
    if version != FORMAT_VERSION:
        raise WorkerError(f"state format {version} is not {FORMAT_VERSION}: reset the changelog")
    return int(partition)


def decode_user_state(value: bytes) -> UserState:
    partition_of(value)
    state = pickle.loads(value[_HEADER.size :])
    if not isinstance(state, UserState):
        raise WorkerError("table value is not a user state")
    return state


def watermark_key(partition: int) -> bytes:
    return WATERMARK_PREFIX + str(partition).encode()


def encode_watermark(partition: int, watermark: Millis, read_up_to: Mapping[str, Millis]) -> bytes:
    """A partition's event time, and the largest ts read from each of its topics."""
    return _HEADER.pack(partition, FORMAT_VERSION) + pickle.dumps(
        (watermark, dict(read_up_to)), pickle.HIGHEST_PROTOCOL
    )


def decode_watermark(value: bytes) -> tuple[Millis, dict[str, Millis]]:
    partition_of(value)
    watermark, read_up_to = pickle.loads(value[_HEADER.size:])
    return int(watermark), dict(read_up_to)
