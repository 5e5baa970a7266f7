"""The file writers' own encoders give exactly the bytes of the general libraries they replace."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro

from replayer.restoring.export import AVRO_SCHEMA, to_avro_value, write_avro

EVERY_TYPE = {
    "pk": {"S": "cust#1 é 😀"}, "sk": {"N": "-12.50"}, "blob": {"B": "AAEC/w=="}, "empty_blob": {"B": ""},
    "tags": {"SS": ["a", "b"]}, "scores": {"NS": ["1", "2.5"]}, "blobs": {"BS": ["AA==", "AQI="]},
    "address": {"M": {"city": {"S": "Zürich"}, "inner": {"M": {}}, "none": {"NULL": True}}},
    "list": {"L": [{"N": "1"}, {"L": []}, {"M": {"x": {"BOOL": False}}}]}, "nothing": {"NULL": True},
    "flag": {"BOOL": True}, "long": {"S": "x" * 5000},
}


def _fastavro_bytes(images: list[str], sync: bytes) -> bytes:
    records = ({"Item": {name: to_avro_value(value) for name, value in json.loads(image).items()}}
               for image in images)
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(AVRO_SCHEMA), records, codec="deflate", sync_marker=sync)
    return out.getvalue()


def test_avro_file_is_byte_for_byte_what_fastavro_writes(tmp_path: Path) -> None:
    # Enough items for several blocks, so the block boundaries are held to fastavro's too.
    images = [json.dumps(EVERY_TYPE, ensure_ascii=False)] + [
        json.dumps({"pk": {"S": f"k{n}"}, "n": {"N": str(n * 7)}, "m": {"M": {"a": {"SS": [str(n)]}}}})
        for n in range(3000)
    ]
    path = tmp_path / "items.avro"
    assert write_avro(path, images) == len(images)
    written = path.read_bytes()
    with open(path, "rb") as handle:
        sync = fastavro.reader(handle)._header["sync"]
    assert written == _fastavro_bytes(images, sync)
