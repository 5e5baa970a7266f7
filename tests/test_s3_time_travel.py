"""Compaction and replay work the same on an s3:// store reached over HTTP as on a local directory."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from changelog.codec import decode_lambda_record
from changelog.store import Store
from ddb_rewind.cli import main
from stream_consumer.capture import capture_batch
from tests.model import Op, model_state, stream_records
from tests.test_store import s3_over_http  # noqa: F401  (the fixture)

TABLE = "orders"
T0 = 1_700_000_000
OPS = [Op(i % 3, {"pk": {"S": "abc"[i % 3]}, "n": {"N": str(i)}, "b": {"B": "AAE="}}, T0 + 1800 * i)
       for i in range(10)]


@pytest.mark.slow
def test_compact_then_replay_from_s3_equals_the_model(s3_over_http: Store, tmp_path: Path) -> None:  # noqa: F811
    capture_batch(s3_over_http, stream_records(TABLE, OPS[:6]), decode_lambda_record, source="test")
    assert main(["compact", "--table", TABLE, "--store", s3_over_http.uri]) == 0
    capture_batch(s3_over_http, stream_records(TABLE, OPS)[6:], decode_lambda_record, source="test")
    for second in (T0 + 1800 * 4, T0 + 1800 * 9):
        out = tmp_path / f"{second}.jsonl"
        at = datetime.fromtimestamp(second, tz=UTC).isoformat()
        assert main(["replay", "--table", TABLE, "--store", s3_over_http.uri, "--at", at, "--to-file", str(out)]) == 0
        lines = out.read_text().splitlines()
        images = sorted(line[len('{"Item":'):-1] for line in lines)
        assert images == sorted(model_state(OPS, second).values())
        assert all(json.loads(line)["Item"]["b"] == {"B": "AAE="} for line in lines)
