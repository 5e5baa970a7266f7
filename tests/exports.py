"""Native DynamoDB exports (DYNAMODB_JSON, full export) built in the real S3 layout, for tests.

    <prefix>/AWSDynamoDB/<export id>/_started
    <prefix>/AWSDynamoDB/<export id>/manifest-summary.json (+ .checksum)
    <prefix>/AWSDynamoDB/<export id>/manifest-files.json   (+ .checksum)
    <prefix>/AWSDynamoDB/<export id>/data/<random>.json.gz
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

ACCOUNT = "123456789012"


def export_objects(table: str, items: list[dict[str, Any]], export_time: str, *, files: int = 2,
                   prefix: str = "exports", export_id: str = "01700000000000-abcdef12",
                   bucket: str = "export-bucket") -> tuple[str, dict[str, bytes]]:
    """(export folder key, {bucket-relative key: bytes}) of an export holding ``items``.

    Items are spread round-robin over ``files`` data files; a file may be empty, as for an empty
    partition of the real thing.
    """
    folder = f"{prefix}/AWSDynamoDB/{export_id}"
    objects: dict[str, bytes] = {f"{folder}/_started": b""}
    lines = []
    for index in range(files):
        chunk = items[index::files]
        # UTF-8 as DynamoDB writes it, not \u escapes: a string may hold U+2028 as it is.
        body = "".join(json.dumps({"Item": item}, ensure_ascii=False) + "\n" for item in chunk).encode("utf-8")
        data = gzip.compress(body)
        key = f"{folder}/data/{hashlib.sha1(f'{export_id}{index}'.encode()).hexdigest()[:26]}.json.gz"
        objects[key] = data
        lines.append(json.dumps({
            "itemCount": len(chunk),
            "md5Checksum": base64.b64encode(hashlib.md5(data).digest()).decode("ascii"),
            "etag": hashlib.md5(data).hexdigest(),
            "dataFileS3Key": key,
        }))
    files_body = ("\n".join(lines) + "\n").encode("utf-8")
    objects[f"{folder}/manifest-files.json"] = files_body
    objects[f"{folder}/manifest-files.checksum"] = hashlib.md5(files_body).hexdigest().encode()
    table_arn = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{table}"
    summary = {
        "version": "2020-06-30",
        "exportArn": f"{table_arn}/export/{export_id}",
        "startTime": export_time,
        "endTime": export_time,
        "tableArn": table_arn,
        "tableId": "12345a12-abcd-123a-ab12-1234abc12345",
        "exportTime": export_time,
        "s3Bucket": bucket,
        "s3Prefix": prefix,
        "s3SseAlgorithm": "AES256",
        "s3SseKmsKeyId": None,
        "manifestFilesS3Key": f"{folder}/manifest-files.json",
        "billedSizeBytes": sum(len(v) for v in objects.values()),
        "itemCount": len(items),
        "outputFormat": "DYNAMODB_JSON",
        "exportType": "FULL_EXPORT",
    }
    summary_body = json.dumps(summary, indent=1).encode("utf-8")
    objects[f"{folder}/manifest-summary.json"] = summary_body
    objects[f"{folder}/manifest-summary.checksum"] = hashlib.md5(summary_body).hexdigest().encode()
    return folder, objects


def write_export(root: Path, table: str, items: list[dict[str, Any]], export_time: str, **kwargs: Any) -> Path:
    """Write an export under the local directory ``root`` (standing in for the bucket); returns its folder."""
    folder, objects = export_objects(table, items, export_time, **kwargs)
    for key, data in objects.items():
        target = root / key
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root / folder


def upload_export(client: Any, bucket: str, table: str, items: list[dict[str, Any]], export_time: str,
                  **kwargs: Any) -> str:
    """Put an export into an S3 bucket; returns the ``s3://`` URI of its folder."""
    folder, objects = export_objects(table, items, export_time, bucket=bucket, **kwargs)
    for key, data in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)
    return f"s3://{bucket}/{folder}"


def data_files(folder: Path) -> list[Path]:
    """The data files of a local export, sorted."""
    return sorted((folder / "data").glob("*.json.gz"))
