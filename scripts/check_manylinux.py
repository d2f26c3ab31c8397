#!/usr/bin/env python3
"""Checks ELF shared objects (or the .so files inside wheels) against a manylinux policy.

    scripts/check_manylinux.py bazel-bin/tensorflow_dcn/_dcn_ops.so
    scripts/check_manylinux.py dist/tensorflow_dcn-*.whl
    scripts/check_manylinux.py --policy manylinux_2_27 --json FILE...

Like `auditwheel show`, it reads each file's version needs (.gnu.version_r) and its NEEDED
libraries and prints the highest GLIBC_/GLIBCXX_/CXXABI_/GCC_ version each file needs. It exits 1
if any needed symbol version is above the policy's limit (listing the symbols that need it) or a
NEEDED library is neither in the policy's whitelist nor in ALLOWED_EXTERNAL_LIBS. Pure Python (no
binutils, no auditwheel), so it runs anywhere the build runs.

The limits are copied from auditwheel 6.8.2, auditwheel/policy/manylinux-policy.json (x86_64);
manylinux_2_27 is the tag of the tensorflow 2.21.0 wheel itself (cp311-cp311-manylinux_2_27_x86_64).
"""

import argparse
import json
import re
import struct
import sys
import tempfile
import zipfile

_WHITELIST = [
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libm.so.6",
    "libdl.so.2",
    "librt.so.1",
    "libc.so.6",
    "libnsl.so.1",
    "libutil.so.1",
    "libpthread.so.0",
    "libresolv.so.2",
    "libX11.so.6",
    "libXext.so.6",
    "libXrender.so.1",
    "libICE.so.6",
    "libSM.so.6",
    "libGL.so.1",
    "libgobject-2.0.so.0",
    "libgthread-2.0.so.0",
    "libglib-2.0.so.0",
    "libanl.so.1",
    "libatomic.so.1",
    "libexpat.so.1",
    "libmvec.so.1",
    "libz.so.1",
]
POLICIES = {
    "manylinux_2_27": {
        "versions": {
            "GLIBC": "2.27",
            "GLIBCXX": "3.4.24",
            "CXXABI": "1.3.11",
            "GCC": "7.0.0",
            "LIBATOMIC": "1.2",
            "ZLIB": "1.2.9",
        },
        "libs": _WHITELIST,
    },
    "manylinux_2_28": {
        "versions": {
            "GLIBC": "2.28",
            "GLIBCXX": "3.4.24",
            "CXXABI": "1.3.11",
            "GCC": "7.0.0",
            "LIBATOMIC": "1.2",
            "ZLIB": "1.2.9",
        },
        "libs": _WHITELIST,
    },
}

# Libraries outside the manylinux whitelist that our op library may need. auditwheel would flag
# (and try to graft) TensorFlow's libraries, but they must NOT be vendored: a TensorFlow custom
# op has to bind to the very libtensorflow_framework (ops, kernels) and libtensorflow_cc (the XLA
# op registrar) that the `tensorflow` package (a hard requirement of our wheel,
# tensorflow==2.21.*) has already loaded into the process before tf.load_op_library() runs; the
# dynamic loader matches our NEEDED entries to them by soname.
ALLOWED_EXTERNAL_LIBS = ["libtensorflow_framework.so.2", "libtensorflow_cc.so.2"]

_SHT_DYNSYM, _SHT_DYNAMIC = 11, 6
_SHT_GNU_VERNEED, _SHT_GNU_VERSYM = 0x6FFFFFFE, 0x6FFFFFFF
_DT_NEEDED = 1


def _version_key(text):
    return tuple(int(p) for p in text.split("."))


def _cstr(blob, offset):
    return blob[offset : blob.index(b"\0", offset)].decode()


