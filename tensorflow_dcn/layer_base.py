"""What the DCNv2 layers share: arguments and their checks, weights, the offset/mask prediction,
input handling, output shape and config. `tfdcn.DCNv2` (the custom op) and
`tensorflow_dcn.reference.PureTFDCNv2` (plain TensorFlow) differ only in the deformable
convolution they run. Importing this module loads no op library."""

import keras
import tensorflow as tf

from tensorflow_dcn import arguments


def _sizes_agree(sizes, expected):
    """Whether spatial sizes agree where both are known."""
    return all(a is None or b is None or a == b for a, b in zip(sizes, expected))


def _is_shape_list(input_shape):
    """Whether a shape Keras hands to build/compute_output_shape is a list of per-input shapes."""
    return len(input_shape) > 0 and isinstance(input_shape[0], (list, tuple, tf.TensorShape))


def gpu_visible():
    """Whether TensorFlow sees a GPU: where the layers run unless placed otherwise."""
    return bool(tf.config.list_logical_devices("GPU"))


# TensorFlow's own CPU kernels have no gradient for a dilated conv (where oneDNN does not take it
# over: CPUs without AVX-512, TF_ENABLE_ONEDNN_OPTS=0); XLA's have, as Keras uses for the convs
# that TensorFlow's CPU kernels cannot run.
@tf.function(jit_compile=True)
def _conv2d_xla(source, kernel, strides, padding, dilations):
    return tf.nn.conv2d(source, kernel, strides=strides, padding=padding, dilations=dilations)


