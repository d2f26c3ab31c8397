"""A probe for the layer's offset/mask conv: `tfdcn.DCNv2` whose internal conv runs with its
output channels padded with zero columns to a multiple of 8 (3 x 9 = 27 -> 32 for a 3x3 kernel),
the padding sliced off again. TensorFlow's convolutions in TF32 may take their tensor-core
kernels only for aligned channel counts (XLA pads only fp16/int8 ones itself); in the op
benchmark the layer's forward+backward costs 0.12-0.20 ms above the op's in TF32 against
0.08-0.11 in fp16. Timed side by side with the layer as it is (`session.sh offset_pad`):

    python3 -m tensorflow_dcn.benchmark --baseline padded_offset_layer:PaddedOffsetDCNv2 \\
        --impls tfdcn_layer_xla,baseline_xla ...

Same weights and results as `tfdcn.DCNv2` (the zero columns meet only discarded outputs).
"""

import tensorflow as tf

import tensorflow_dcn as tfdcn

_ALIGN = 8


def predict_offset_and_mask_padded(layer, offset_source):
    """`layer_base.predict_offset_and_mask` with the conv's output channels padded to _ALIGN."""
    padding = layer.padding.upper() if isinstance(layer.padding, str) else "VALID"
    if not isinstance(layer.padding, str):
        pad_h, pad_w = layer.padding
        offset_source = tf.pad(offset_source, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
    channels = layer.offset_kernel.shape[-1]
    extra = -channels % _ALIGN
    # Zero columns by concat (a tf.pad of the filter trips oneDNN's CPU layout pass in TF 2.21).
    zeros = tf.zeros([*layer.offset_kernel.shape[:3], extra], layer.offset_kernel.dtype)
    kernel = tf.concat([layer.offset_kernel, zeros], axis=-1)
    predicted = tf.nn.conv2d(
        offset_source, kernel, strides=layer.strides, padding=padding, dilations=layer.dilation_rate
    )
    predicted = tf.nn.bias_add(predicted[..., :channels], layer.offset_bias)
    offset_channels = 2 * layer.deformable_groups * layer.kernel_size[0] * layer.kernel_size[1]
    return predicted[..., :offset_channels], tf.sigmoid(predicted[..., offset_channels:])


class PaddedOffsetDCNv2(tfdcn.DCNv2):
    def call(self, inputs):
        is_list = isinstance(inputs, (list, tuple))
        x, offset_source, offset, mask = self._split_inputs(inputs, is_list)
        if offset_source is not None:
            offset, mask = predict_offset_and_mask_padded(self, offset_source)
        return self.activation(self.deformable_conv(x, offset, mask))
