"""Cold-start import time of each Lambda handler, beside the bare interpreter's start.

Run ``python -m bench.coldstart [--runs N]``. Each run starts a fresh interpreter that imports one
handler module (what Lambda's init phase does before the first event), so nothing is cached in
the process; the OS file cache is warm after the first run, as on a Lambda host that already
pulled the code. The anchor, ``python -c pass``, is measured in the same run: the import cost of
a handler is its time minus the anchor's. The median of the runs is printed.

Measured on this machine (x86_64, the development venv, not the arm64 artifact): see
docs/deploy.md, "Cold start".
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HANDLERS = {
    "anchor (python -c pass)": "pass",
    "consumer (stream_consumer.handler)": "import stream_consumer.handler",
    "recover (stream_consumer.recover)": "import stream_consumer.recover",
    "compactor (compactor.handler)": "import compactor.handler",
    "verifier (replayer.proving.scheduled)": "import replayer.proving.scheduled",
}


def _once(code: str, env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters per handler (median shown)")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    # What the template sets; no credentials are read at import time.
    env = {**os.environ, "REWIND_STORE": "s3://bench-bucket/rewind", "REWIND_TABLE": "bench",
           "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
           "POWERTOOLS_METRICS_NAMESPACE": "bench", "POWERTOOLS_SERVICE_NAME": "bench"}
    for code in HANDLERS.values():
        _once(code, env, root)  # warms the file cache; not counted
    medians = {name: statistics.median(_once(code, env, root) for _ in range(args.runs))
               for name, code in HANDLERS.items()}
    anchor = medians["anchor (python -c pass)"]
    print(f"{'handler':40} {'median s':>9} {'minus anchor':>13}")
    for name, seconds in medians.items():
        print(f"{name:40} {seconds:9.3f} {seconds - anchor:13.3f}")


if __name__ == "__main__":
    main()
