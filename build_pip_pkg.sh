#!/usr/bin/env bash
# Builds the wheel: DEST/tensorflow_dcn-<version>-py3-none-manylinux_2_27_x86_64.whl (DEST: dist).
#   ./build_pip_pkg.sh [DEST]                                  from a configured checkout
#   bazel build //:build_pip_pkg && bazel-bin/build_pip_pkg [DEST]
# Stages exactly what //tensorflow_dcn declares (Python sources + _dcn_ops.so), refuses a library
# whose glibc/libstdc++ symbol versions exceed manylinux_2_27 (scripts/check_manylinux.py), builds
# the wheel with the `python3` on PATH (setuptools, pinned in requirements-dev.txt) and checks the
# result again. PLAT=<tag> would override the tag (and the policy checked: manylinux_2_28, ...).
set -euo pipefail

DEST_ARG="${1:-dist}"
mkdir -p "$DEST_ARG"
DEST=$(cd "$DEST_ARG" && pwd)
PLAT="${PLAT:-manylinux_2_27_x86_64}"
POLICY="${PLAT%_x86_64}"
PY="${PYTHON:-python3}"

RUNFILES="$0.runfiles/tensorflow_dcn"   # <runfiles>/<workspace name>
if [[ ! -d "$RUNFILES" ]]; then
  # Called from a checkout: build the runfiles tree with Bazel, then run the built script.
  cd "$(dirname "$0")"
  bazel build //:build_pip_pkg
  exec bazel-bin/build_pip_pkg "$DEST"
fi

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
cp -L "$RUNFILES/setup.py" "$RUNFILES/MANIFEST.in" "$RUNFILES/README.md" "$STAGE/"
cp -rL "$RUNFILES/tensorflow_dcn" "$STAGE/"   # -L: runfiles are symlinks
find "$STAGE" \( -name __pycache__ -o -name '*.pyc' \) -prune -exec rm -rf {} +
chmod -R u+w "$STAGE"

echo "build_pip_pkg: checking the op library against $POLICY"
"$PY" "$RUNFILES/scripts/check_manylinux.py" --policy "$POLICY" "$STAGE/tensorflow_dcn/_dcn_ops.so"

(cd "$STAGE" && TFDCN_PLAT_NAME="$PLAT" "$PY" -m pip wheel --quiet --no-deps --no-build-isolation \
  --use-pep517 --wheel-dir "$STAGE/dist" .)
WHEEL=$(ls "$STAGE"/dist/*.whl)
"$PY" "$RUNFILES/scripts/check_manylinux.py" --policy "$POLICY" "$WHEEL"
cp -f "$WHEEL" "$DEST/"
echo "build_pip_pkg: wrote $DEST/$(basename "$WHEEL")"
