# Entry points. On a fresh Debian 12 machine `make test` or `make bench` is all it takes.
#   make setup   Bazel (apt), the venv .venv with requirements-dev.txt, ./configure.sh
#   make build   the op library, also copied to tensorflow_dcn/ (PYTHONPATH=. works in the tree)
#   make wheel   dist/tensorflow_dcn-<version>-py3-none-manylinux_2_27_x86_64.whl
#   make test    lint, build, bazel test //tests/..., wheel, install it, pytest against the wheel
#   make lint    ruff (Python) and clang-format (C++/CUDA) checks; `make format` applies them
#   make bench   build, python -m tensorflow_dcn.benchmark $(BENCH_ARGS) (op/layer level), then
#                python -m tensorflow_dcn.benchmark model $(BENCH_MODEL_ARGS) (a segmentation
#                model's training step; BENCH_MODEL=0 skips it); small defaults on a CPU
#   make clean   Bazel outputs, dist/, the in-tree library
# Variables: VENV (.venv), CONFIG (auto|cpu|cuda), CUDA12_PATH (see scripts/setup_env.sh), BAZEL_TEST_ARGS,
# PYTEST_PATHS (tests/), PYTEST_ARGS, BENCH_ARGS, BENCH_MODEL_ARGS, BENCH_MODEL.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV ?= $(ROOT)/.venv
CONFIG ?= auto
TFDCN_WHEELHOUSE ?= $(HOME)/.cache/tensorflow_dcn/wheelhouse
# The venv first on PATH: configure, Bazel's py_test stubs (build --test_env=PATH) and pip use it.
export PATH := $(VENV)/bin:$(PATH)
export VENV CONFIG TFDCN_WHEELHOUSE
PYTHON := $(VENV)/bin/python
BAZEL ?= bazel
BAZEL_TEST_ARGS ?=
PYTEST_ARGS ?=
PYTEST_PATHS ?= $(ROOT)/tests
BENCH_ARGS ?=
BENCH_MODEL_ARGS ?=
BENCH_MODEL ?= 1
VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' $(ROOT)/tensorflow_dcn/_version.py)
WHEEL = $(ROOT)/dist/tensorflow_dcn-$(VERSION)-py3-none-manylinux_2_27_x86_64.whl

.PHONY: all setup build wheel lint format test test-bazel test-installed bench clean
all: build

setup:
	cd $(ROOT) && scripts/setup_env.sh

build: setup
	cd $(ROOT) && $(BAZEL) build //tensorflow_dcn:_dcn_ops.so
	cd $(ROOT) && cp -f bazel-bin/tensorflow_dcn/_dcn_ops.so tensorflow_dcn/_dcn_ops.so \
	  && chmod u+w tensorflow_dcn/_dcn_ops.so

wheel: setup
	cd $(ROOT) && ./build_pip_pkg.sh dist

test: lint test-bazel test-installed

# Our C++/CUDA (not the vendored headers) and Python, as .clang-format and ruff.toml say.
CXX_SOURCES = git ls-files 'tensorflow_dcn/cc/**' 'tests/cuda_core/*.cc' 'third_party/manylinux/*.cc' \
  | grep -E '\.(h|cc|cuh)$$'

lint: setup
	cd $(ROOT) && $(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	cd $(ROOT) && $(CXX_SOURCES) | xargs $(VENV)/bin/clang-format --dry-run --Werror

format: setup
	cd $(ROOT) && $(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .
	cd $(ROOT) && $(CXX_SOURCES) | xargs $(VENV)/bin/clang-format -i

test-bazel: build
	cd $(ROOT) && $(BAZEL) test //tests/... $(BAZEL_TEST_ARGS)

# pytest from an empty folder with no PYTHONPATH: the tests import the installed wheel, never the
# source tree (tests/conftest.py prints which tensorflow_dcn and enforces it).
test-installed: wheel
	$(PYTHON) -m pip install --quiet --no-deps --force-reinstall $(WHEEL)
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && cd "$$tmp" && \
	  env -u PYTHONPATH TFDCN_TEST_INSTALLED=1 TFDCN_WHEEL=$(WHEEL) TF_CPP_MIN_LOG_LEVEL=2 \
	  $(PYTHON) -m pytest -p no:cacheprovider -ra $(PYTEST_PATHS) $(PYTEST_ARGS)

# The op/layer benchmark, then the model-level one (BENCH_MODEL=0 skips it). On a CPU both pick
# small defaults: about two minutes on 2 cores together.
bench: build
	cd $(ROOT) && PYTHONPATH=$(ROOT) TF_CPP_MIN_LOG_LEVEL=2 $(PYTHON) -m tensorflow_dcn.benchmark $(BENCH_ARGS)
	if [[ "$(BENCH_MODEL)" != 0 ]]; then cd $(ROOT) && PYTHONPATH=$(ROOT) TF_CPP_MIN_LOG_LEVEL=2 \
	  $(PYTHON) -m tensorflow_dcn.benchmark model $(BENCH_MODEL_ARGS); fi

clean:
	cd $(ROOT) && $(BAZEL) clean
	rm -rf $(ROOT)/dist $(ROOT)/tensorflow_dcn/_dcn_ops.so
