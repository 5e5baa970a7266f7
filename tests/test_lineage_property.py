"""The lineage rule never claims a moment whose changes were not all read: a property over shard trees.

An independent model of a DynamoDB stream: a tree of shards (a closed shard has one or two children,
as splits and rollovers make), each holding records whose times never go back along a lineage (a
child's first record is no older than its parent's last). Capture has read some prefix of each
shard, and has listed some of them (a child created after the last listing is not known yet; a shard
may fail before it is read). The poller's checkpoints are built from that state the way the poller
writes them, and the rule (``changelog.captured.lineage_holds``) must not claim a moment at or
before which some record, of any shard, known or not, is still unread.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from changelog.captured import ShardRead, lineage_holds


@dataclass
class ModelShard:
    shard_id: str
    parent: str | None
    times: list[int]  # its records' stream times, in order
    closed: bool
    read: int = 0  # how many of its records capture has stored
    listed: bool = False  # whether capture knows the shard (has written its checkpoint)
    children: list[str] = field(default_factory=list)


@st.composite
def streams(draw: st.DrawFn) -> dict[str, ModelShard]:
    shards: dict[str, ModelShard] = {}

    def grow(shard_id: str, parent: str | None, first_time: int, depth: int) -> None:
        count = draw(st.integers(0, 4))
        steps = draw(st.lists(st.integers(0, 3), min_size=count, max_size=count))  # 0: the same second
        times = []
        now = first_time
        for step in steps:
            now += step
            times.append(now * 1_000_000)
        closed = depth < 3 and draw(st.booleans())
        shard = ModelShard(shard_id, parent, times, closed)
        shards[shard_id] = shard
        if closed:
            last = (times[-1] // 1_000_000) if times else first_time
            for index in range(draw(st.integers(1, 2))):
                child = f"{shard_id}.{index}"
                shard.children.append(child)
                grow(child, shard_id, last, depth + 1)

    grow("root", None, 100, 0)
    return shards


@st.composite
def capture_states(draw: st.DrawFn) -> dict[str, ModelShard]:
    shards = draw(streams())
    # What capture knows: the root, and below a known shard its children unless they came after the last
    # listing. A shard's children are created together, when it closes, so one listing holds all or none.
    def visit(shard_id: str) -> None:
        shard = shards[shard_id]
        shard.listed = True
        if draw(st.booleans()):
            for child in shard.children:
                visit(child)

    visit("root")
    for shard in shards.values():
        if shard.listed:
            shard.read = draw(st.integers(0, len(shard.times)))
    return shards


def checkpoints(shards: dict[str, ModelShard], caught_up_gap: int) -> dict[str, ShardRead]:
    """The checkpoints the poller writes for this state (stream_consumer/poller.py)."""
    found = {}
    for shard in shards.values():
        if not shard.listed:
            continue
        drained = shard.read == len(shard.times)
        watermark = None
        if shard.read:
            # Complete strictly before the last record read (the next may share its second).
            watermark = shard.times[shard.read - 1] - 1
        if drained and not shard.closed and shard.read:
            # Caught up on an open shard: what it holds later is newer than what it holds now.
            watermark = shard.times[-1] - 1 + caught_up_gap
        # Closed once its end was reached (GetRecords gave no next iterator); an empty shard proves no time.
        found[shard.shard_id] = ShardRead(shard.shard_id, shard.parent, shard.closed and drained, watermark)
    return found


@settings(max_examples=300, deadline=None)
@given(capture_states(), st.integers(0, 1))
def test_the_lineage_rule_never_claims_a_moment_with_an_unread_change(
    shards: dict[str, ModelShard], caught_up_gap: int
) -> None:
    holds = [hold.at_us for hold in lineage_holds(checkpoints(shards, caught_up_gap))]
    if not holds or any(hold is None for hold in holds):
        return  # no moment is claimed
    claimed = min(hold for hold in holds if hold is not None)
    unread = [t for shard in shards.values() for t in shard.times[shard.read:]]
    assert all(t > claimed for t in unread), (claimed, unread)
