#!/usr/bin/env bash
# Cuts the TensorFlow bundle that ../shared/gpu/make_tf_bundle.sh writes (.tfdev/c0 ..) again, into
# chunks that each fit one device call beside this repository's tracked files: a call carries at
# most 64 MiB, the tracked tree included (19 MB on 2026-12-03, when the bundle's 50 MB chunks no
# longer fit). The last chunk holds no part of the archive, only install.sh, sha.txt, smoke.py and
# the small wheels, so that the wheel under test and .devbuild fit beside it.
#
#   bash scripts/gpu/tf_chunks.sh        # then, one call each: bash .tfdev/cN/stash.sh (carry .tfdev/cN)
#
# Each chunk's stash.sh copies that chunk alone to /root/tfparts; c0's clears /root/tfparts first,
# since a warm machine keeps what an earlier call left there (and in its copy of the tree).
set -euo pipefail
cd "$(dirname "$0")/../.."
shopt -s nullglob
sums=(.tfdev/c*/sha.txt)
# The parts in the order of their names (part-0 .. or part-00 ..), whatever folder holds them.
mapfile -t parts < <(for p in .tfdev/c*/part-*; do echo "${p##*/} $p"; done | sort -V | cut -d' ' -f2)
[[ ${#parts[@]} -gt 0 && ${#sums[@]} -eq 1 ]] ||
  { echo "no bundle in .tfdev: run ../shared/gpu/make_tf_bundle.sh first" >&2; exit 1; }
meta=$(dirname "${sums[0]}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat "${parts[@]}" > "$work/all"
[[ $(sha256sum < "$work/all" | cut -c1-64) == $(cat "$meta/sha.txt") ]] ||
  { echo "the bundle's parts do not match its sha.txt" >&2; exit 1; }

tracked=$(git ls-files -z | xargs -0 stat -c %s | awk '{s += $1} END {print s}')
chunk=$((64 * 1024 * 1024 - tracked - 2 * 1024 * 1024))  # 2 MiB to spare for untracked files
split -b "$chunk" -d -a 2 "$work/all" "$work/part-"
rm "$work/all"

new="$work/tfdev"
i=0
for part in "$work"/part-*; do
  mkdir -p "$new/c$i"
  mv "$part" "$new/c$i/"
  i=$((i + 1))
done
mkdir -p "$new/c$i"
cp -r "$meta/install.sh" "$meta/sha.txt" "$meta/smoke.py" "$meta/whl" "$new/c$i/"
for dir in "$new"/c*; do
  cat > "$dir/stash.sh" <<'EOF'
#!/usr/bin/env bash
# On the GPU machine: keep this chunk outside the work tree, where the next call finds it.
set -e
here=$(cd "$(dirname "$0")" && pwd)
[ "$(basename "$here")" = c0 ] && rm -rf /root/tfparts
mkdir -p /root/tfparts && cp -r "$here/." /root/tfparts/
ls /root/tfparts | tr '\n' ' '; echo
EOF
  chmod +x "$dir/stash.sh"
done
rm -rf .tfdev && mv "$new" .tfdev
du -sh .tfdev/c* | tr '\n' ' '
echo "(tracked files: $((tracked / 1000000)) MB; chunks of $((chunk / 1000000)) MB)"
