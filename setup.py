"""Packaging for tensorflow-dcn. Build wheels with ./build_pip_pkg.sh, which stages the Bazel-built
package (Python sources + _dcn_ops.so), checks the library against manylinux_2_27 and runs this.

The wheel is tagged py3-none-manylinux_2_27_x86_64: the op library does not link libpython (any
CPython 3 that TensorFlow 2.21 supports can load it) and scripts/check_manylinux.py has verified
its glibc/libstdc++ symbol versions. It only loads into TensorFlow 2.21.x (C++ ABI), hence the
`tensorflow==2.21.*` requirement. TFDCN_PLAT_NAME overrides the platform tag.
"""

import os
import re

from setuptools import Distribution, find_packages, setup

try:  # setuptools >= 70.1 ships bdist_wheel; older ones need the `wheel` package.
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover
    from wheel.bdist_wheel import bdist_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
PLAT_NAME = os.environ.get("TFDCN_PLAT_NAME", "manylinux_2_27_x86_64")


def _read_version():
    """__version__ and TENSORFLOW_VERSION from tensorflow_dcn/_version.py (without importing TF)."""
    text = open(os.path.join(HERE, "tensorflow_dcn", "_version.py")).read()
    values = dict(re.findall(r'^(__version__|TENSORFLOW_VERSION)\s*=\s*"([^"]+)"', text, re.M))
    return values["__version__"], values["TENSORFLOW_VERSION"]


class BinaryDistribution(Distribution):
    """Holds a shared library: a platform wheel (files at the root, platlib), not a pure one."""

    def has_ext_modules(self):
        return True


class BinaryWheel(bdist_wheel):
    """Tagged py3-none-<platform>: the library does not depend on the Python version or ABI."""

    def get_tag(self):
        return "py3", "none", PLAT_NAME


if not os.path.exists(os.path.join(HERE, "tensorflow_dcn", "_dcn_ops.so")):
    raise SystemExit(
        "setup.py: tensorflow_dcn/_dcn_ops.so is missing; build wheels with "
        "./build_pip_pkg.sh (or run `make build` first)."
    )

VERSION, TF_VERSION = _read_version()
README = os.path.join(HERE, "README.md")

setup(
    name="tensorflow-dcn",
    version=VERSION,
    description="Modulated deformable convolution (DCNv2) custom ops and Keras layer for "
    "TensorFlow",
    long_description=open(README).read() if os.path.exists(README) else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tensorflow_dcn", "tensorflow_dcn.*"]),
    package_data={"tensorflow_dcn": ["*.so"]},
    include_package_data=True,
    python_requires=">=3.9",
    install_requires=[f"tensorflow=={TF_VERSION}.*"],
    zip_safe=False,
    distclass=BinaryDistribution,
    cmdclass={"bdist_wheel": BinaryWheel},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: C++",
        "Operating System :: POSIX :: Linux",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
