"""The DCNv2 ops: loading the shared library, raw op wrappers, `deform_conv2d` and its gradient."""

import operator
import os

import tensorflow as tf

from tensorflow_dcn._version import TENSORFLOW_VERSION

_LIBRARY = "_dcn_ops.so"


def _load_library():
    """Loads the op library from inside the installed package, or says why it cannot."""
    if not tf.__version__.startswith(TENSORFLOW_VERSION + "."):
        raise ImportError(
            f"tensorflow_dcn was built against TensorFlow {TENSORFLOW_VERSION}.x, but this "
            f"process imported TensorFlow {tf.__version__}. Custom ops are tied to TensorFlow's "
            f"C++ ABI: install tensorflow=={TENSORFLOW_VERSION}.* or rebuild tensorflow_dcn "
            "against this TensorFlow (./configure.sh && make build)."
        )
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), _LIBRARY)
    if not os.path.exists(path):
        raise ImportError(
            f"tensorflow_dcn: the op library {path} is missing. Install the wheel "
            "(pip install tensorflow_dcn-*.whl) or build it from a checkout with `make build`."
        )
    try:
        return tf.load_op_library(path)
    except (tf.errors.NotFoundError, OSError) as e:
        raise ImportError(
            f"tensorflow_dcn: loading {path} failed: {e}\nThis usually means the library was "
            f"built against a different TensorFlow than {tf.__version__}; rebuild it with "
            "./configure.sh && make build."
        ) from e


_ops = _load_library()

_ATTRS = (
    "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w",
    "dilation_h", "dilation_w", "groups", "deformable_groups",
)


def _check_not_xla(op_name):
    """Raises a clear error when `op_name` is about to be traced into an XLA-compiled function.

    The ops have no XLA kernels. Left alone, TensorFlow fails only when the function runs, with
    "Detected unsupported operations when trying to compile graph ...", which names the op but
    not the way out.
    """
    if tf.executing_eagerly() or tf.__internal__.get_enclosing_xla_context() is None:
        return
    raise tf.errors.InvalidArgumentError(
        None, None,
        f"{op_name} (tensorflow_dcn) has no XLA kernel, so it cannot run inside "
        "tf.function(jit_compile=True) or a function called from one. Run it in a tf.function "
        "without jit_compile (the default), or XLA-compile only the parts of the computation "
        "around it. Keras: compile() with jit_compile='auto' (the default) or False; DCNv2 sets "
        "supports_jit=False, so Keras never XLA-compiles a model that contains it. For code that "
        "must be fully XLA-compiled, tensorflow_dcn.reference.PureTFDCNv2 / "
        "deform_conv2d_reference compute the same in plain TensorFlow (slower, more memory).")


def _as_list(tensor):
    """An optional operand as the op's list input: [] when absent."""
    return [] if tensor is None else [tensor]


def dcn_v2_forward(input, offset, weight, mask=None, bias=None, *, kernel_h, kernel_w,
                   stride_h=1, stride_w=1, pad_h=0, pad_w=0, dilation_h=1, dilation_w=1,
                   groups=1, deformable_groups=1, name=None):
    """Raw DCNv2Forward: symmetric padding, NHWC, no shape conveniences."""
    _check_not_xla("DCNv2Forward")
    return _ops.dc_nv2_forward(
        input, offset, _as_list(mask), weight, _as_list(bias), kernel_h=kernel_h,
        kernel_w=kernel_w, stride_h=stride_h, stride_w=stride_w, pad_h=pad_h, pad_w=pad_w,
        dilation_h=dilation_h, dilation_w=dilation_w, groups=groups,
        deformable_groups=deformable_groups, name=name)


def dcn_v2_backward_input(grad_output, input, offset, weight, mask=None, **attrs):
    """Raw DCNv2BackwardInput: returns (grad_input, grad_offset, grad_mask or None)."""
    _check_not_xla("DCNv2BackwardInput")
    grad_input, grad_offset, grad_mask = _ops.dc_nv2_backward_input(
        grad_output, input, offset, _as_list(mask), weight, **attrs)
    return grad_input, grad_offset, (grad_mask[0] if grad_mask else None)


def dcn_v2_backward_weight(grad_output, input, offset, mask=None, with_bias=True, **attrs):
    """Raw DCNv2BackwardWeight: returns (grad_weight, grad_bias or None)."""
    _check_not_xla("DCNv2BackwardWeight")
    grad_weight, grad_bias = _ops.dc_nv2_backward_weight(
        grad_output, input, offset, _as_list(mask), num_grad_biases=int(with_bias), **attrs)
    return grad_weight, (grad_bias[0] if grad_bias else None)


@tf.RegisterGradient("DCNv2Forward")
def _dcn_v2_forward_grad(op, grad_output):
    attrs = {name: op.get_attr(name) for name in _ATTRS}
    num_masks, num_biases = op.get_attr("num_masks"), op.get_attr("num_biases")
    input, offset = op.inputs[0], op.inputs[1]
    masks = list(op.inputs[2:2 + num_masks])
    weight = op.inputs[2 + num_masks]
    grad_input, grad_offset, grad_masks = _ops.dc_nv2_backward_input(
        grad_output, input, offset, masks, weight, **attrs)
    grad_weight, grad_biases = _ops.dc_nv2_backward_weight(
        grad_output, input, offset, masks, num_grad_biases=num_biases, **attrs)
    return [grad_input, grad_offset] + list(grad_masks) + [grad_weight] + list(grad_biases)


