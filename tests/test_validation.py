"""Operand validation of the raw ops, empty batches and non-finite offsets."""

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import op_test_util as util
import oracle

ALL_DTYPES = (tf.float64, tf.float32, tf.float16, tf.bfloat16)


def bad_input_cases():
    return util.with_devices(
        [
            (f"{name}_{op}", dict(case=case, op=op))
            for name, case in util.BAD_INPUTS
            for op in case.ops
        ]
    )


class BadInputTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(bad_input_cases())
    def test_eager_raises_invalid_argument_naming_it(self, case, op, device):
        with tf.device(util.device_name(device)):
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError, case.message):
                util.run_op(op, case.operand_shapes(op), case.full_attrs)

    @parameterized.named_parameters(bad_input_cases())
    def test_tf_function_with_static_shapes_raises(self, case, op, device):
        # The shape function rejects what it can see at trace time (TensorFlow raises that as
        # ValueError); the rest (e.g. 32-bit limits) fails in the kernel.
        @tf.function
        def run():
            with tf.device(util.device_name(device)):
                return util.run_op(op, case.operand_shapes(op), case.full_attrs)

        with self.assertRaises((ValueError, tf.errors.InvalidArgumentError)):
            run()


class EmptyBatchTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        util.with_devices([(dtype.name, dict(dtype=dtype)) for dtype in ALL_DTYPES])
    )
    def test_batch_zero_gives_empty_results_and_zero_weight_gradient(self, dtype, device):
        config = util.Config(
            batch=0, height=7, width=5, out_channels=6, pad=(1, 1), groups=2, deformable_groups=2
        )
        operands = util.as_dtype(util.make_problem(config), dtype)
        output = util.forward(operands, config.attrs, device)
        self.assertEqual(output.shape, [0, 7, 5, 6])
        grads = util.backward(tf.zeros(output.shape, dtype), operands, config.attrs, device)
        for name in ("input", "offset", "mask"):
            self.assertEqual(grads[name].shape, operands[name].shape, name)
        self.assertAllEqual(grads["weight"], tf.zeros([3, 3, 2, 6], dtype))
        self.assertAllEqual(grads["bias"], tf.zeros([6], dtype))


class NonFiniteOffsetTest(tf.test.TestCase, parameterized.TestCase):
    """A non-finite or huge sample position drops the sample: it reads zero and gets zero offset
    (and mask) gradient, and nothing else changes (docs/design.md). So the results must equal the
    oracle's with that sample's offset made finite and its mask set to zero."""

    BAD_VALUES = (np.nan, np.inf, -np.inf, 1e30, -1e30)

    @parameterized.named_parameters(
        util.with_devices(
            [
                (f"{dtype.name}_{'mask' if mask else 'no_mask'}", dict(dtype=dtype, with_mask=mask))
                for dtype in ALL_DTYPES
                for mask in (True, False)
            ]
        )
    )
    def test_bad_offsets_drop_their_sample(self, dtype, with_mask, device):
        config = util.Config(
            batch=2,
            height=4,
            width=5,
            in_channels=4,
            out_channels=3,
            pad=(1, 1),
            deformable_groups=2,
            offsets="fractional",
            mask=with_mask,
        )
        problem = util.make_problem(config)
        offset = problem["offset"].reshape(2, 4, 5, 2, 9, 2)  # (group, tap, (dy, dx))
        dropped = np.zeros(offset.shape[:-1], bool)
        rng = np.random.default_rng(0)
        for k, index in enumerate(zip(*(rng.integers(0, n, 12) for n in dropped.shape))):
            offset[index + (k % 2,)] = self.BAD_VALUES[k % len(self.BAD_VALUES)]
            dropped[index] = True
        offset[0, 0, 0, 0, 0] = np.nan  # both coordinates bad
        dropped[0, 0, 0, 0, 0] = True
        problem["offset"] = offset.reshape(2, 4, 5, 36)
        dropped = dropped.reshape(2, 4, 5, 18)
        mask = 1.0 if problem["mask"] is None else problem["mask"]
        with np.errstate(over="ignore"):  # 1e30 becomes inf in half: one more bad value
            operands = util.as_dtype(problem, dtype)
            reference = util.as_dtype(dict(problem, mask=np.where(dropped, 0.0, mask)), dtype)
        usable = tf.math.is_finite(operands["offset"]) & (tf.abs(operands["offset"]) < 1e29)
        reference["offset"] = tf.where(
            usable, operands["offset"], tf.zeros_like(operands["offset"])
        )

        output = util.forward(operands, config.attrs, device)
        self.assertTrue(np.all(np.isfinite(as_float64(output))))
        util.assert_near(self, output, oracle.deform_conv2d(**reference, **config.attrs), dtype)

        grad_output = util.gradient_probe(config, dtype)
        grads = {
            k: as_float64(v)
            for k, v in util.backward(grad_output, operands, config.attrs, device).items()
        }
        expected = oracle.gradients(grad_output, **reference, **config.attrs)
        for name, value in grads.items():
            self.assertTrue(np.all(np.isfinite(value)), name)
            if name != "mask":
                util.assert_near(self, value, expected[name], dtype, msg=name)
        dropped_offsets = grads["offset"][np.repeat(dropped, 2, axis=-1)]
        self.assertAllEqual(dropped_offsets, np.zeros_like(dropped_offsets))
        if with_mask:
            # A dropped sample reads zero, so its mask gradient is zero; the others as usual.
            self.assertAllEqual(grads["mask"][dropped], np.zeros(np.count_nonzero(dropped)))
            util.assert_near(
                self,
                np.where(dropped, 0.0, grads["mask"]),
                np.where(dropped, 0.0, expected["mask"]),
                dtype,
                msg="mask",
            )


def as_float64(tensor):
    return np.asarray(tf.cast(tensor, tf.float64))


if __name__ == "__main__":
    tf.test.main()
