"""The ops under XLA (tf.function(jit_compile=True), Keras' jit_compile): the lowering to our
typed-FFI custom calls, values and every gradient against the float64 oracle in every dtype,
bad operands failing the compilation with the operand named, and models that compile, train and
round-trip through SavedModel and .keras files. On every device the machine has."""

import os
import re

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import tensorflow_dcn as tfdcn
from tensorflow_dcn import ops

import op_test_util as util
import oracle

ALL_DTYPES = (tf.float64, tf.float32, tf.float16, tf.bfloat16)
TARGETS = ("tfdcn_dcn_v2_forward", "tfdcn_dcn_v2_backward_input", "tfdcn_dcn_v2_backward_weight")
# Configs that between them cover absent mask and bias, groups, deformable groups, stride,
# dilation and batch > 1.
XLA_CONFIGS = [
    (name, c)
    for name, c in util.PARITY_CONFIGS
    if name
    in (
        "k3x3_pad1_batch3",
        "k3x3_stride2_dil2_groups2_dg2_nomask",
        "k5x3_pad2_dg4_nobias",
        "k3x3_pad2_dil2_dg4_nomask_nobias",
    )
]


def forward_and_gradients(operands, grad_output, attrs):
    """The op's output and the gradients of <output, grad_output> for the operands present."""
    present = {k: v for k, v in operands.items() if v is not None}
    with tf.GradientTape() as tape:
        tape.watch(list(present.values()))
        output = ops.dcn_v2_forward(**operands, **attrs)
        loss = tf.reduce_sum(output * grad_output)
    gradients = tape.gradient(loss, present)
    return output, gradients


def jit(fn, device):
    """fn XLA-compiled and placed on device."""

    @tf.function(jit_compile=True)
    def compiled(*args):
        return fn(*args)

    def run(*args):
        with tf.device(util.device_name(device)):
            return compiled(*args)

    run.compiled = compiled
    return run


def optimized_hlo(compiled, *args):
    return compiled.experimental_get_compiler_ir(*args)(stage="optimized_hlo")


class XlaValuesTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        util.with_devices(
            [
                (f"{name}_{dtype.name}", dict(config=config, dtype=dtype))
                for name, config in XLA_CONFIGS
                for dtype in ALL_DTYPES
            ]
        )
    )
    def test_forward_and_every_gradient_match_the_oracle(self, config, dtype, device):
        operands = util.as_dtype(util.make_problem(config), dtype)
        grad_output = util.gradient_probe(config, dtype)
        step = jit(lambda ops_, g: forward_and_gradients(ops_, g, config.attrs), device)
        output, gradients = step(operands, grad_output)
        util.assert_on_device(self, output, device)
        self.assertEqual(output.dtype, dtype)
        util.assert_near(self, output, oracle.deform_conv2d(**operands, **config.attrs), dtype)
        expected = oracle.gradients(grad_output, **operands, **config.attrs)
        self.assertCountEqual(gradients.keys(), expected.keys())
        for name, value in gradients.items():
            self.assertEqual(value.dtype, dtype, name)
            util.assert_near(self, value, expected[name], dtype, msg=f"gradient of {name}")

    @parameterized.named_parameters(util.with_devices([("", {})]))
    def test_hlo_holds_our_custom_calls(self, device):
        config = XLA_CONFIGS[0][1]
        operands = util.as_dtype(util.make_problem(config), tf.float32)
        grad_output = util.gradient_probe(config, tf.float32)
        step = jit(lambda ops_, g: forward_and_gradients(ops_, g, config.attrs), device)
        with tf.device(util.device_name(device)):
            hlo = optimized_hlo(step.compiled, operands, grad_output)
        calls = re.findall(r'custom_call_target="([^"]+)"', hlo)
        for target in TARGETS:
            self.assertIn(target, calls)
        self.assertIn("API_VERSION_TYPED_FFI", hlo)
        # Nothing but our calls leaves XLA: no host callback, no TensorFlow fallback.
        self.assertEqual(set(calls) - set(TARGETS), set(), calls)

    @parameterized.named_parameters(util.with_devices([("", {})]))
    def test_runs_are_counted_per_implementation(self, device):
        config = XLA_CONFIGS[0][1]
        operands = util.as_dtype(util.make_problem(config), tf.float32)
        grad_output = util.gradient_probe(config, tf.float32)
        step = jit(lambda ops_, g: forward_and_gradients(ops_, g, config.attrs), device)
        step(operands, grad_output)
        tfdcn.implementations_run(reset=True)
        for _ in range(3):
            step(operands, grad_output)
        ran = tfdcn.implementations_run()
        prefix = "cpu_" if device == "cpu" else "cuda_"
        for op in ("DCNv2Forward", "DCNv2BackwardInput", "DCNv2BackwardWeight"):
            counts = {k: v for k, v in ran.items() if k.startswith(op + "/")}
            self.assertEqual(sum(counts.values()), 3, (op, ran))
            self.assertTrue(all(k.split("/")[1].startswith(prefix) for k in counts), ran)

    @parameterized.named_parameters(util.with_devices([("", {})]))
    def test_empty_batch(self, device):
        config = util.Config(batch=0, height=7, width=5, out_channels=6, pad=(1, 1))
        operands = util.as_dtype(util.make_problem(config), tf.float32)
        grad_output = tf.zeros([0, 7, 5, 6])
        output, gradients = jit(lambda o, g: forward_and_gradients(o, g, config.attrs), device)(
            operands, grad_output
        )
        self.assertEqual(output.shape, [0, 7, 5, 6])
        self.assertAllEqual(gradients["weight"], tf.zeros([3, 3, 4, 6]))
        self.assertAllEqual(gradients["bias"], tf.zeros([6]))

    @parameterized.named_parameters(util.with_devices([("", {})]))
    def test_inside_a_plain_function_called_from_a_compiled_one(self, device):
        config = XLA_CONFIGS[0][1]
        operands = util.as_dtype(util.make_problem(config), tf.float32)
        inner = tf.function(lambda o: ops.dcn_v2_forward(**o, **config.attrs))
        output = jit(inner, device)(operands)
        util.assert_near(self, output, oracle.deform_conv2d(**operands, **config.attrs), tf.float32)


