"""`DCNv2`: a Keras 3 layer for modulated deformable convolution (DCNv2), NHWC.

    import keras
    import tensorflow_dcn as tfdcn

    # Automatic mode: a zero-initialised internal conv predicts offsets and mask from x, so the
    # layer starts out as a regular convolution (zero offsets, mask sigmoid(0) = 0.5) and
    # learns where to sample.
    y = tfdcn.DCNv2(64, 3, padding="same")(x)

    # Offsets and mask predicted from another tensor of the same height and width as x.
    y = tfdcn.DCNv2(64, 3, padding="same", use_custom_offset=True)([x, offset_source])

    # Offsets and mask computed by you, used as given (see `tfdcn.deform_conv2d` for the layout).
    y = tfdcn.DCNv2(64, 3, padding="same", use_custom_offset=True)([x, offset, mask])

The layer runs the `DCNv2Forward` custom op, which has XLA lowerings: `model.compile()` (whose
default on a GPU is XLA), `jit_compile=True` and `tf.function(jit_compile=True)` compile it
together with the rest of the model.

Saving: `model.save("m.keras")`, `model.export(path)` and `tf.saved_model.save` all work.
`import tensorflow_dcn` before `keras.models.load_model` or `tf.saved_model.load`: the import
registers the layer (as "tensorflow_dcn>DCNv2") and the op and its gradient.
"""

import keras
import tensorflow as tf

from tensorflow_dcn import _library
from tensorflow_dcn.functional import deform_conv2d
from tensorflow_dcn.layer_base import DeformableConv2DBase, gpu_visible


def _xla_supported():
    """Whether XLA can compile the op wherever Keras would put it: the CPU lowering always
    exists, the GPU lowering when the library has CUDA kernels."""
    return _library.has_cuda_kernels() or not tf.config.list_physical_devices("GPU")


@keras.saving.register_keras_serializable(package="tensorflow_dcn")
class DCNv2(DeformableConv2DBase):
    """Modulated deformable 2D convolution (DCNv2, Zhu et al. 2019), channels-last.

    Like `keras.layers.Conv2D`, except that each kernel tap of each output position samples the
    input at a learned fractional offset (bilinear interpolation, zeros outside the image) and
    is scaled by a learned modulation mask in [0, 1].

    Inputs, decided when the layer is built:
      - `use_custom_offset=False`: `layer(x)`. An internal conv over `x` (weights
        `offset_kernel` [kh, kw, Cin, 3*dg*kh*kw] and `offset_bias` [3*dg*kh*kw], zero-initialised,
        same strides, padding and dilation as the main conv) predicts the offsets (its first
        2*dg*kh*kw channels: (dy, dx) per deformable group and kernel tap, taps row-major) and the
        mask (the other dg*kh*kw channels, through a sigmoid).
      - `use_custom_offset=True`, `layer([x, offset_source])`: as above, the internal conv
        running over `offset_source` [N, H, W, C_source] instead of `x`.
      - `use_custom_offset=True`, `layer([x, offset, mask])`: offset [N, Ho, Wo, 2*dg*kh*kw] and
        mask [N, Ho, Wo, dg*kh*kw] are used as given (no sigmoid); no offset weights are created.

    Weights, in this order: `kernel` [kh, kw, Cin/groups, filters], `bias` [filters] (with
    `use_bias`), then `offset_kernel` and `offset_bias` (unless offset and mask are given). This
    matches the pure-TF DCNv2 layers derived from RuaHU/keras_DCNv2 (e.g. iSeg's), so their
    weights and checkpoints load into this layer.

    Args:
      filters: number of output channels.
      kernel_size: int or (kh, kw).
      strides: int or (stride_h, stride_w).
      padding: 'valid', 'same' (the output size of Conv2D's 'same'; the odd extra row or column
        of zeros goes at the bottom/right, as in Conv2D), an int or (pad_h, pad_w) of zeros on
        both sides.
      data_format: 'channels_last' or None (Keras' image_data_format, which must then be
        'channels_last'); the op is NHWC only.
      dilation_rate: int or (dilation_h, dilation_w); may be combined with strides > 1.
      groups: grouped convolution; Cin and filters must be divisible by it.
      activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
      bias_regularizer, activity_regularizer, kernel_constraint, bias_constraint: as in
        Conv2D; they apply to `kernel` and `bias`, not to the offset weights.
      deformable_groups: offset groups over the input channels; Cin must be divisible by it.
      use_custom_offset: take [x, offset_source] or [x, offset, mask] instead of x alone.

    `DCNv2Optimized` is another name for this class (the name iSeg users know).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Keras' jit_compile='auto' compiles the model with XLA only if every layer says so.
        self.supports_jit = _xla_supported()

    def offset_channel_multiple(self):
        # 27 -> 32 offset/mask channels for a 3x3 kernel where a GPU runs the model. H200, under
        # XLA (notes of 2026-12-01, run 12): the layer's forward 6-17% faster in TF32, 5-14% in
        # fp16, forward+backward 1-6%. On the CPU the padded conv's gradient is slower (2 cores,
        # 10-37% on the layer's forward+backward).
        return 8 if gpu_visible() else 1

    def deformable_conv(self, x, offset, mask):
        return deform_conv2d(
            x,
            offset,
            self.kernel,
            bias=self.bias,
            mask=mask,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            groups=self.groups,
            deformable_groups=self.deformable_groups,
        )


# The name iSeg users know, for the same class: Keras' .weights.h5 files address a layer's
# weights by its class name, so one class keeps checkpoints loading whichever name built the
# model. Configs registered under either name deserialize; new ones are written as DCNv2.
DCNv2Optimized = DCNv2
keras.saving.get_custom_objects()["tensorflow_dcn>DCNv2Optimized"] = DCNv2
