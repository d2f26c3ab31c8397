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

The layer runs the `DCNv2Forward` custom op, which has no XLA kernel: it marks itself
`supports_jit = False`, so `model.compile()` leaves XLA off for models that contain it.

Saving: `model.save("m.keras")`, `model.export(path)` and `tf.saved_model.save` all work.
`import tensorflow_dcn` before `keras.models.load_model` or `tf.saved_model.load`: the import
registers the layer (as "tensorflow_dcn>DCNv2") and the op and its gradient.
"""

import keras
import tensorflow as tf

from tensorflow_dcn.ops import checked_int, deform_conv2d, int_pair


def _positive_int(value, name):
    number = checked_int(value, 1)
    if number is None:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return number


def predict_offset_and_mask(layer, offset_source):
    """A DCNv2 layer's internal conv (weights `offset_kernel`, `offset_bias`; the layer's strides,
    padding and dilation): its first 2*dg*kh*kw channels are the offsets, the rest pass a sigmoid
    and are the mask."""
    if isinstance(layer.padding, str):
        padding = layer.padding.upper()
    else:
        padding = [[0, 0], [layer.padding[0]] * 2, [layer.padding[1]] * 2, [0, 0]]
    predicted = tf.nn.conv2d(offset_source, layer.offset_kernel, strides=layer.strides,
                             padding=padding, dilations=layer.dilation_rate)
    predicted = tf.nn.bias_add(predicted, layer.offset_bias)
    offset_channels = 2 * layer.deformable_groups * layer.kernel_size[0] * layer.kernel_size[1]
    return predicted[..., :offset_channels], tf.sigmoid(predicted[..., offset_channels:])


def _standardize_padding(padding):
    """'valid', 'same' (any case), or a symmetric (pad_h, pad_w) as `tfdcn.deform_conv2d` takes."""
    if isinstance(padding, str):
        if padding.lower() not in ("valid", "same"):
            raise ValueError(
                f"padding must be 'valid', 'same', an int or (pad_h, pad_w); got {padding!r}")
        return padding.lower()
    return int_pair(padding, "padding", minimum=0)


def _sizes_agree(sizes, expected):
    """Whether spatial sizes agree where both are known."""
    return all(a is None or b is None or a == b for a, b in zip(sizes, expected))


def _is_shape_list(input_shape):
    """Whether a shape Keras hands to build/compute_output_shape is a list of per-input shapes."""
    return len(input_shape) > 0 and isinstance(input_shape[0], (list, tuple, tf.TensorShape))


@keras.saving.register_keras_serializable(package="tensorflow_dcn")
class DCNv2(keras.layers.Layer):
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

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None,
                 dilation_rate=1, groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, deformable_groups=1,
                 use_custom_offset=False, **kwargs):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.filters = _positive_int(filters, "filters")
        self.kernel_size = int_pair(kernel_size, "kernel_size", minimum=1)
        self.strides = int_pair(strides, "strides", minimum=1)
        self.padding = _standardize_padding(padding)
        if data_format not in (None, "channels_last"):
            raise ValueError(
                f"DCNv2 supports data_format='channels_last' (NHWC) only, got {data_format!r}; "
                "transpose NCHW inputs with tf.transpose(x, [0, 2, 3, 1])")
        if data_format is None and keras.config.image_data_format() != "channels_last":
            raise ValueError(
                "DCNv2 supports channels_last (NHWC) only, but keras.config.image_data_format() "
                f"is {keras.config.image_data_format()!r}; pass data_format='channels_last'")
        self.data_format = "channels_last"
        self.dilation_rate = int_pair(dilation_rate, "dilation_rate", minimum=1)
        self.groups = _positive_int(groups, "groups")
        if self.filters % self.groups:
            raise ValueError(
                f"filters ({self.filters}) must be divisible by groups ({self.groups})")
        self.deformable_groups = _positive_int(deformable_groups, "deformable_groups")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.use_custom_offset = bool(use_custom_offset)
        # DCNv2Forward has no XLA kernel: Keras' jit_compile='auto' checks this on every layer.
        self.supports_jit = False

    @property
    def _taps(self):
        return self.kernel_size[0] * self.kernel_size[1]

    def _split_inputs(self, inputs, is_list):
        """(x, offset_source, offset, mask) from the layer's inputs, tensors or shapes alike;
        offset_source is None when offset and mask are given, and they are None otherwise."""
        count = len(inputs) if is_list else 1
        if not self.use_custom_offset:
            if is_list:
                raise ValueError(
                    f"DCNv2 with use_custom_offset=False takes a single input x, got a list of "
                    f"{count}; pass use_custom_offset=True for [x, offset_source] or "
                    "[x, offset, mask]")
            return inputs, inputs, None, None
        if count not in (2, 3):
            raise ValueError(
                "DCNv2 with use_custom_offset=True takes [x, offset_source] or [x, offset, mask], "
                f"got {count} input(s)")
        if count == 2:
            return inputs[0], inputs[1], None, None
        return inputs[0], None, inputs[1], inputs[2]

    def build(self, input_shape):
        is_list = _is_shape_list(input_shape)
        shapes = [tuple(s) for s in input_shape] if is_list else tuple(input_shape)
        x_shape, source_shape, offset_shape, mask_shape = self._split_inputs(shapes, is_list)
        named = {"x": x_shape, "offset_source": source_shape, "offset": offset_shape,
                 "mask": mask_shape}
        for name, shape in named.items():
            if shape is not None and (len(shape) != 4 or shape[-1] is None):
                raise ValueError(f"DCNv2 expects {name} of shape [N, H, W, C] with C known, "
                                 f"got {shape}")
        in_channels = x_shape[-1]
        for divisor in ("groups", "deformable_groups"):
            if in_channels % getattr(self, divisor):
                raise ValueError(f"the input channels ({in_channels}) must be divisible by "
                                 f"{divisor} ({getattr(self, divisor)})")
        offset_channels = 2 * self.deformable_groups * self._taps
        mask_channels = self.deformable_groups * self._taps
        if offset_shape is not None and (
                offset_shape[-1] != offset_channels or mask_shape[-1] != mask_channels):
            raise ValueError(
                f"with kernel_size={self.kernel_size} and deformable_groups="
                f"{self.deformable_groups}, offset needs {offset_channels} channels and mask "
                f"{mask_channels}; got offset {offset_shape} and mask {mask_shape}")
        output_size = self._output_spatial_shape(x_shape)
        if self.use_custom_offset and source_shape is not None:
            if not _sizes_agree(self._output_spatial_shape(source_shape), output_size):
                raise ValueError(f"offset_source {source_shape} must have the height and width "
                                 f"of x {x_shape}")
        for name, shape in (("offset", offset_shape), ("mask", mask_shape)):
            if shape is not None and not _sizes_agree(shape[1:3], output_size):
                raise ValueError(f"{name} {shape} must have the output height and width "
                                 f"{output_size} for x {x_shape}")

        # Creation order is the checkpoint order: kernel, bias, offset_kernel, offset_bias.
        self.kernel = self.add_weight(
            name="kernel", shape=(*self.kernel_size, in_channels // self.groups, self.filters),
            initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.filters,), initializer=self.bias_initializer,
                regularizer=self.bias_regularizer, constraint=self.bias_constraint)
        self.offset_kernel = self.offset_bias = None
        if source_shape is not None:
            predicted_channels = offset_channels + mask_channels
            self.offset_kernel = self.add_weight(
                name="offset_kernel",
                shape=(*self.kernel_size, source_shape[-1], predicted_channels),
                initializer="zeros")
            self.offset_bias = self.add_weight(
                name="offset_bias", shape=(predicted_channels,), initializer="zeros")

        # Pins the channel counts (and, in custom mode, the number of inputs) for later calls.
        if is_list:
            self.input_spec = [keras.layers.InputSpec(ndim=4, axes={-1: shape[-1]})
                               for shape in shapes]
        else:
            self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: in_channels})

    def call(self, inputs):
        is_list = isinstance(inputs, (list, tuple))
        x, offset_source, offset, mask = self._split_inputs(inputs, is_list)
        if offset_source is not None:
            offset, mask = predict_offset_and_mask(self, offset_source)
        outputs = deform_conv2d(
            x, offset, self.kernel, bias=self.bias, mask=mask, strides=self.strides,
            padding=self.padding, dilation_rate=self.dilation_rate, groups=self.groups,
            deformable_groups=self.deformable_groups)
        return self.activation(outputs)

    def _output_spatial_shape(self, shape):
        """(Ho, Wo) of an NHWC shape, by the op's output-size formula; None where unknown."""
        sizes = []
        for axis in (0, 1):
            size = shape[1 + axis]
            stride = self.strides[axis]
            extent = self.dilation_rate[axis] * (self.kernel_size[axis] - 1) + 1
            if size is None:
                sizes.append(None)
                continue
            if self.padding == "same":
                out = -(-size // stride)
            else:
                pad = 0 if self.padding == "valid" else self.padding[axis]
                out = (size + 2 * pad - extent) // stride + 1
            if out < 1:
                raise ValueError(
                    f"DCNv2 input {tuple(shape)} is too small for kernel_size={self.kernel_size}, "
                    f"dilation_rate={self.dilation_rate} and padding={self.padding!r}")
            sizes.append(out)
        return tuple(sizes)

    def compute_output_shape(self, input_shape):
        is_list = _is_shape_list(input_shape)
        shapes = [tuple(s) for s in input_shape] if is_list else tuple(input_shape)
        x_shape = self._split_inputs(shapes, is_list)[0]
        return (x_shape[0], *self._output_spatial_shape(x_shape), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
            "groups": self.groups,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "deformable_groups": self.deformable_groups,
            "use_custom_offset": self.use_custom_offset,
        })
        return config


# The name iSeg users know, for the same class: Keras' .weights.h5 files address a layer's
# weights by its class name, so one class keeps checkpoints loading whichever name built the
# model. Configs registered under either name deserialize; new ones are written as DCNv2.
DCNv2Optimized = DCNv2
keras.saving.get_custom_objects()["tensorflow_dcn>DCNv2Optimized"] = DCNv2