class XlaBadInputTest(tf.test.TestCase, parameterized.TestCase):
    """Bad operands fail when the function is traced (the shape functions) or compiled (the
    lowering's check, e.g. the 32-bit limits), with the message the kernels give; never a
    crash."""

    @parameterized.named_parameters(
        util.with_devices(
            [
                (f"{name}_{op}", dict(case=case, op=op))
                for name, case in util.BAD_INPUTS
                for op in case.ops
            ]
        )
    )
    def test_names_the_operand(self, case, op, device):
        shapes = case.operand_shapes(op)
        zeros = {name: tf.zeros(shape) for name, shape in shapes.items()}
        run = jit(lambda z: util.run_op_on(op, z, case.full_attrs), device)
        with self.assertRaisesRegex((ValueError, tf.errors.InvalidArgumentError), case.message):
            run(zeros)


class XlaKerasTest(tf.test.TestCase, parameterized.TestCase):
    def _model(self, dtype_policy=None):
        image, source = keras.Input((12, 10, 8)), keras.Input((12, 10, 4))
        features = tfdcn.DCNv2(8, 3, padding="same", use_custom_offset=True, dtype=dtype_policy)(
            [image, source]
        )
        outputs = keras.layers.Conv2D(2, 1, dtype=dtype_policy)(features)
        return keras.Model([image, source], outputs)

    def _data(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(8, 12, 10, 8)).astype("float32")
        source = rng.normal(size=(8, 12, 10, 4)).astype("float32")
        y = rng.normal(size=(8, 12, 10, 2)).astype("float32")
        return [x, source], y

    @parameterized.named_parameters(
        util.with_devices(
            [
                (policy, dict(policy=policy))
                for policy in ("float32", "mixed_float16", "mixed_bfloat16")
            ]
        )
    )
    def test_fit_under_jit_compile(self, policy, device):
        inputs, targets = self._data()
        with tf.device(util.device_name(device)):
            model = self._model(keras.DTypePolicy(policy))
            optimizer = keras.optimizers.Adam(1e-2)
            if policy == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            model.compile(optimizer=optimizer, loss="mse", jit_compile=True)
            self.assertTrue(model.jit_compile)
            tfdcn.implementations_run(reset=True)
            history = model.fit(inputs, targets, batch_size=4, epochs=4, verbose=0)
        losses = history.history["loss"]
        self.assertTrue(np.all(np.isfinite(losses)), losses)
        self.assertLess(losses[-1], losses[0])
        self.assertTrue(
            any(k.startswith("DCNv2BackwardWeight/") for k in tfdcn.implementations_run())
        )

    @parameterized.named_parameters(util.with_devices([("", {})]))
    def test_keras_and_saved_model_round_trips_of_a_jit_compiled_model(self, device):
        inputs, targets = self._data()
        with tf.device(util.device_name(device)):
            model = self._model()
            model.compile(optimizer="adam", loss="mse", jit_compile=True)
            model.fit(inputs, targets, batch_size=4, epochs=1, verbose=0)
            expected = model.predict(inputs, verbose=0)
            keras_path = os.path.join(self.get_temp_dir(), "model.keras")
            model.save(keras_path)
            restored = keras.models.load_model(keras_path)
            self.assertTrue(restored.jit_compile)
            self.assertAllClose(restored.predict(inputs, verbose=0), expected, rtol=1e-5, atol=1e-5)
            # Training resumes under XLA after the round trip.
            restored.fit(inputs, targets, batch_size=4, epochs=1, verbose=0)

            saved_path = os.path.join(self.get_temp_dir(), "saved_model")
            model.export(saved_path, verbose=False)
            loaded = tf.saved_model.load(saved_path)
            serve = tf.function(lambda x, s: loaded.serve([x, s]), jit_compile=True)
            self.assertAllClose(
                serve(tf.constant(inputs[0]), tf.constant(inputs[1])),
                expected,
                rtol=1e-5,
                atol=1e-5,
            )


if __name__ == "__main__":
    tf.test.main()
