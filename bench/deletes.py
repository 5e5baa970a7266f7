"""Benchmark: deleting many objects of an S3 store (a ledger fold, a merge, an expire), against one call each.

Starts moto's S3 on 127.0.0.1 (reached over HTTP, as a real bucket is), writes N empty objects, then
in the same run deletes them twice: the anchor, ``Store.delete`` once per object (what every
deletion did before), and ``Store.delete_many`` (DeleteObjects, 1,000 keys a call). Checks that each
left nothing, prints both times; asserts nothing else. Each call to real S3 also pays a round trip
of 10-30 ms, which loopback does not: the gap there is larger.

    python -m bench.deletes [--objects 3000]
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import boto3
from moto.server import ThreadedMotoServer

from changelog.store import S3Store


def main() -> None:
    """Write, delete both ways, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=3000)
    args = parser.parse_args()
    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled"}.items():
        os.environ.setdefault(name, value)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # port 0: any free one
    server.start()
    try:
        host, port = server.get_host_and_port()
        client = boto3.client("s3", endpoint_url=f"http://{host}:{port}")
        client.create_bucket(Bucket="bench-deletes")
        store = S3Store("bench-deletes", "store", client=client)
        paths = [f"tables/orders/ledger/{n:08d}" for n in range(args.objects)]
        seconds = {}
        for way in ("delete (anchor)", "delete_many"):
            for path in paths:
                store.write(path, b"")
            started = time.perf_counter()
            if way == "delete_many":
                store.delete_many(paths)
            else:
                for path in paths:
                    store.delete(path)
            seconds[way] = time.perf_counter() - started
            assert store.list("tables/") == [], f"{way} left objects behind"
        anchor, many = seconds["delete (anchor)"], seconds["delete_many"]
        print(f"{args.objects:,} objects over HTTP to moto: one DeleteObject each {anchor:.2f} s, "
              f"DeleteObjects {many:.2f} s ({anchor / many:.0f}x faster)")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