def checked_int(value, minimum=None):
    """value as an int (a Python or NumPy integer, not a bool), or None when it is not one or is
    below `minimum`."""
    if isinstance(value, bool):
        return None
    try:
        number = operator.index(value)
    except TypeError:
        return None
    return None if minimum is not None and number < minimum else number


def int_pair(value, name, minimum=None):
    """An int or a pair of ints as a tuple of two ints (each at least `minimum` when given)."""
    items = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    pair = tuple(checked_int(item, minimum) for item in items)
    if len(pair) != 2 or None in pair:
        at_least = "" if minimum is None else f", each at least {minimum}"
        raise ValueError(f"{name} must be an int or a pair of ints{at_least}; got {value!r}")
    return pair


def same_padding(size, kernel, stride, dilation):
    """Keras/TF 'same' padding along one axis: (before, after); after may exceed before by one."""
    extent = dilation * (kernel - 1) + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def _resolve_padding(padding, inputs, kernel_size, strides, dilation):
    """Returns the symmetric (pad_h, pad_w) for the op and the zero rows/columns to add to the
    input first, as ((top, bottom), (left, right)) ints or tensors, that reproduce Keras' 'same'."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0), ((0, 0), (0, 0))
        if mode != "same":
            raise ValueError(f"padding must be 'valid', 'same', an int or (pad_h, pad_w); got {padding!r}")
        pads, extras = [], []
        for axis, k, s, d in zip((1, 2), kernel_size, strides, dilation):
            size = inputs.shape[axis]
            if size is None and s == 1:
                size = 1  # with stride 1 the padding does not depend on the size
            if size is None:
                # Unknown size and stride > 1: the padding depends on the size, so the input is
                # padded at run time and the op pads nothing along this axis.
                size = tf.shape(inputs)[axis]
                extent = d * (k - 1) + 1
                total = tf.maximum(((size + s - 1) // s - 1) * s + extent - size, 0)
                pads.append(0)
                extras.append((total // 2, total - total // 2))
            else:
                before, after = same_padding(size, k, s, d)
                pads.append(before)
                extras.append((0, after - before))
        return tuple(pads), tuple(extras)
    return int_pair(padding, "padding", minimum=0), ((0, 0), (0, 0))


def deform_conv2d(inputs, offset, kernel, bias=None, mask=None, strides=1, padding="valid",
                  dilation_rate=1, groups=1, deformable_groups=1, name=None):
    """Modulated deformable convolution (DCNv2), NHWC.

    Args:
      inputs: [N, H, W, Cin].
      offset: [N, Ho, Wo, 2*deformable_groups*kh*kw], (dy, dx) pairs per deformable group and
        kernel tap (taps in row-major order).
      kernel: [kh, kw, Cin/groups, Cout], as keras.layers.Conv2D.
      bias: optional [Cout].
      mask: optional [N, Ho, Wo, deformable_groups*kh*kw] modulation; None means 1 (DCNv1).
      strides, dilation_rate: int or pair.
      padding: 'valid', 'same' (Keras Conv2D's output size; where that needs one more row or
        column of zeros at the bottom/right than at the top/left, the input is zero-padded there
        first, and where the size is unknown when the graph is built and the stride is > 1, the
        input is zero-padded at run time), an int, or (pad_h, pad_w) applied on both sides.
      groups: grouped convolution; deformable_groups: offset groups over the input channels.

    Samples outside the input read zero (bilinear interpolation against a zero border);
    non-finite sample positions read zero as well.
    """
    with tf.name_scope(name or "deform_conv2d"):
        inputs = tf.convert_to_tensor(inputs)
        dtype = inputs.dtype
        operands = {"offset": offset, "kernel": kernel, "mask": mask, "bias": bias}
        for key, value in operands.items():
            if value is not None:
                value = tf.convert_to_tensor(value)
                if value.dtype != dtype:
                    raise TypeError(f"{key} has dtype {value.dtype.name} but inputs has "
                                    f"{dtype.name}; all operands must share one dtype")
                operands[key] = value
        kernel = operands["kernel"]
        if kernel.shape.rank != 4:
            raise ValueError(f"kernel must be [kh, kw, Cin/groups, Cout], got shape {kernel.shape}")
        kh, kw = kernel.shape[0], kernel.shape[1]
        if kh is None or kw is None:
            raise ValueError("the kernel's spatial size must be known when the graph is built")
        strides = int_pair(strides, "strides")
        dilation = int_pair(dilation_rate, "dilation_rate")
        (pad_h, pad_w), (extra_h, extra_w) = _resolve_padding(
            padding, inputs, (kh, kw), strides, dilation)
        if any(isinstance(e, tf.Tensor) or e for e in extra_h + extra_w):
            inputs = tf.pad(inputs, [[0, 0], list(extra_h), list(extra_w), [0, 0]])
        return dcn_v2_forward(
            inputs, operands["offset"], kernel, mask=operands["mask"], bias=operands["bias"],
            kernel_h=kh, kernel_w=kw, stride_h=strides[0], stride_w=strides[1], pad_h=pad_h,
            pad_w=pad_w, dilation_h=dilation[0], dilation_w=dilation[1], groups=groups,
            deformable_groups=deformable_groups)
