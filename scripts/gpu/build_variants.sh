#!/usr/bin/env bash
# Builds the CUDA core (tests/cuda_core/build.sh) at each named revision and packs the builds into
# .devbuild/variants.tar.xz for `session.sh compare`, then rebuilds the checked-out revision, so
# that .devbuild/ holds its core again (for `sanitize`, `probe`), and packs that core into
# .devbuild/core.tar.xz (what `session.sh` unpacks when the call carries it alone: about 1.5 MiB
# against 22 MiB, room for TensorFlow's last chunk and the wheel in the same call).
#
#   bash scripts/gpu/build_variants.sh main=main table=next/weight-table-soa
#
# Builds run in this checkout, one revision after another (Bazel's cache makes each a minute or
# two); the tree must be clean. Carry [".devbuild/variants.tar.xz", ".devbuild/core.tar.xz"].
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ $# -gt 0 ]] || { echo "usage: $0 name=revision ..." >&2; exit 2; }
if [[ -n $(git status --porcelain --untracked-files=no) ]]; then
  echo "the tree has uncommitted changes: commit or stash them first" >&2
  exit 1
fi
head=$(git symbolic-ref -q --short HEAD || git rev-parse HEAD)
out=$(mktemp -d)
mkdir "$out/variants"
restore() { git checkout -q "$head"; }
trap restore EXIT
for spec in "$@"; do
  name=${spec%%=*} rev=${spec#*=}
  [[ $name != "$spec" && -n $name && -n $rev ]] || { echo "not name=revision: $spec" >&2; exit 2; }
  git checkout -q "$rev"
  echo "building $name ($(git rev-parse --short HEAD))"
  bash tests/cuda_core/build.sh > "$out/$name.log" 2>&1 || { tail -20 "$out/$name.log"; exit 1; }
  cp .devbuild/libdcn_core.so "$out/variants/$name.so"
done
restore
trap - EXIT
echo "building the checked-out $head"
bash tests/cuda_core/build.sh > "$out/head.log" 2>&1 || { tail -20 "$out/head.log"; exit 1; }
tar cJf .devbuild/variants.tar.xz -C "$out" variants
tar cJf .devbuild/core.tar.xz -C .devbuild libdcn_core.so core_smoke
rm -rf "$out"
ls -l .devbuild/variants.tar.xz .devbuild/core.tar.xz
