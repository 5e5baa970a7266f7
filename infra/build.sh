#!/usr/bin/env bash
# Build the Lambda artifacts for ddb-rewind: Python 3.13 on arm64 (Graviton).
#
#   bash infra/build.sh           build both artifacts from the pins in infra/requirements-lambda.txt
#   bash infra/build.sh --lock    re-resolve the runtime dependencies and rewrite those pins (then
#                                 review the diff, build, and commit it: see docs/deploy.md)
#
# Produces (all git-ignored):
#   infra/.build/capture/   the consumer and recover functions: the project and what capture
#                           imports (no DuckDB, SQLGlot, NumPy, pytz: only the compactor's and the
#                           verifier's SQL needs them)
#   infra/.build/full/      the compactor and verifier functions: the project and its runtime
#   infra/.build/ddb-rewind-{capture,full}.zip   the same content, zipped reproducibly, for
#                           deployments that do not use SAM (aws lambda update-function-code ...)
# `sam build` copies each directory into its functions through infra/Makefile.
#
# Every third-party file shipped is pinned (==) in infra/requirements-lambda.txt and installed with
# --no-deps: a build never resolves anything by itself, so two builds of one commit ship the same
# versions. Each artifact must stay within BUDGET_MIB unpacked (Lambda's limit is 250 MB, function
# and layers together); over it, the build stops with one line naming the size.
#
# It downloads manylinux aarch64 wheels from PyPI, so it runs on any Linux or macOS host
# with Python >= 3.11 and pip, without Docker and without Python 3.13 installed. CI never
# runs it (it needs the network); tests/test_infra_template.py checks the script and the pins.
#
# Environment knobs:
#   PYTHON=python3.12        host interpreter used to run pip (default: python3)
#   REWIND_KEEP_BOTO3=1      ship the pinned boto3/botocore/s3transfer (and what only they need)
#                            instead of using the copy the Lambda runtime provides
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/.." && pwd)"
out="${here}/.build"
wheels="${out}/wheels"
pins="${here}/requirements-lambda.txt"
python="${PYTHON:-python3}"

lambda_python="3.13"
# Lambda's python3.13 runtime is Amazon Linux 2023 (glibc 2.34): manylinux2014 (glibc 2.17) and
# manylinux_2_28 wheels both run there. pip does not widen a --platform to older or newer glibc
# tags by itself, so both are listed (recent pyarrow/duckdb releases ship manylinux_2_28 only
# for aarch64 on some versions).
platforms=(--platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64)
# Headroom under Lambda's 250 MB unpacked limit: room for a larger release of a dependency, and
# for a layer (an extension, a debugging tool) without rebuilding.
budget_mib=200

# Distributions the Lambda runtime provides (python3.13 ships boto3 and what it needs).
provided=(boto3 botocore s3transfer python-dateutil six urllib3)
if [[ "${REWIND_KEEP_BOTO3:-0}" == "1" ]]; then
    provided=()
fi
# Runtime dependencies no Lambda handler imports: fastavro serves `ddb-rewind replay --format avro`.
never_shipped=(fastavro)
# What only the compactor's and the verifier's DuckDB SQL needs (DuckDB calls Python functions
# through NumPy and hands TIMESTAMPTZ values over with pytz); the capture functions import none.
sql_only=(duckdb sqlglot numpy pytz)

pip_target() {
    "${python}" -m pip install --quiet --no-compile --disable-pip-version-check \
        "${platforms[@]}" --implementation cp --python-version "${lambda_python}" --only-binary=:all: "$@"
}

# Requires-Dist of the project's wheel, minus extras (dev tools, the demo): the runtime.
runtime_requirements() {
    "${python}" - "$1" <<'PY'
import re
import sys
import zipfile
from email.parser import HeaderParser

with zipfile.ZipFile(sys.argv[1]) as zf:
    meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    meta = HeaderParser().parsestr(zf.read(meta_name).decode("utf-8"))
for req in meta.get_all("Requires-Dist") or []:
    if not re.search(r"""\bextra\s*==""", req):
        print(req)
PY
}

