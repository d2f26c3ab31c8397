"""DCNv2Forward against the float64 oracle and, with zero offsets, against tf.nn.conv2d."""

import dataclasses

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import tensorflow_dcn as tfdcn

import op_test_util as util
import oracle


def conv2d_reference(operands, config):
    """tf.nn.conv2d (+ bias) with the config's symmetric padding, one call per group."""
    (pad_h, pad_w), groups = config.pad, config.groups
    inputs = tf.split(operands["input"], groups, axis=3)
    weights = tf.split(operands["weight"], groups, axis=3)
    output = tf.concat(
        [
            tf.nn.conv2d(
                x,
                w,
                strides=config.stride,
                padding=[[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]],
                dilations=config.dilation,
            )
            for x, w in zip(inputs, weights)
        ],
        axis=3,
    )
    return output if operands["bias"] is None else output + operands["bias"]


class ForwardTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        util.with_devices(
            [
                (f"{name}_{dtype.name}", dict(config=config, dtype=dtype))
                for name, config in util.PARITY_CONFIGS
                for dtype in (tf.float64, tf.float32)
            ]
        )
    )
    def test_matches_oracle(self, config, dtype, device):
        util.assert_forward_matches_oracle(self, config, dtype, device)

    @parameterized.named_parameters(
        util.with_devices(
            [
                (f"{name}_{dtype.name}", dict(config=config, dtype=dtype))
                for name, config in util.LOW_PRECISION_CONFIGS
                for dtype in util.LOW_PRECISION_DTYPES
            ]
        )
    )
    def test_low_precision_matches_oracle(self, config, dtype, device):
        util.assert_forward_matches_oracle(self, config, dtype, device)

    @parameterized.named_parameters(
        util.with_devices(
            [
                (f"{name}_{'mask_ones' if mask else 'no_mask'}", dict(config=config, mask=mask))
                for name, config in util.CONV_CONFIGS
                for mask in (True, False)
            ]
        )
    )
    def test_zero_offset_is_conv2d(self, config, mask, device):
        problem = util.make_problem(dataclasses.replace(config, mask=mask))
        if mask:
            problem["mask"] = np.ones_like(problem["mask"])
        operands = util.as_dtype(problem, tf.float64)
        actual = util.forward(operands, config.attrs, device)
        util.assert_on_device(self, actual, device)
        util.assert_near(self, actual, conv2d_reference(operands, config), tf.float64)

    @parameterized.named_parameters(util.with_devices([("", {})]))
    def test_samples_far_outside_read_zero(self, device):
        # Every sample lands at least 1 px beyond the border: the output is the bias alone.
        config = util.Config(batch=2, height=5, width=7, pad=(1, 1))
        operands = util.as_dtype(util.make_problem(config), tf.float64)
        ho, wo = config.output_hw
        operands["offset"] = tf.fill([2, ho, wo, 18], tf.constant(20.0, tf.float64))
        actual = util.forward(operands, config.attrs, device)
        self.assertAllEqual(actual, tf.broadcast_to(operands["bias"], actual.shape))


class DeformConv2dTest(tf.test.TestCase, parameterized.TestCase):
    """tfdcn.deform_conv2d: padding modes on top of the raw op."""

    @parameterized.named_parameters(
        ("same_stride1_odd", (7, 9), 1, "same"),
        ("same_stride2_even", (8, 6), 2, "same"),  # Keras puts the extra row/column bottom/right
        ("same_stride2_odd", (9, 7), 2, "same"),
        ("valid_stride2", (9, 8), 2, "valid"),
    )
    def test_zero_offset_matches_conv2d(self, size, strides, padding):
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(size=(2,) + size + (4,)))
        kernel = tf.constant(rng.normal(size=(3, 3, 4, 5)))
        expected = tf.nn.conv2d(x, kernel, strides, padding.upper())
        offset = tf.zeros(expected.shape[:3] + (18,), tf.float64)
        actual = tfdcn.deform_conv2d(x, offset, kernel, strides=strides, padding=padding)
        util.assert_near(self, actual, expected, tf.float64)

    def test_same_padding_with_offsets_pads_bottom_right(self):
        # 'same' with stride 2 on an even size pads 0 rows above and 1 below, 1 column left
        # and 2 right: the oracle sees that padding done explicitly.
        rng = np.random.default_rng(1)
        x = tf.constant(rng.normal(size=(1, 8, 9, 4)))
        kernel = tf.constant(rng.normal(size=(3, 4, 4, 2)))
        offset = tf.constant(rng.uniform(-3, 3, size=(1, 4, 5, 24)))
        mask = tf.constant(rng.uniform(size=(1, 4, 5, 12)))
        actual = tfdcn.deform_conv2d(x, offset, kernel, mask=mask, strides=2, padding="same")
        padded = tf.pad(x, [[0, 0], [0, 1], [1, 2], [0, 0]])
        expected = oracle.deform_conv2d(
            padded, offset, kernel, mask, kernel_h=3, kernel_w=4, stride_h=2, stride_w=2
        )
        util.assert_near(self, actual, expected, tf.float64)

    def test_int_and_pair_padding(self):
        rng = np.random.default_rng(2)
        x = tf.constant(rng.normal(size=(1, 5, 6, 2)))
        kernel = tf.constant(rng.normal(size=(3, 3, 2, 2)))
        offset = tf.constant(rng.uniform(-2, 2, size=(1, 7, 6, 18)))
        bias = tf.constant(rng.normal(size=(2,)))
        actual = tfdcn.deform_conv2d(x, offset, kernel, bias, padding=(2, 1))
        expected = oracle.deform_conv2d(
            x, offset, kernel, bias=bias, kernel_h=3, kernel_w=3, pad_h=2, pad_w=1
        )
        util.assert_near(self, actual, expected, tf.float64)
        offset = offset[:, :5, :6]
        actual = tfdcn.deform_conv2d(x, offset, kernel, bias, padding=1)
        expected = oracle.deform_conv2d(
            x, offset, kernel, bias=bias, kernel_h=3, kernel_w=3, pad_h=1, pad_w=1
        )
        util.assert_near(self, actual, expected, tf.float64)

    def test_mixed_dtypes_raise_type_error(self):
        x = tf.zeros([1, 5, 5, 2], tf.float32)
        with self.assertRaisesRegex(TypeError, "offset has dtype float64"):
            tfdcn.deform_conv2d(x, tf.zeros([1, 3, 3, 18], tf.float64), tf.zeros([3, 3, 2, 2]))


if __name__ == "__main__":
    tf.test.main()
