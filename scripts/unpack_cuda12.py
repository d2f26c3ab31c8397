#!/usr/bin/env python3
"""Assembles the CUDA 12.9 directory of the portable CUDA build from the pinned PyPI wheels.

    scripts/unpack_cuda12.py --wheelhouse DIR --dest DIR [--check]

Reads the pins of requirements-cuda12.txt, takes each wheel from the wheelhouse and writes DEST:
    include/                 cuda_runtime (runtime API), cuda_nvcc (crt/), cuda_cccl (CUB,
                             libcu++, nv/target) and curand headers (clang's CUDA wrapper header
                             includes curand_mtgp32_kernel.h)
    bin/ptxas                PTX -> cubin
    nvvm/libdevice/libdevice.10.bc
    lib64/libcudart_static.a the CUDA 12.9 runtime, for tests/cuda_core (no TensorFlow there)
    version.txt, wheels.txt  what DEST was made from
DEST is replaced atomically; exit 2 when a pinned wheel is not in the wheelhouse. --check only
tells whether DEST was made from exactly these pins (exit 0) or not (exit 1).
"""

import argparse
import os
import re
import shutil
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIREMENTS = os.path.join(ROOT, "requirements-cuda12.txt")

# (wheel name, path inside the wheel, path under DEST); a trailing "/" copies a folder.
LAYOUT = [
    ("nvidia-cuda-runtime-cu12", "nvidia/cuda_runtime/include/", "include/"),
    (
        "nvidia-cuda-runtime-cu12",
        "nvidia/cuda_runtime/lib/libcudart_static.a",
        "lib64/libcudart_static.a",
    ),
    ("nvidia-cuda-nvcc-cu12", "nvidia/cuda_nvcc/include/", "include/"),
    ("nvidia-cuda-nvcc-cu12", "nvidia/cuda_nvcc/bin/ptxas", "bin/ptxas"),
    (
        "nvidia-cuda-nvcc-cu12",
        "nvidia/cuda_nvcc/nvvm/libdevice/libdevice.10.bc",
        "nvvm/libdevice/libdevice.10.bc",
    ),
    ("nvidia-cuda-cccl-cu12", "nvidia/cuda_cccl/include/", "include/"),
    ("nvidia-curand-cu12", "nvidia/curand/include/", "include/"),
]
EXECUTABLES = {"bin/ptxas"}


def pins():
    """{name: version} from requirements-cuda12.txt."""
    result = {}
    for line in open(REQUIREMENTS):
        m = re.match(r"\s*([A-Za-z0-9_.-]+)==([^\s;#]+)", line)
        if m:
            result[m.group(1).lower()] = m.group(2)
    return result


def find_wheel(wheelhouse, name, version):
    prefix = f"{name.replace('-', '_')}-{version}-"
    for f in sorted(os.listdir(wheelhouse)) if os.path.isdir(wheelhouse) else []:
        if f.lower().startswith(prefix) and f.endswith(".whl"):
            return os.path.join(wheelhouse, f)
    return None


def stamp(wheels):
    return "".join(os.path.basename(w) + "\n" for w in sorted(wheels.values()))


def unpack(wheels, dest, version):
    tmp = f"{dest}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for name, src, dst in LAYOUT:
        with zipfile.ZipFile(wheels[name]) as z:
            members = [
                m for m in z.namelist() if m == src or (src.endswith("/") and m.startswith(src))
            ]
            if not members:
                raise SystemExit(f"unpack_cuda12: {src} is not in {wheels[name]}")
            for m in members:
                if m.endswith("/") or m.endswith("__init__.py"):
                    continue
                rel = dst + m[len(src) :] if src.endswith("/") else dst
                path = os.path.join(tmp, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with z.open(m) as fin, open(path, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
                os.chmod(path, 0o755 if rel in EXECUTABLES else 0o644)
    with open(os.path.join(tmp, "version.txt"), "w") as f:
        f.write(f"CUDA Version {version}\n")
    with open(os.path.join(tmp, "wheels.txt"), "w") as f:
        f.write(stamp(wheels))
    old = f"{dest}.old{os.getpid()}"
    if os.path.exists(dest):
        os.rename(dest, old)
    os.rename(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheelhouse", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    wanted = pins()
    wheels = {n: find_wheel(args.wheelhouse, n, v) for n, v in wanted.items()}
    if args.check:
        stamp_file = os.path.join(args.dest, "wheels.txt")
        made_from = open(stamp_file).read().split() if os.path.exists(stamp_file) else []
        prefixes = [f"{n.replace('-', '_')}-{v}-" for n, v in wanted.items()]
        ok = len(made_from) == len(prefixes) and all(
            any(w.lower().startswith(p) for w in made_from) for p in prefixes
        )
        return 0 if ok else 1
    missing = [f"{n}=={wanted[n]}" for n, w in wheels.items() if w is None]
    if missing:
        print(f"unpack_cuda12: not in {args.wheelhouse}: {', '.join(missing)}", file=sys.stderr)
        return 2
    unpack(wheels, os.path.abspath(args.dest), wanted["nvidia-cuda-nvcc-cu12"])
    print(f"unpack_cuda12: wrote {args.dest} from {len(wheels)} wheels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
