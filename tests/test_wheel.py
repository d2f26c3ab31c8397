"""The wheel installs into a fresh venv (tensorflow + the wheel, nothing else) and works there.

Builds nothing: it takes $TFDCN_WHEEL, else the newest dist/tensorflow_dcn-*.whl of this checkout
(`make wheel`), and skips when there is none. TensorFlow and its dependencies come without network
from the wheelhouse that scripts/setup_env.sh fills ($TFDCN_WHEELHOUSE, default
~/.cache/tensorflow_dcn/wheelhouse) when it has them, else from the package index.
Not a Bazel test (see tests/BUILD): `make test` runs it under pytest after building the wheel.
"""

import glob
import os
import subprocess
import sys
import tempfile
import textwrap

import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs inside the fresh venv, from an empty folder.
SCRIPT = textwrap.dedent("""
    import importlib.metadata
    import numpy as np
    import tensorflow as tf
    import tensorflow_dcn as tfdcn

    print("tensorflow_dcn", tfdcn.__version__, "from", tfdcn.__file__)
    assert "site-packages" in tfdcn.__file__, tfdcn.__file__
    assert "tensorflow==2.21.*" in importlib.metadata.requires("tensorflow-dcn")

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((2, 7, 6, 4)), tf.float32)
    kernel = tf.constant(rng.standard_normal((3, 3, 4, 5)), tf.float32)
    offset = tf.zeros((2, 5, 4, 2 * 9))
    mask = tf.ones((2, 5, 4, 9))
    # Zero offsets and a mask of ones: exactly a convolution, and so is the gradient.
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, kernel])
        y = tfdcn.deform_conv2d(x, offset, kernel, mask=mask)
        ref = tf.nn.conv2d(x, kernel, strides=1, padding="VALID")
        loss, ref_loss = tf.reduce_sum(y * y), tf.reduce_sum(ref * ref)
    np.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)
    for a, b in zip(tape.gradient(loss, [x, kernel]), tape.gradient(ref_loss, [x, kernel])):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-3)

    layer = tfdcn.DCNv2(8, 3, padding="same")
    out = layer(x)
    assert tuple(out.shape) == (2, 7, 6, 8), out.shape
    assert np.all(np.isfinite(out.numpy()))
    print("WHEEL_OK")
""")


def _wheelhouse_args(tf_version):
    """pip arguments that install offline from the wheelhouse, if it has this TensorFlow."""
    wheelhouse = os.environ.get("TFDCN_WHEELHOUSE") or os.path.expanduser(
        "~/.cache/tensorflow_dcn/wheelhouse"
    )
    if glob.glob(os.path.join(wheelhouse, f"tensorflow-{tf_version}-*.whl")):
        return ["--no-index", "--find-links", wheelhouse]
    return []


def _wheel():
    if os.environ.get("TFDCN_WHEEL"):
        return os.environ["TFDCN_WHEEL"]
    wheels = glob.glob(os.path.join(ROOT, "dist", "tensorflow_dcn-*.whl"))
    return max(wheels, key=os.path.getmtime) if wheels else None


class WheelTest(tf.test.TestCase):
    def test_fresh_venv_install(self):
        wheel = _wheel()
        if wheel is None:
            self.skipTest(
                "no wheel: run `make wheel` (dist/tensorflow_dcn-*.whl) or set TFDCN_WHEEL"
            )
        self.assertTrue(os.path.exists(wheel), wheel)
        self.assertRegex(
            os.path.basename(wheel), r"^tensorflow_dcn-[^-]+-py3-none-manylinux_2_27_x86_64\.whl$"
        )
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        with tempfile.TemporaryDirectory() as tmp:
            venv = os.path.join(tmp, "venv")
            subprocess.run([sys.executable, "-m", "venv", venv], check=True, env=env)
            python = os.path.join(venv, "bin", "python")
            subprocess.run(
                [
                    python,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--no-compile",
                    *_wheelhouse_args(tf.__version__),
                    f"tensorflow=={tf.__version__}",
                    wheel,
                ],
                check=True,
                env=env,
                cwd=tmp,
            )
            run = subprocess.run(
                [python, "-c", SCRIPT],
                env=env,
                cwd=tmp,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            print(run.stdout)
            self.assertEqual(run.returncode, 0, run.stdout[-4000:])
            self.assertIn("WHEEL_OK", run.stdout)


if __name__ == "__main__":
    tf.test.main()
