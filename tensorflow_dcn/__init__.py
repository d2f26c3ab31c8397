"""tensorflow_dcn: modulated deformable convolution (DCNv2) for TensorFlow, NHWC.

    import tensorflow_dcn as tfdcn
    y = tfdcn.deform_conv2d(x, offset, kernel, bias, mask, padding="same")
    layer = tfdcn.DCNv2(64, 3, padding="same")

`tensorflow_dcn.reference` (a pure-TensorFlow DCNv2) needs no op library: when `_dcn_ops.so`
cannot load into this TensorFlow, `import tensorflow_dcn` still succeeds, the reference works,
and using the names below raises the ImportError that says why the library did not load.
"""

from tensorflow_dcn import _library
from tensorflow_dcn._version import __version__

__all__ = ["__version__", "deform_conv2d", "DCNv2", "DCNv2Optimized", "implementations_run"]

try:
    from tensorflow_dcn.functional import deform_conv2d
    from tensorflow_dcn.layers import DCNv2, DCNv2Optimized
    from tensorflow_dcn.ops import implementations_run
except _library.LibraryLoadError as _error:
    _load_error = _error

    def __getattr__(name):
        if name in __all__:
            raise _library.LibraryLoadError(str(_load_error)) from _load_error
        raise AttributeError(f"module 'tensorflow_dcn' has no attribute {name!r}")
