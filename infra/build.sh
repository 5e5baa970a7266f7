#!/usr/bin/env bash
# Build the Lambda artifact for ddb-rewind: Python 3.13 on arm64 (Graviton).
#
#   bash infra/build.sh
#
# Produces (both git-ignored):
#   infra/.build/artifact/               the unpacked deployment package; `sam build` copies it
#                                        through infra/Makefile (see docs/deploy.md)
#   infra/.build/ddb-rewind-lambda.zip   the same content, zipped reproducibly, for deployments
#                                        that do not use SAM (aws lambda update-function-code ...)
#
# It downloads manylinux aarch64 wheels from PyPI, so it runs on any Linux or macOS host
# with Python >= 3.11 and pip, without Docker and without Python 3.13 installed. CI never
# runs it (it needs the network); tests/test_infra_template.py only checks the template.
#
# Environment knobs:
#   PYTHON=python3.12        host interpreter used to run pip (default: python3)
#   REWIND_KEEP_BOTO3=1      keep boto3/botocore/s3transfer in the artifact instead of using the
#                            copy the Lambda runtime provides (pin them if the code needs a newer API)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${here}/.." && pwd)"
out="${here}/.build"
artifact="${out}/artifact"
wheels="${out}/wheels"
zipfile="${out}/ddb-rewind-lambda.zip"
python="${PYTHON:-python3}"

lambda_python="3.13"
# Lambda's python3.13 runtime is Amazon Linux 2023 (glibc 2.34): manylinux2014 (glibc 2.17) and
# manylinux_2_28 wheels both run there. pip does not widen a --platform to older or newer glibc
# tags by itself, so both are listed (recent pyarrow/duckdb releases ship manylinux_2_28 only
# for aarch64 on some versions).
platforms=(--platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64)
# Lambda's unpacked limit for a .zip function (function + layers) is 250 MB.
max_unpacked_bytes=$((250 * 1024 * 1024))

# Distributions that must not be shipped:
# - moto is a project dependency for `ddb-rewind demo` (an embedded local AWS); in Lambda it is
#   dead weight, and moto[server] drags in cfn-lint, docker, flask, cryptography, ... which alone
#   would push the package past the 250 MB limit.
# - boto3/botocore/s3transfer come with the Lambda Python runtime.
excluded=(moto)
if [[ "${REWIND_KEEP_BOTO3:-0}" != "1" ]]; then
    excluded+=(boto3 botocore s3transfer)
fi

for handler in stream_consumer/handler.py stream_consumer/recover.py compactor/handler.py replayer/scheduled.py; do
    if [[ ! -f "${root}/${handler}" ]]; then
        echo "build.sh: ${handler} does not exist in ${root}; the Lambda handlers named in" \
             "infra/template.yaml would not import" >&2
        exit 1
    fi
done

rm -rf "${out}"
mkdir -p "${artifact}" "${wheels}"

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

echo "==> runtime requirements (from the wheel's metadata, minus: ${excluded[*]})"
# The project is installed in two steps rather than with one `pip install .` so that the
# excluded distributions (and everything only they depend on) are never resolved at all:
# deleting moto after the fact would leave its whole dependency tree behind.
"${python}" - "${project_wheel}" "${excluded[@]}" > "${out}/requirements.txt" <<'PY'
import re
import sys
import zipfile
from email.parser import HeaderParser

wheel, excluded = sys.argv[1], {n.lower().replace("_", "-") for n in sys.argv[2:]}
with zipfile.ZipFile(wheel) as zf:
    meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    meta = HeaderParser().parsestr(zf.read(meta_name).decode("utf-8"))
for req in meta.get_all("Requires-Dist") or []:
    if re.search(r"""\bextra\s*==""", req):
        continue  # optional extras (dev tools) are not part of the runtime
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1)
    if name.lower().replace("_", "-") in excluded:
        continue
    print(req)
PY
sed 's/^/    /' "${out}/requirements.txt"

echo "==> installing for Python ${lambda_python} / manylinux aarch64 into ${artifact#"${root}"/}"
pip_target=(
    "${python}" -m pip install --quiet --no-compile --disable-pip-version-check
    --target "${artifact}"
    "${platforms[@]}"
    --implementation cp
    --python-version "${lambda_python}"
    --only-binary=:all:
)
"${pip_target[@]}" --no-deps "${project_wheel}"
# Console scripts carry the host interpreter's shebang and Lambda never runs them; removing the
# project's bin/ now also keeps the second install from tripping over an existing bin/.
rm -rf "${artifact:?}/bin"
"${pip_target[@]}" --requirement "${out}/requirements.txt"

echo "==> pruning"
for dist in "${excluded[@]}"; do
    # Defensive: a transitive dependency might still have pulled one in.
    rm -rf "${artifact:?}/${dist}" "${artifact:?}/${dist}"-*.dist-info
done
rm -rf "${artifact:?}/bin"
# Test suites, bytecode compiled by the host interpreter, C/Cython sources and headers.
find "${artifact}" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
find "${artifact}" -type f \( -name '*.pyc' -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' \) -delete
rm -rf "${artifact:?}/pyarrow/include" "${artifact:?}/pyarrow/src"
# Arrow Flight and Substrait are the largest optional pyarrow libraries and nothing in ddb-rewind
# imports pyarrow.flight or pyarrow.substrait (parquet, dataset, compute and fs stay).
rm -f "${artifact}"/pyarrow/libarrow_flight.so* "${artifact}"/pyarrow/libarrow_python_flight.so* \
      "${artifact}"/pyarrow/_flight.*.so "${artifact}"/pyarrow/flight.py \
      "${artifact}"/pyarrow/libarrow_substrait.so* "${artifact}"/pyarrow/_substrait.*.so \
      "${artifact}"/pyarrow/substrait.py

for handler in stream_consumer/handler.py stream_consumer/recover.py compactor/handler.py replayer/scheduled.py; do
    if [[ ! -f "${artifact}/${handler}" ]]; then
        echo "build.sh: ${handler} is missing from the artifact (is its package listed in" \
             "[tool.setuptools.packages.find] of pyproject.toml?)" >&2
        exit 1
    fi
done

unpacked_bytes="$("${python}" - "${artifact}" <<'PY'
import os
import sys

print(sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(sys.argv[1]) for f in fs))
PY
)"
echo "==> unpacked size: $((unpacked_bytes / 1024 / 1024)) MiB (Lambda limit: 250 MB)"
if (( unpacked_bytes > max_unpacked_bytes )); then
    echo "build.sh: the artifact is larger than Lambda's 250 MB unpacked limit" >&2
    exit 1
fi

echo "==> zipping ${zipfile#"${root}"/}"
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
echo "==> done: $(du -h "${zipfile}" | cut -f1) zipped"
echo "    next: sam build --template-file infra/template.yaml && sam deploy --guided"
