"""Argument handling shared by the functional op, the layers and the pure-TF reference: integer
pairs, padding, and the output size of a convolution. Plain Python: importing it loads no op
library."""

import operator


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


def positive_int(value, name):
    number = checked_int(value, 1)
    if number is None:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return number


def int_pair(value, name, minimum=None):
    """An int or a pair of ints as a tuple of two ints (each at least `minimum` when given)."""
    items = tuple(value) if isinstance(value, (list, tuple)) else (value, value)
    pair = tuple(checked_int(item, minimum) for item in items)
    if len(pair) != 2 or None in pair:
        at_least = "" if minimum is None else f", each at least {minimum}"
        raise ValueError(f"{name} must be an int or a pair of ints{at_least}; got {value!r}")
    return pair


def standardize_padding(padding):
    """'valid', 'same' (any case), or a symmetric (pad_h, pad_w) of non-negative ints."""
    if isinstance(padding, str):
        if padding.lower() not in ("valid", "same"):
            raise ValueError(
                f"padding must be 'valid', 'same', an int or (pad_h, pad_w); got {padding!r}"
            )
        return padding.lower()
    return int_pair(padding, "padding", minimum=0)


def same_padding(size, kernel, stride, dilation, maximum=max):
    """Keras/TF 'same' padding along one axis: (before, after); after may exceed before by one.
    `size` may be a tensor (with maximum=tf.maximum) where it is known only at run time."""
    extent = dilation * (kernel - 1) + 1
    out = -(-size // stride)
    total = maximum((out - 1) * stride + extent - size, 0)
    return total // 2, total - total // 2


def padding_amounts(padding, size, kernel, stride, dilation, axis):
    """(before, after) zero rows or columns along `axis` (0: height, 1: width) for a standardized
    `padding` and a known input size."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        return same_padding(size, kernel, stride, dilation)
    return padding[axis], padding[axis]


def output_size(size, before, after, kernel, stride, dilation):
    """Output size of a convolution along one axis (< 1 when the input is too small)."""
    return (size + before + after - dilation * (kernel - 1) - 1) // stride + 1
