"""tensorflow_dcn: modulated deformable convolution (DCNv2) for TensorFlow, NHWC.

    import tensorflow_dcn as tfdcn
    y = tfdcn.deform_conv2d(x, offset, kernel, bias, mask, padding="same")
    layer = tfdcn.DCNv2(64, 3, padding="same")
"""

from tensorflow_dcn._version import __version__
from tensorflow_dcn.layers import DCNv2, DCNv2Optimized
from tensorflow_dcn.ops import deform_conv2d

__all__ = ["__version__", "deform_conv2d", "DCNv2", "DCNv2Optimized"]
