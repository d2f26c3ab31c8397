#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (or refreshes a checkout) for building and testing. Idempotent.
#   scripts/setup_env.sh
# Environment:
#   VENV=<dir>          the virtual environment (default: <repo>/.venv)
#   PYTHON=<python3>    the interpreter that creates it (default: python3), one that TensorFlow
#                       2.21 has wheels for (3.11 here)
#   TFDCN_WHEELHOUSE=<dir>  where the pinned wheels are downloaded to (default:
#                       ~/.cache/tensorflow_dcn/wheelhouse); the venv is installed from there, and
#                       tests/test_wheel.py installs TensorFlow from there without network
#   CONFIG=auto|cpu|cuda
#       auto (default): keep the existing .tf_configure.bazelrc's CPU/CUDA choice (refreshing its
#       paths), or on first setup CUDA when nvcc is found (CUDA_TOOLKIT_PATH, /usr/local/cuda).
#       cpu / cuda: ./configure.sh --cpu / ./configure.sh.
#   CUDA12_PATH=<dir>   the CUDA 12.9 directory of the portable CUDA build (default:
#                       ~/.cache/tensorflow_dcn/cuda-12.9)
# Steps: Bazel (apt package bazel-bootstrap, 4.2.3) if missing; the venv with requirements-dev.txt
# (pip runs only when a pin is not installed); for the CUDA build, clang-16 (apt) if missing and
# the CUDA 12.9 directory from the wheels of requirements-cuda12.txt (downloaded into the
# wheelhouse once, unpacked by scripts/unpack_cuda12.py); ./configure.sh with the venv's python.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
CONFIG="${CONFIG:-auto}"
REQS="$ROOT/requirements-dev.txt"
WHEELHOUSE="${TFDCN_WHEELHOUSE:-$HOME/.cache/tensorflow_dcn/wheelhouse}"
CUDA="${CUDA_TOOLKIT_PATH:-/usr/local/cuda}"
export CUDA12_PATH="${CUDA12_PATH:-$HOME/.cache/tensorflow_dcn/cuda-12.9}"

log() { echo "setup_env: $*" >&2; }
as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  log "apt-get install -y $*"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# 1. Tools: Bazel 4.2.3 from Debian (the newest reachable offline; see docs), a C++ compiler.
if ! command -v bazel >/dev/null; then
  apt_install bazel-bootstrap
fi
command -v g++ >/dev/null || apt_install g++

# 2. The venv with the pinned requirements.
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating $VENV with $($PYTHON --version 2>&1)"
  if ! "$PYTHON" -m venv "$VENV"; then
    # Debian's python3 needs python3-venv for ensurepip.
    rm -rf "$VENV"
    apt_install python3-venv
    "$PYTHON" -m venv "$VENV"
  fi
fi
# Every `name==version` pin already installed? (0.1 s, no network.) Else pip install.
if "$VENV/bin/python" - "$REQS" <<'PY'
import importlib.metadata as md, re, sys
for line in open(sys.argv[1]):
    m = re.match(r"\s*([A-Za-z0-9_.-]+)==([^\s;#]+)", line)
    if m:
        try:
            if md.version(m.group(1)) != m.group(2):
                sys.exit(1)
        except md.PackageNotFoundError:
            sys.exit(1)
PY
then
  log "$VENV already has the pinned requirements"
else
  # Download once into the wheelhouse, install from it (pip's HTTP cache may not keep anything).
  log "downloading requirements-dev.txt into $WHEELHOUSE"
  mkdir -p "$WHEELHOUSE"
  "$VENV/bin/python" -m pip download --quiet --dest "$WHEELHOUSE" -r "$REQS"
  log "installing requirements-dev.txt into $VENV"
  "$VENV/bin/python" -m pip install --quiet --no-compile --no-index --find-links "$WHEELHOUSE" \
    -r "$REQS"
fi

# 3. CPU only, or CPU + CUDA?
ARGS=()
case "$CONFIG" in
  cpu) ARGS=(--cpu) ;;
  cuda) [[ -x "$CUDA/bin/nvcc" ]] || { log "CONFIG=cuda but there is no nvcc at $CUDA/bin/nvcc"; exit 1; } ;;
  auto) if grep -q "TF_NEED_CUDA=0" "$ROOT/.tf_configure.bazelrc" 2>/dev/null || [[ ! -x "$CUDA/bin/nvcc" ]]; then
          ARGS=(--cpu)
        fi ;;
  *) log "CONFIG must be auto, cpu or cuda, not '$CONFIG'"; exit 1 ;;
esac

# 4. The CUDA build's second toolchain (tensorflow_dcn/cuda_targets.bzl): clang-16 and CUDA 12.9
# headers, ptxas and libdevice from pinned wheels, for kernels that load on drivers >= 525.
if [[ ${#ARGS[@]} == 0 ]]; then
  command -v clang++-16 >/dev/null || apt_install clang-16
  UNPACK=("$VENV/bin/python" "$ROOT/scripts/unpack_cuda12.py" --wheelhouse "$WHEELHOUSE" --dest "$CUDA12_PATH")
  if "${UNPACK[@]}" --check; then
    log "$CUDA12_PATH is up to date"
  else
    log "downloading requirements-cuda12.txt into $WHEELHOUSE"
    mkdir -p "$WHEELHOUSE" "$(dirname "$CUDA12_PATH")"
    "$VENV/bin/python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELHOUSE" \
      -r "$ROOT/requirements-cuda12.txt"
    "${UNPACK[@]}" >/dev/null
    log "unpacked the CUDA 12.9 wheels into $CUDA12_PATH"
  fi
fi

# 5. ./configure.sh against the venv's TensorFlow.
log "./configure.sh ${ARGS[*]:-}"
PYTHON_BIN_PATH="$VENV/bin/python" "$ROOT/configure.sh" "${ARGS[@]}" >/dev/null
grep -q "TF_NEED_CUDA=1" "$ROOT/.tf_configure.bazelrc" && log "configured: CPU + CUDA kernels" \
  || log "configured: CPU kernels only"
