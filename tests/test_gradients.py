"""DCNv2 gradients: finite differences, the oracle's autodiff, exact values at integer sample
positions, and the registered gradient in eager and tf.function."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tensorflow_dcn import ops

import op_test_util as util
import oracle

# A 3x3 image whose differences are all distinct, so each expected number names its pixels.
IMAGE_3X3 = np.array([[1.0, 2.0, 4.0], [8.0, 16.0, 32.0], [64.0, 128.0, 256.0]])

EXACT_DTYPES = (tf.float64, tf.float32)  # the exact cases below are dyadic: no rounding


def exact_cases():
    return util.with_devices([(dtype.name, dict(dtype=dtype)) for dtype in EXACT_DTYPES])


def constant(value, dtype):
    return tf.constant(np.asarray(value, np.float64), dtype)


class GradientTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        util.with_devices([(name, dict(config=config)) for name, config in util.GRADIENT_CONFIGS])
    )
    def test_matches_finite_differences(self, config, device):
        util.assert_finite_difference_gradients(self, config, device)

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
        # Includes integer offsets and samples outside the image, where finite differences fail.
        util.assert_backward_matches_oracle(self, config, dtype, device)

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
        util.assert_backward_matches_oracle(self, config, dtype, device)

    @parameterized.named_parameters(util.with_devices([("", {})]))
    def test_large_problem_matches_oracle(self, device):
        util.assert_forward_matches_oracle(self, util.LARGE_CONFIG, tf.float64, device)
        util.assert_backward_matches_oracle(self, util.LARGE_CONFIG, tf.float64, device)


class IntegerPositionGradientTest(tf.test.TestCase, parameterized.TestCase):
    """Samples exactly at integer positions: the position derivative is the right-sided one, taken
    in the cell floor(p) (docs/design.md). Hand-computed values, asserted exactly."""

    def run_backward(self, dtype, device, input, offset, weight, mask=None, **attrs):
        operands = dict(
            input=constant(input, dtype),
            offset=constant(offset, dtype),
            weight=constant(weight, dtype),
            mask=None if mask is None else constant(mask, dtype),
            bias=None,
        )
        output = util.forward(operands, attrs, device)
        grads = util.backward(tf.ones_like(output), operands, attrs, device)
        return output, grads

    @parameterized.named_parameters(exact_cases())
    def test_zero_offset_1x1_kernel(self, dtype, device):
        # Output (i, j) samples pixel (i, j). d/dy = v(i+1, j) - v(i, j), and at the last row
        # (p = H-1) it is 0 - v(H-1, j); likewise d/dx.
        output, grads = self.run_backward(
            dtype,
            device,
            IMAGE_3X3.reshape(1, 3, 3, 1),
            np.zeros([1, 3, 3, 2]),
            [[[[1.0]]]],
            mask=np.ones([1, 3, 3, 1]),
            kernel_h=1,
            kernel_w=1,
        )
        self.assertAllEqual(output[0, :, :, 0], IMAGE_3X3)
        self.assertAllEqual(
            grads["offset"][0, :, :, 0], [[7, 14, 28], [56, 112, 224], [-64, -128, -256]]
        )
        self.assertAllEqual(
            grads["offset"][0, :, :, 1], [[1, 2, -4], [8, 16, -32], [64, 128, -256]]
        )
        self.assertAllEqual(grads["mask"][0, :, :, 0], IMAGE_3X3)
        self.assertAllEqual(grads["input"], tf.ones([1, 3, 3, 1]))
        self.assertAllEqual(grads["weight"], [[[[511]]]])

    @parameterized.named_parameters(exact_cases())
    def test_zero_offset_3x3_kernel_at_top_left_border(self, dtype, device):
        # Pad 1 and only tap (0, 0) weighted: output (i, j) samples (i-1, j-1). At p = -1 the
        # derivative is v(0) - 0, not zero; a sample at (-1, -1) has both derivatives zero.
        weight = np.zeros([3, 3, 1, 1])
        weight[0, 0] = 1.0
        output, grads = self.run_backward(
            dtype,
            device,
            IMAGE_3X3.reshape(1, 3, 3, 1),
            np.zeros([1, 3, 3, 18]),
            weight,
            kernel_h=3,
            kernel_w=3,
            pad_h=1,
            pad_w=1,
        )
        self.assertAllEqual(output[0, :, :, 0], [[0, 0, 0], [0, 1, 2], [0, 8, 16]])
        self.assertAllEqual(grads["offset"][0, :, :, 0], [[0, 1, 2], [0, 7, 14], [0, 56, 112]])
        self.assertAllEqual(grads["offset"][0, :, :, 1], [[0, 0, 0], [1, 1, 2], [8, 8, 16]])
        self.assertAllEqual(grads["offset"][..., 2:], tf.zeros([1, 3, 3, 16]))  # zero weights
        self.assertAllEqual(grads["input"][0, :, :, 0], [[1, 1, 0], [1, 1, 0], [0, 0, 0]])
        # Tap (a, b) sums the image over rows a-1..a+1 and columns b-1..b+1 (inside).
        self.assertAllEqual(
            grads["weight"][:, :, 0, 0], [[27, 63, 54], [219, 511, 438], [216, 504, 432]]
        )

    @parameterized.named_parameters(exact_cases())
    def test_positions_at_and_beyond_the_border(self, dtype, device):
        # A 5x1 image [2, 3, 5, 7, 11], 1x1 kernel with weight 3, mask 0.5. Row i samples
        # y = i + dy at x = 0 (= W-1, so d/dx is 0 - v in the cell):
        #   y = -1:   value 0, d/dy = v(0) = 2, d/dx = 0
        #   y = 4:    value 11, d/dy = 0 - 11, d/dx = 0 - 11   (p = H-1)
        #   y = 5:    outside [-1, H): value and gradients 0
        #   y = -1.5: outside: 0
        #   y = -0.5: value 0.5 * 2 = 1, d/dy = 2, d/dx = 0.5 * (0 - 2) = -1
        # Outputs and offset gradients carry mask * weight = 1.5; grad_mask carries weight 3.
        offset = np.array([[-1, 0], [3, 0], [3, 0], [-4.5, 0], [-4.5, 0]]).reshape(1, 5, 1, 2)
        image = np.reshape([2, 3, 5, 7, 11], [1, 5, 1, 1])
        output, grads = self.run_backward(
            dtype,
            device,
            image,
            offset,
            [[[[3.0]]]],
            mask=np.full([1, 5, 1, 1], 0.5),
            kernel_h=1,
            kernel_w=1,
        )
        self.assertAllEqual(output[0, :, 0, 0], [0, 16.5, 0, 0, 1.5])
        self.assertAllEqual(grads["offset"][0, :, 0, 0], [3, -16.5, 0, 0, 3])
        self.assertAllEqual(grads["offset"][0, :, 0, 1], [0, -16.5, 0, 0, -1.5])
        self.assertAllEqual(grads["mask"][0, :, 0, 0], [0, 33, 0, 0, 3])
        self.assertAllEqual(grads["input"][0, :, 0, 0], [0.75, 0, 0, 0, 1.5])
        self.assertAllEqual(grads["weight"], [[[[6]]]])


class RegisteredGradientTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        util.with_devices(
            [
                (
                    f"{mode}_{'mask' if mask else 'no_mask'}_{'bias' if bias else 'no_bias'}",
                    dict(mode=mode, with_mask=mask, with_bias=bias),
                )
                for mode in ("eager", "tf_function")
                for mask in (True, False)
                for bias in (True, False)
            ]
        )
    )
    def test_tape_gradients_match_oracle(self, mode, with_mask, with_bias, device):
        config = util.Config(
            batch=2,
            height=6,
            width=5,
            pad=(1, 1),
            groups=2,
            deformable_groups=2,
            max_offset=3.0,
            mask=with_mask,
            bias=with_bias,
        )
        operands = {
            k: v
            for k, v in util.as_dtype(util.make_problem(config), tf.float64).items()
            if v is not None
        }
        grad_output = util.gradient_probe(config, tf.float64)

        def gradients(operands):
            with tf.GradientTape() as tape:
                tape.watch(operands)
                with tf.device(util.device_name(device)):
                    output = ops.dcn_v2_forward(**operands, **config.attrs)
                loss = tf.reduce_sum(output * grad_output)
            return tape.gradient(loss, operands)

        if mode == "tf_function":
            gradients = tf.function(gradients)
        actual = gradients(operands)
        expected = oracle.gradients(grad_output, **operands, **config.attrs)
        self.assertCountEqual(actual.keys(), expected.keys())
        for name, value in actual.items():
            self.assertIsNotNone(value, name)
            util.assert_near(self, value, expected[name], tf.float64, msg=name)

    def test_forward_then_backward_input_then_backward_weight(self):
        # So that no two of the ops' workspaces are allocated at once.
        config = util.Config(batch=1, height=5, width=5)
        operands = {k: v for k, v in util.make_problem(config).items() if v is not None}

        @tf.function
        def gradients(operands):
            with tf.GradientTape() as tape:
                tape.watch(operands)
                loss = tf.reduce_sum(ops.dcn_v2_forward(**operands, **config.attrs))
            return tape.gradient(loss, operands)

        graph = gradients.get_concrete_function(operands).graph
        by_type = {op.type: op for op in graph.get_operations()}
        backward_weight = by_type["DCNv2BackwardWeight"]
        self.assertIn(by_type["DCNv2BackwardInput"], backward_weight.control_inputs)
        self.assertIn(by_type["DCNv2Forward"], by_type["DCNv2BackwardInput"].control_inputs)

    @parameterized.named_parameters(util.with_devices([("", {})]))
    def test_absent_mask_and_bias_have_no_gradient_outputs(self, device):
        attrs = dict(kernel_h=3, kernel_w=3)
        z = lambda *shape: tf.zeros(shape, tf.float64)
        with tf.device(util.device_name(device)):
            backward_input = ops._ops.dc_nv2_backward_input(
                z(1, 3, 3, 2), z(1, 5, 5, 4), z(1, 3, 3, 18), [], z(3, 3, 4, 2), **attrs
            )
            backward_weight = ops._ops.dc_nv2_backward_weight(
                z(1, 3, 3, 2), z(1, 5, 5, 4), z(1, 3, 3, 18), [], num_grad_biases=0, **attrs
            )
            wrapped_input = ops.dcn_v2_backward_input(
                z(1, 3, 3, 2), z(1, 5, 5, 4), z(1, 3, 3, 18), z(3, 3, 4, 2), **attrs
            )
            wrapped_weight = ops.dcn_v2_backward_weight(
                z(1, 3, 3, 2), z(1, 5, 5, 4), z(1, 3, 3, 18), with_bias=False, **attrs
            )
        self.assertEqual(list(backward_input.grad_mask), [])
        self.assertEqual(list(backward_weight.grad_bias), [])
        self.assertIsNone(wrapped_input[2])
        self.assertIsNone(wrapped_weight[1])
        self.assertEqual(backward_input.grad_offset.shape, [1, 3, 3, 18])
        self.assertEqual(backward_weight.grad_weight.shape, [3, 3, 4, 2])


if __name__ == "__main__":
    tf.test.main()