rm -rf "${out}"
mkdir -p "${wheels}"

echo "==> building the ddb-rewind wheel (pure Python)"
"${python}" -m pip wheel --quiet --no-deps --wheel-dir "${wheels}" "${root}"
shopt -s nullglob
project_wheels=("${wheels}"/ddb_rewind-*.whl)
shopt -u nullglob
if [[ ${#project_wheels[@]} -ne 1 ]]; then
    echo "build.sh: expected exactly one ddb_rewind wheel in ${wheels}" >&2
    exit 1
fi
project_wheel="${project_wheels[0]}"

if [[ "${1:-}" == "--lock" ]]; then
    echo "==> resolving the runtime requirements for Python ${lambda_python} / manylinux aarch64"
    runtime_requirements "${project_wheel}" > "${out}/requirements.txt"
    pip_target --dry-run --ignore-installed --target "${out}/lock-target" --report "${out}/lock.json" \
        --requirement "${out}/requirements.txt"
    "${python}" - "${out}/lock.json" "${pins}" <<'PY'
import json
import sys

report = json.load(open(sys.argv[1], encoding="utf-8"))
pins = sorted((i["metadata"]["name"].lower().replace("_", "-"), i["metadata"]["version"]) for i in report["install"])
with open(sys.argv[2], "w", encoding="utf-8") as fh:
    fh.write("# What ships to Lambda, pinned: written by `bash infra/build.sh --lock` (see docs/deploy.md).\n"
             "# The project's runtime dependencies and everything they need, resolved for Python 3.13 on\n"
             "# manylinux aarch64. infra/build.sh installs exactly these with --no-deps.\n")
    for name, version in pins:
        fh.write(f"{name}=={version}\n")
PY
    echo "==> wrote ${pins#"${root}"/}: review the diff, build, and commit it"
    exit 0
fi

if [[ ! -f "${pins}" ]]; then
    echo "build.sh: ${pins#"${root}"/} is missing: run bash infra/build.sh --lock" >&2
    exit 1
fi

# The pins, minus the named distributions, as a requirements file for pip.
pins_without() {
    "${python}" - "${pins}" "$@" <<'PY'
import sys

drop = {n.lower().replace("_", "-") for n in sys.argv[2:]}
for line in open(sys.argv[1], encoding="utf-8"):
    text = line.split("#", 1)[0].strip()
    if text and text.split("==", 1)[0].strip().lower().replace("_", "-") not in drop:
        print(text)
PY
}

for handler in stream_consumer/handler.py stream_consumer/recover.py compactor/handler.py replayer/proving/scheduled.py; do
    if [[ ! -f "${root}/${handler}" ]]; then
        echo "build.sh: ${handler} does not exist in ${root}; the Lambda handlers named in" \
             "infra/template.yaml would not import" >&2
        exit 1
    fi
done

# build_artifact NAME HANDLER... -- DISTRIBUTION-NOT-SHIPPED...
build_artifact() {
    local name="$1"; shift
    local handlers=()
    while [[ "$1" != "--" ]]; do handlers+=("$1"); shift; done
    shift
    local artifact="${out}/${name}"
    local zipfile="${out}/ddb-rewind-${name}.zip"
    mkdir -p "${artifact}"
    pins_without "$@" > "${out}/${name}-requirements.txt"
    echo "==> ${name}: installing into ${artifact#"${root}"/} (pinned, without: $*)"
    pip_target --target "${artifact}" --no-deps "${project_wheel}"
    # Console scripts carry the host interpreter's shebang and Lambda never runs them; removing the
    # project's bin/ now also keeps the second install from tripping over an existing bin/.
    rm -rf "${artifact:?}/bin"
    pip_target --target "${artifact}" --no-deps --requirement "${out}/${name}-requirements.txt"

    rm -rf "${artifact:?}/bin"
    # Test suites, bytecode compiled by the host interpreter, C/Cython sources, headers, type stubs.
    find "${artifact}" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
    find "${artifact}" -type f \( -name '*.pyc' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' \
        -o -name '*.pyi' \) -delete
    rm -rf "${artifact:?}/pyarrow/include" "${artifact:?}/pyarrow/src" "${artifact:?}/numpy/_core/include"
    # pyarrow modules nothing in ddb-rewind imports (parquet, dataset, compute and fs stay). Only
    # extension modules and libraries no kept binary links against go: the check below proves it.
    # (libarrow_substrait stays: pyarrow's core module links against it.)
    rm -f "${artifact}"/pyarrow/libarrow_flight.so* "${artifact}"/pyarrow/libarrow_python_flight.so* \
          "${artifact}"/pyarrow/_flight.*.so "${artifact}"/pyarrow/flight.py \
          "${artifact}"/pyarrow/_substrait.*.so "${artifact}"/pyarrow/substrait.py \
          "${artifact}"/pyarrow/_orc.*.so "${artifact}"/pyarrow/_dataset_orc.*.so "${artifact}"/pyarrow/orc.py \
          "${artifact}"/pyarrow/_hdfs.*.so "${artifact}"/pyarrow/_gcsfs.*.so "${artifact}"/pyarrow/_azurefs.*.so \
          "${artifact}"/pyarrow/_pyarrow_cpp_tests.*.so "${artifact}"/pyarrow/libarrow_python.so \
          "${artifact}"/pyarrow/libarrow_python.so.*.*.*

    # Symbol tables and debug sections: the dynamic loader never reads them (infra/elf.py).
    "${python}" "${here}/elf.py" strip "${artifact}"

    for handler in "${handlers[@]}"; do
        if [[ ! -f "${artifact}/${handler}" ]]; then
            echo "build.sh: ${handler} is missing from the ${name} artifact (is its package listed in" \
                 "[tool.setuptools.packages.find] of pyproject.toml?)" >&2
            exit 1
        fi
    done

    # Every shared library a kept binary links against is in the artifact or in the runtime (the
    # manylinux system libraries): a pruned library that is still needed fails here, not at the
    # first cold start in Lambda.
    "${python}" "${here}/elf.py" check "${artifact}"

    local unpacked
    unpacked="$("${python}" -c 'import os, sys; print(sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(sys.argv[1]) for f in fs))' "${artifact}")"
    local mib=$(( (unpacked + 1048575) / 1048576 ))
    if (( unpacked > budget_mib * 1048576 )); then
        echo "build.sh: the ${name} artifact is ${mib} MiB unpacked, over its budget of ${budget_mib} MiB" >&2
        exit 1
    fi
    echo "==> ${name}: ${mib} MiB unpacked (budget ${budget_mib} MiB; Lambda's limit 250 MB)"

    # Reproducible zip (sorted entries, fixed timestamps, normalised modes): an unchanged build gives
    # a byte-identical zip, so a deployment does not update the functions for nothing.
    "${python}" - "${artifact}" "${zipfile}" <<'PY'
import os
import sys
import zipfile

src, dst = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            info = zipfile.ZipInfo(os.path.relpath(path, src), date_time=(1980, 1, 1, 0, 0, 0))
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(path, "rb") as fh:
                zf.writestr(info, fh.read(), compresslevel=9)
PY
    echo "==> ${name}: $(du -h "${zipfile}" | cut -f1) zipped (${zipfile#"${root}"/})"
}

build_artifact capture stream_consumer/handler.py stream_consumer/recover.py \
    -- "${provided[@]}" "${never_shipped[@]}" "${sql_only[@]}"
build_artifact full compactor/handler.py replayer/proving/scheduled.py \
    -- "${provided[@]}" "${never_shipped[@]}"
echo "    next: sam build --template-file infra/template.yaml && sam deploy --guided"
