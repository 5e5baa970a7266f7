"""The poller's per-shard checkpoints (the store is the poller's only memory).

A checkpoint is written after the change files of the batch it covers (write-first, publish-last):
a crash between the two re-reads that batch, which rewrites the same objects, and readers
de-duplicate on event_id anyway. ``changelog.state.coverage`` reads ``closed`` and ``watermark_us``
to compute the latest restorable time, so those keys are part of the store's format. The gaps a
checkpoint lists are also written as their own records (``changelog.gaps``), which coverage reads.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from changelog.damage import damaged, micros, read_json_object
from changelog.gaps import Gap, gap_from_json
from changelog.layout import checkpoint_path, checkpoints_root
from changelog.store import Store


@dataclass(frozen=True)
class Checkpoint:
    """How far one shard has been captured.

    ``sequence_number`` is the last record processed, as the stream spells it (for
    AFTER_SEQUENCE_NUMBER); ``closed`` means the shard ended and was fully drained;
    ``watermark_us`` is the time up to which this shard's changes are known to be in the store.
    """

    shard_id: str
    parent_shard_id: str | None = None
    sequence_number: str | None = None
    closed: bool = False
    watermark_us: int | None = None
    gaps: tuple[Gap, ...] = ()

    def with_gap(self, gap: Gap) -> Checkpoint:
        """This checkpoint with one more gap recorded."""
        return replace(self, gaps=(*self.gaps, gap))


def _to_json(checkpoint: Checkpoint) -> dict[str, Any]:
    body = asdict(checkpoint)
    body["gaps"] = [asdict(gap) for gap in checkpoint.gaps]
    return body


def _from_json(body: dict[str, Any]) -> Checkpoint:
    watermark = body.get("watermark_us")
    sequence = body.get("sequence_number")
    if sequence is not None and not isinstance(sequence, str):
        raise TypeError("sequence_number is not text")
    return Checkpoint(
        shard_id=str(body["shard_id"]),
        parent_shard_id=body.get("parent_shard_id"),
        sequence_number=sequence,
        closed=bool(body.get("closed", False)),
        watermark_us=micros(watermark, "watermark_us") if watermark is not None else None,
        gaps=tuple(gap_from_json(gap) for gap in body.get("gaps", [])),
    )


def read_checkpoints(store: Store, table: str) -> dict[str, Checkpoint]:
    """Every checkpoint of the table, by shard id."""
    found = {}
    for path in store.list(checkpoints_root(table)):
        if path.endswith(".json"):
            body = read_json_object(store, path)
            try:
                checkpoint = _from_json(body)
            except (KeyError, TypeError, ValueError) as exc:
                raise damaged(store, path, f"is not a sound checkpoint ({exc})") from None
            found[checkpoint.shard_id] = checkpoint
    return found


def write_checkpoint(store: Store, table: str, checkpoint: Checkpoint) -> None:
    """Write (replace) one shard's checkpoint; call only after the data it covers is stored."""
    data = json.dumps(_to_json(checkpoint), indent=1, sort_keys=True).encode("utf-8")
    store.write(checkpoint_path(table, checkpoint.shard_id), data)

