#!/usr/bin/env python3
"""Lists the GPU code in the op library (or a wheel holding it) with the toolkit that built it,
and checks it against the build's targets (tensorflow_dcn/cuda_targets.bzl). No TensorFlow needed.

    python3 scripts/gpu/check_cubins.py [WHEEL_OR_SO]     (default: the newest dist/*.whl,
                                                            else artifacts/*.whl)
Needs cuobjdump: $CUOBJDUMP, on PATH, or /usr/local/cuda/bin/cuobjdump.

One row per module (a .cu.cc's fatbin, named by its kernels' namespace): the cubins' architectures
and toolkit, the PTX it carries, and the driver that loads it (a CUDA 12.x cubin: >= 525; a
CUDA 13.x one: >= 580). Checks: every portable module has cubins for PORTABLE_ARCHS from a 12.x
toolkit plus PTX for PORTABLE_PTX_ARCH; every sm_90a module has only sm_90a cubins from 13.x.
Exit 0 when all hold.
"""

import collections
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER = {"12": "525", "13": "580"}  # minimum driver of a toolkit major version's cubins


def targets():
    text = open(os.path.join(ROOT, "tensorflow_dcn", "cuda_targets.bzl")).read()
    archs = re.findall(r'"(\d+)"', re.search(r"PORTABLE_ARCHS = \[([^\]]*)\]", text).group(1))
    ptx = re.search(r'PORTABLE_PTX_ARCH = "(\d+)"', text).group(1)
    return archs, ptx


def cuobjdump():
    for c in [
        os.environ.get("CUOBJDUMP"),
        shutil.which("cuobjdump"),
        "/usr/local/cuda/bin/cuobjdump",
    ]:
        if c and os.path.exists(c):
            return c
    sys.exit("check_cubins: no cuobjdump (set CUOBJDUMP)")


def library(path, tmp):
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.endswith("_dcn_ops.so"))
            z.extract(name, tmp)
            return os.path.join(tmp, name)
    return path


def names(mangled):
    """The nested names of an Itanium-mangled _ZN...E symbol: [tensorflow_dcn, cuda, ...]."""
    m = re.match(r"_ZN(.*)", mangled)
    out, s = [], m.group(1) if m else ""
    while True:
        d = re.match(r"(\d+)", s)
        if not d:
            break
        n = int(d.group(1))
        out.append(s[len(d.group(1)) : len(d.group(1)) + n])
        s = s[len(d.group(1)) + n :]
    return out or [mangled]


def module_label(kernels):
    """The namespace most of a module's kernels live in under tensorflow_dcn::cuda, or their
    names."""
    spaces, bases = collections.Counter(), collections.Counter()
    for k in kernels:
        n = names(k)
        if n[:2] != ["tensorflow_dcn", "cuda"]:
            continue
        inner = [x for x in n[2:-1] if not x.startswith("_GLOBAL__N")]
        if inner:
            spaces[inner[0]] += 1
        bases[n[-1]] += 1
    if spaces:
        return spaces.most_common(1)[0][0]
    return "+".join(sorted(bases)[:2]) or "(no kernels)"


def parse_elf(text):
    """[(sm, toolkit 'X.Y', frozenset of kernel symbols)] per cubin, in order."""
    images = []
    for block in re.split(r"\n(?=Fatbin elf code:)", text):
        m = re.search(r"sm=(\w+), toolkit=([\d.]+)", block)
        if not m:
            continue
        toolkit = m.group(2)
        if "." not in toolkit:  # 12.x cubins say 129
            toolkit = toolkit[:-1] + "." + toolkit[-1]
        kernels = frozenset(re.findall(r"\s\.text\.(\S+)", block))
        images.append(("sm_" + m.group(1), toolkit, kernels))
    return images


def parse_ptx(text):
    """[(arch, PTX ISA version, kernel symbols)] per PTX image."""
    images = []
    for block in re.split(r"\n(?=Fatbin ptx code:)", text):
        a = re.search(r"arch = (\w+)", block)
        v = re.search(r"^\.version (\S+)", block, re.M)
        if a and v:
            kernels = frozenset(re.findall(r"\.entry (\S+?)\(", block))
            images.append((a.group(1), v.group(1), kernels))
    return images


def main():
    args = sys.argv[1:]
    path = args[0] if args else None
    if path is None:
        found = sorted(
            glob.glob(os.path.join(ROOT, "dist", "*.whl"))
            + glob.glob(os.path.join(ROOT, "artifacts", "*.whl")),
            key=os.path.getmtime,
        )
        if not found:
            sys.exit("check_cubins: no wheel in dist/ or artifacts/; pass a wheel or _dcn_ops.so")
        path = found[-1]
    tool = cuobjdump()
    portable_archs, ptx_arch = targets()
    with tempfile.TemporaryDirectory() as tmp:
        so = library(path, tmp)
        elf = subprocess.run([tool, "-elf", so], capture_output=True, text=True, check=True).stdout
        ptx = subprocess.run([tool, "-ptx", so], capture_output=True, text=True, check=True).stdout
    version = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
    version = (re.findall(r"release (\S+?),", version) or ["?"])[0]
    print(f"{os.path.basename(path)} (cuobjdump {version})")

    # A module = the cubins sharing one kernel set (its fatbin); its PTX has the same kernels.
    modules = collections.OrderedDict()
    for sm, toolkit, kernels in parse_elf(elf):
        modules.setdefault(kernels, {"cubins": [], "ptx": []})["cubins"].append((sm, toolkit))
    for arch, isa, kernels in parse_ptx(ptx):
        modules.setdefault(kernels, {"cubins": [], "ptx": []})["ptx"].append((arch, isa))

    failures = []
    rows = [("module", "kernels", "cubins", "toolkit", "PTX", "driver")]
    for kernels, m in modules.items():
        label = module_label(kernels)
        sms = [sm for sm, _ in m["cubins"]]
        toolkits = sorted({t for _, t in m["cubins"]})
        majors = {t.split(".")[0] for t in toolkits}
        driver = ">= " + max(DRIVER.get(x, "?") for x in majors) if majors else "-"
        ptx_text = (
            ", ".join(f"{a.replace('sm_', 'compute_')} (ISA {v})" for a, v in m["ptx"]) or "-"
        )
        rows.append(
            (
                label,
                str(len(kernels)),
                " ".join(s[3:] for s in sms),
                "/".join(toolkits) or "-",
                ptx_text,
                driver,
            )
        )
        if sms and all(s.endswith("a") for s in sms):  # a Hopper (sm_90a) module
            if sms != ["sm_90a"] or majors != {"13"} or m["ptx"]:
                failures.append(f"{label}: expected one sm_90a cubin from CUDA 13, no PTX")
        else:
            want = [f"sm_{a}" for a in portable_archs]
            if sorted(sms) != sorted(want) or majors != {"12"}:
                failures.append(
                    f"{label}: expected cubins {' '.join(want)} from CUDA 12.x, "
                    f"got {' '.join(sms)} from {'/'.join(toolkits)}"
                )
            if [a for a, _ in m["ptx"]] != [f"sm_{ptx_arch}"]:
                failures.append(f"{label}: expected PTX for compute_{ptx_arch} only")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if not modules:
        failures.append("no GPU code in the library (a CPU-only build?)")
    for f in failures:
        print("FAIL:", f)
    print(
        "OK: every module matches tensorflow_dcn/cuda_targets.bzl"
        if not failures
        else f"{len(failures)} check(s) failed"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