def predict_offset_and_mask(layer, offset_source, channel_multiple=1):
    """A DCNv2 layer's internal conv (weights `offset_kernel`, `offset_bias`; the layer's strides,
    padding and dilation): its first 2*dg*kh*kw channels are the offsets, the rest pass a sigmoid
    and are the mask. With `channel_multiple`, the conv runs with zero filters added up to a
    multiple of it and their outputs dropped again: the same results, from faster GPU kernels."""
    if isinstance(layer.padding, str):
        padding = layer.padding.upper()
    else:
        # Zero rows and columns first, then a 'VALID' conv: TensorFlow's CPU conv with an
        # explicit padding list misses its fast kernels (bfloat16: about 70x slower).
        pad_h, pad_w = layer.padding
        if pad_h or pad_w:
            offset_source = tf.pad(offset_source, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
        padding = "VALID"
    kernel = tf.convert_to_tensor(layer.offset_kernel)  # a tensor for _conv2d_xla's signature
    channels = kernel.shape[-1]
    extra = -channels % channel_multiple
    if extra:
        # By concat: a tf.pad of the filter stops TensorFlow 2.21's oneDNN layout pass (CPU).
        kernel = tf.concat([kernel, tf.zeros([*kernel.shape[:3], extra], kernel.dtype)], axis=-1)
    dilated_on_cpu = max(layer.dilation_rate) > 1 and not gpu_visible()
    predicted = (_conv2d_xla if dilated_on_cpu else tf.nn.conv2d)(
        offset_source, kernel, strides=layer.strides, padding=padding, dilations=layer.dilation_rate
    )
    if extra:
        predicted = predicted[..., :channels]
    predicted = tf.nn.bias_add(predicted, layer.offset_bias)
    offset_channels = 2 * layer.deformable_groups * layer.kernel_size[0] * layer.kernel_size[1]
    return predicted[..., :offset_channels], tf.sigmoid(predicted[..., offset_channels:])


class DeformableConv2DBase(keras.layers.Layer):
    """The Keras layer of modulated deformable convolution, minus the convolution itself:
    subclasses implement `deformable_conv(x, offset, mask)`. The arguments, inputs and weights
    are documented on `tfdcn.DCNv2`."""

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        data_format=None,
        dilation_rate=1,
        groups=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        deformable_groups=1,
        use_custom_offset=False,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        name = type(self).__name__
        self.filters = arguments.positive_int(filters, "filters")
        self.kernel_size = arguments.int_pair(kernel_size, "kernel_size", minimum=1)
        self.strides = arguments.int_pair(strides, "strides", minimum=1)
        self.padding = arguments.standardize_padding(padding)
        if data_format not in (None, "channels_last"):
            raise ValueError(
                f"{name} supports data_format='channels_last' (NHWC) only, got {data_format!r}; "
                "transpose NCHW inputs with tf.transpose(x, [0, 2, 3, 1])"
            )
        if data_format is None and keras.config.image_data_format() != "channels_last":
            raise ValueError(
                f"{name} supports channels_last (NHWC) only, but keras.config.image_data_format() "
                f"is {keras.config.image_data_format()!r}; pass data_format='channels_last'"
            )
        self.data_format = "channels_last"
        self.dilation_rate = arguments.int_pair(dilation_rate, "dilation_rate", minimum=1)
        self.groups = arguments.positive_int(groups, "groups")
        if self.filters % self.groups:
            raise ValueError(
                f"filters ({self.filters}) must be divisible by groups ({self.groups})"
            )
        self.deformable_groups = arguments.positive_int(deformable_groups, "deformable_groups")
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self.use_custom_offset = bool(use_custom_offset)

    def deformable_conv(self, x, offset, mask):
        """The deformable convolution of x with this layer's kernel and bias."""
        raise NotImplementedError

    def offset_channel_multiple(self):
        """The internal conv's output channels are padded to a multiple of this (see
        predict_offset_and_mask); 1 runs it as users' pure-TF layers do."""
        return 1

    @property
    def _taps(self):
        return self.kernel_size[0] * self.kernel_size[1]

    def _split_inputs(self, inputs, is_list):
        """(x, offset_source, offset, mask) from the layer's inputs, tensors or shapes alike;
        offset_source is None when offset and mask are given, and they are None otherwise."""
        name = type(self).__name__
        count = len(inputs) if is_list else 1
        if not self.use_custom_offset:
            if is_list:
                raise ValueError(
                    f"{name} with use_custom_offset=False takes a single input x, got a list of "
                    f"{count}; pass use_custom_offset=True for [x, offset_source] or "
                    "[x, offset, mask]"
                )
            return inputs, inputs, None, None
        if count not in (2, 3):
            raise ValueError(
                f"{name} with use_custom_offset=True takes [x, offset_source] or "
                f"[x, offset, mask], got {count} input(s)"
            )
        if count == 2:
            return inputs[0], inputs[1], None, None
        return inputs[0], None, inputs[1], inputs[2]

    def build(self, input_shape):
        name = type(self).__name__
        is_list = _is_shape_list(input_shape)
        shapes = [tuple(s) for s in input_shape] if is_list else tuple(input_shape)
        x_shape, source_shape, offset_shape, mask_shape = self._split_inputs(shapes, is_list)
        named = {
            "x": x_shape,
            "offset_source": source_shape,
            "offset": offset_shape,
            "mask": mask_shape,
        }
        for input_name, shape in named.items():
            if shape is not None and (len(shape) != 4 or shape[-1] is None):
                raise ValueError(
                    f"{name} expects {input_name} of shape [N, H, W, C] with C known, got {shape}"
                )
        in_channels = x_shape[-1]
        for divisor in ("groups", "deformable_groups"):
            if in_channels % getattr(self, divisor):
                raise ValueError(
                    f"the input channels ({in_channels}) must be divisible by "
                    f"{divisor} ({getattr(self, divisor)})"
                )
        offset_channels = 2 * self.deformable_groups * self._taps
        mask_channels = self.deformable_groups * self._taps
        if offset_shape is not None and (
            offset_shape[-1] != offset_channels or mask_shape[-1] != mask_channels
        ):
            raise ValueError(
                f"with kernel_size={self.kernel_size} and deformable_groups="
                f"{self.deformable_groups}, offset needs {offset_channels} channels and mask "
                f"{mask_channels}; got offset {offset_shape} and mask {mask_shape}"
            )
        output_size = self._output_spatial_shape(x_shape)
        if self.use_custom_offset and source_shape is not None:
            if not _sizes_agree(self._output_spatial_shape(source_shape), output_size):
                raise ValueError(
                    f"offset_source {source_shape} must have the height and width of x {x_shape}"
                )
        for input_name, shape in (("offset", offset_shape), ("mask", mask_shape)):
            if shape is not None and not _sizes_agree(shape[1:3], output_size):
                raise ValueError(
                    f"{input_name} {shape} must have the output height and width "
                    f"{output_size} for x {x_shape}"
                )

        # Creation order is the checkpoint order: kernel, bias, offset_kernel, offset_bias.
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, in_channels // self.groups, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        self.offset_kernel = self.offset_bias = None
        if source_shape is not None:
            predicted_channels = offset_channels + mask_channels
            self.offset_kernel = self.add_weight(
                name="offset_kernel",
                shape=(*self.kernel_size, source_shape[-1], predicted_channels),
                initializer="zeros",
            )
            self.offset_bias = self.add_weight(
                name="offset_bias", shape=(predicted_channels,), initializer="zeros"
            )

        # Pins the channel counts (and, in custom mode, the number of inputs) for later calls.
        if is_list:
            self.input_spec = [
                keras.layers.InputSpec(ndim=4, axes={-1: shape[-1]}) for shape in shapes
            ]
        else:
            self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: in_channels})

    def call(self, inputs):
        is_list = isinstance(inputs, (list, tuple))
        x, offset_source, offset, mask = self._split_inputs(inputs, is_list)
        if offset_source is not None:
            offset, mask = predict_offset_and_mask(
                self, offset_source, self.offset_channel_multiple()
            )
        return self.activation(self.deformable_conv(x, offset, mask))

    def _output_spatial_shape(self, shape):
        """(Ho, Wo) of an NHWC shape; None where unknown."""
        sizes = []
        for axis in (0, 1):
            size = shape[1 + axis]
            if size is None:
                sizes.append(None)
                continue
            kernel, stride = self.kernel_size[axis], self.strides[axis]
            dilation = self.dilation_rate[axis]
            before, after = arguments.padding_amounts(
                self.padding, size, kernel, stride, dilation, axis
            )
            out = arguments.output_size(size, before, after, kernel, stride, dilation)
            if out < 1:
                raise ValueError(
                    f"{type(self).__name__} input {tuple(shape)} is too small for kernel_size="
                    f"{self.kernel_size}, dilation_rate={self.dilation_rate} and padding="
                    f"{self.padding!r}"
                )
            sizes.append(out)
        return tuple(sizes)

    def compute_output_shape(self, input_shape):
        is_list = _is_shape_list(input_shape)
        shapes = [tuple(s) for s in input_shape] if is_list else tuple(input_shape)
        x_shape = self._split_inputs(shapes, is_list)[0]
        return (x_shape[0], *self._output_spatial_shape(x_shape), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
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
            }
        )
        return config
