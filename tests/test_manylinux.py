"""The op library keeps the wheel's manylinux_2_27 promise; the glibc compat stubs work.

Checks the _dcn_ops.so of whichever tensorflow_dcn is imported (Bazel's runfiles, the source tree,
or the installed wheel under `make test`) with scripts/check_manylinux.py, and, where the Bazel-
built probes are present, that //third_party/manylinux:glibc_compat removes the newer symbol
versions without changing results.
"""

import ctypes
import importlib.util
import math
import os

import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
POLICY = "manylinux_2_27"


def _load_checker():
    path = os.path.join(ROOT, "scripts", "check_manylinux.py")
    spec = importlib.util.spec_from_file_location("check_manylinux", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


checker = _load_checker()


def _op_library():
    """The _dcn_ops.so next to the tensorflow_dcn package Python would import (not importing it)."""
    spec = importlib.util.find_spec("tensorflow_dcn")
    return os.path.join(os.path.dirname(spec.origin), "_dcn_ops.so")


def _probe(name):
    """A probe library from Bazel's runfiles, or from bazel-bin in a source tree; None if absent."""
    for folder in (
        os.path.join(ROOT, "third_party", "manylinux"),
        os.path.join(ROOT, "bazel-bin", "third_party", "manylinux"),
    ):
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    return None


def _glibc_version():
    name = os.confstr("CS_GNU_LIBC_VERSION") or "glibc 0.0"  # e.g. "glibc 2.36"
    return tuple(int(p) for p in name.split()[1].split(".")[:2])


class ManylinuxTest(tf.test.TestCase):
    def test_op_library_is_manylinux_2_27(self):
        path = _op_library()
        self.assertTrue(os.path.exists(path), path)
        report, problems = checker.check(path, POLICY)
        print(f"{path}: {report['max_versions']} NEEDED {report['needed']}")
        self.assertEqual(problems, [])
        self.assertLessEqual(
            set(report["needed"]) - set(checker.POLICIES[POLICY]["libs"]),
            set(checker.ALLOWED_EXTERNAL_LIBS),
        )

    def test_checker_flags_newer_versions(self):
        raw = _probe("probe_raw.so")
        if raw is None:
            self.skipTest(
                "the Bazel-built probes are absent (bazel build //third_party/manylinux:all)"
            )
        if _glibc_version() < (2, 34):
            self.skipTest("built against glibc < 2.34: the probe needs no newer symbol versions")
        _, problems = checker.check(raw, POLICY)
        text = "\n".join(problems)
        for symbol in ("pthread_once", "dlopen", "__libc_single_threaded", "exp", "pow"):
            self.assertIn(symbol, text)

    def test_compat_stubs_remove_newer_versions(self):
        compat = _probe("probe_compat.so")
        if compat is None:
            self.skipTest(
                "the Bazel-built probes are absent (bazel build //third_party/manylinux:all)"
            )
        report, problems = checker.check(compat, POLICY)
        self.assertEqual(problems, [])
        self.assertIn("libpthread.so.0", report["needed"])
        self.assertIn("libdl.so.2", report["needed"])

    def test_compat_stubs_compute_the_same(self):
        raw, compat = _probe("probe_raw.so"), _probe("probe_compat.so")
        if raw is None or compat is None:
            self.skipTest(
                "the Bazel-built probes are absent (bazel build //third_party/manylinux:all)"
            )
        x = 1.3
        expected = (
            math.exp(x)
            + math.log(x)
            + x**1.5
            + 2**x
            + math.log2(x)
            + math.cos(x)
            + math.hypot(x, 1.0)
            + 1.0
        )
        for path in (raw, compat):
            probe = ctypes.CDLL(path).tfdcn_probe
            probe.restype, probe.argtypes = ctypes.c_double, [ctypes.c_double]
            self.assertAllClose(probe(x), expected, rtol=1e-12, atol=0)
            self.assertEqual(probe(-1.0), -1.0)  # std::bad_array_new_length thrown and caught


if __name__ == "__main__":
    tf.test.main()