def read_elf(path):
    """Returns {"needed": [...], "versions": {(file, version)}, "symbols": {version: [names]}}."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = []
    for i in range(shnum):
        (_, sh_type, _, _, sh_offset, sh_size, sh_link, _, _, sh_entsize) = struct.unpack_from(
            "<IIQQQQIIQQ", data, shoff + i * shentsize
        )
        sections.append((sh_type, sh_offset, sh_size, sh_link, sh_entsize))

    def strtab(index):
        return data[sections[index][1] : sections[index][1] + sections[index][2]]

    needed, versions, index_to_version = [], set(), {}
    for sh_type, off, size, link, entsize in sections:
        if sh_type == _SHT_DYNAMIC:
            names = strtab(link)
            for pos in range(off, off + size, 16):
                tag, val = struct.unpack_from("<qQ", data, pos)
                if tag == _DT_NEEDED:
                    needed.append(_cstr(names, val))
        elif sh_type == _SHT_GNU_VERNEED:
            names, pos = strtab(link), off
            while True:
                _, vn_cnt, vn_file, vn_aux, vn_next = struct.unpack_from("<HHIII", data, pos)
                aux = pos + vn_aux
                for _ in range(vn_cnt):
                    _, _, vna_other, vna_name, vna_next = struct.unpack_from("<IHHII", data, aux)
                    name = _cstr(names, vna_name)
                    versions.add((_cstr(names, vn_file), name))
                    index_to_version[vna_other] = name
                    aux += vna_next
                if not vn_next:
                    break
                pos += vn_next

    symbols = {}
    dynsym = [s for s in sections if s[0] == _SHT_DYNSYM]
    versym = [s for s in sections if s[0] == _SHT_GNU_VERSYM]
    if dynsym and versym:
        _, off, size, link, entsize = dynsym[0]
        names = strtab(link)
        for i in range(size // entsize):
            st_name, _, _, st_shndx = struct.unpack_from("<IBBH", data, off + i * entsize)
            (ver,) = struct.unpack_from("<H", data, versym[0][1] + 2 * i)
            ver &= 0x7FFF
            if st_shndx == 0 and ver in index_to_version:
                symbols.setdefault(index_to_version[ver], []).append(_cstr(names, st_name))
    return {"needed": needed, "versions": versions, "symbols": symbols}


def _is_dynamic_loader(lib):
    # auditwheel ignores the ELF interpreter (and the versions needed from it) as well.
    return lib.startswith("ld-linux") or lib in ("ld64.so.1", "ld64.so.2")


def check(path, policy_name):
    """Returns (report dict, list of violation strings) for one ELF file."""
    policy = POLICIES[policy_name]
    elf = read_elf(path)
    max_versions, problems = {}, []
    for lib, version in sorted(elf["versions"]):
        if _is_dynamic_loader(lib):
            continue
        m = re.fullmatch(r"([A-Z]+)_([0-9.]+)", version)
        if not m:
            continue
        family, number = m.group(1), m.group(2)
        if family not in max_versions or _version_key(number) > _version_key(max_versions[family]):
            max_versions[family] = number
        limit = policy["versions"].get(family)
        if limit is None:
            problems.append(f"symbol version {version} is not part of {policy_name}")
        elif _version_key(number) > _version_key(limit):
            syms = ", ".join(sorted(elf["symbols"].get(version, []))) or "?"
            problems.append(f"{version} > {family}_{limit}: {syms}")
    for lib in elf["needed"]:
        if (
            not _is_dynamic_loader(lib)
            and lib not in policy["libs"]
            and lib not in ALLOWED_EXTERNAL_LIBS
        ):
            problems.append(f"NEEDED {lib} is neither in the {policy_name} whitelist nor allowed")
    report = {
        "file": path,
        "policy": policy_name,
        "max_versions": {k: f"{k}_{v}" for k, v in sorted(max_versions.items())},
        "needed": elf["needed"],
        "violations": problems,
    }
    return report, problems


def _expand(paths, tmp):
    """Yields (display name, ELF path): .whl files contribute every .so inside them."""
    for path in paths:
        if path.endswith(".whl"):
            with zipfile.ZipFile(path) as z:
                members = [n for n in z.namelist() if re.search(r"\.so(\.[0-9]+)*$", n)]
                if not members:
                    raise SystemExit(f"{path}: the wheel contains no shared object")
                for n in members:
                    yield f"{path}!{n}", z.extract(n, tmp)
        else:
            yield path, path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help=".so or .whl files")
    parser.add_argument("--policy", default="manylinux_2_27", choices=sorted(POLICIES))
    parser.add_argument("--json", action="store_true", help="print one JSON report per file")
    args = parser.parse_args(argv)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in _expand(args.files, tmp):
            report, problems = check(path, args.policy)
            report["file"] = name
            failed |= bool(problems)
            if args.json:
                print(json.dumps(report))
                continue
            status = "FAIL" if problems else "ok"
            print(
                f"{name}: {args.policy} {status}; needs "
                + " ".join(report["max_versions"].values())
                + "; NEEDED "
                + " ".join(report["needed"])
            )
            for p in problems:
                print(f"  {p}")
    if failed:
        print(
            f"check_manylinux: not {args.policy}-compatible. The op library must be linked "
            "with //third_party/manylinux:glibc_compat (see third_party/manylinux/glibc_compat.cc) "
            "or the offending code changed.",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
