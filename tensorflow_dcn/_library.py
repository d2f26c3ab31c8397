"""Loading the op library `_dcn_ops.so`, or saying why it cannot load."""

import functools
import os

import tensorflow as tf

from tensorflow_dcn._version import TENSORFLOW_VERSION

_LIBRARY = "_dcn_ops.so"


class LibraryLoadError(ImportError):
    """The op library cannot be loaded into this TensorFlow; the message says why and what to do."""


@functools.cache
def load():
    """The loaded op library (its raw op functions), from inside the installed package."""
    if not tf.__version__.startswith(TENSORFLOW_VERSION + "."):
        raise LibraryLoadError(
            f"tensorflow_dcn was built against TensorFlow {TENSORFLOW_VERSION}.x, but this "
            f"process imported TensorFlow {tf.__version__}. Custom ops are tied to TensorFlow's "
            f"C++ ABI: install tensorflow=={TENSORFLOW_VERSION}.* or rebuild tensorflow_dcn "
            "against this TensorFlow (./configure.sh && make build)."
        )
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), _LIBRARY)
    if not os.path.exists(path):
        raise LibraryLoadError(
            f"tensorflow_dcn: the op library {path} is missing. Install the wheel "
            "(pip install tensorflow_dcn-*.whl) or build it from a checkout with `make build`."
        )
    try:
        return tf.load_op_library(path)
    except (tf.errors.NotFoundError, OSError) as e:
        raise LibraryLoadError(
            f"tensorflow_dcn: loading {path} failed: {e}\nThis usually means the library was "
            f"built against a different TensorFlow than {tf.__version__}; rebuild it with "
            "./configure.sh && make build."
        ) from e


@functools.cache
def has_cuda_kernels():
    """Whether the library was built with its CUDA kernels (and so the XLA GPU lowering)."""
    from tensorflow.python.framework import kernels  # pylint: disable=g-import-not-at-top

    load()
    registered = kernels.get_registered_kernels_for_op("DCNv2Forward").kernel
    return any(kernel.device_type == "GPU" for kernel in registered)
