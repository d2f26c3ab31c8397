"""Tests of the Keras 3 layer `tfdcn.DCNv2`: arguments, modes, training, saving, mixed precision
and loading checkpoints of the pure-TF DCNv2 layers users have today."""

import os
import warnings
from unittest import mock

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import tensorflow_dcn as tfdcn
from tensorflow_dcn import _library
from tensorflow_dcn.layer_base import predict_offset_and_mask

import layer_test_util

HEIGHT, WIDTH, CHANNELS, FILTERS = 6, 7, 4, 3
TAPS = 9  # 3x3 kernels throughout


def random_inputs(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32")


def randomize_weights(model, scale=0.2, seed=1):
    """Non-zero weights everywhere, so that the offset weights matter in comparisons."""
    rng = np.random.default_rng(seed)
    model.set_weights(
        [rng.uniform(-scale, scale, w.shape).astype("float32") for w in model.get_weights()]
    )


def offset_and_mask(shifts, mask_value, batch=2):
    """Offset and mask tensors that shift every tap of deformable group g by shifts[g] = (dy, dx).
    The layout: offset channel (g * taps + t) * 2 + {0: dy, 1: dx}, mask channel g * taps + t."""
    offset = np.tile(
        np.repeat(np.asarray(shifts, "float32"), TAPS, axis=0).reshape(-1),
        (batch, HEIGHT, WIDTH, 1),
    )
    mask = np.full((batch, HEIGHT, WIDTH, len(shifts) * TAPS), mask_value, "float32")
    return offset, mask


def shift_channel_groups(x, shifts):
    """x with channel group g read at (row + dy, col + dx), zeros where that leaves the image:
    what an integer offset (dy, dx) makes every tap sample."""
    height, width = x.shape[1:3]
    shifted = []
    for group, (dy, dx) in zip(np.split(x, len(shifts), axis=-1), shifts):
        padded = np.pad(group, [(0, 0), (abs(dy),) * 2, (abs(dx),) * 2, (0, 0)])
        shifted.append(
            padded[:, abs(dy) + dy : abs(dy) + dy + height, abs(dx) + dx : abs(dx) + dx + width]
        )
    return np.concatenate(shifted, axis=-1)


def reference_conv(x, kernel, bias, groups=1, **conv_args):
    """keras.layers.Conv2D with the given weights: the independent reference for DCNv2 with
    integer offsets."""
    conv = keras.layers.Conv2D(kernel.shape[-1], kernel.shape[:2], groups=groups, **conv_args)
    conv.build(x.shape)
    conv.set_weights([kernel, bias])
    return conv(x).numpy()


class ArgumentsTest(tf.test.TestCase, parameterized.TestCase):
    def test_bad_arguments_raise_clear_errors(self):
        with self.assertRaisesRegex(ValueError, "divisible by groups"):
            tfdcn.DCNv2(5, 3, groups=2)
        with self.assertRaisesRegex(ValueError, "channels_last"):
            tfdcn.DCNv2(4, 3, data_format="channels_first")
        with self.assertRaisesRegex(ValueError, "padding"):
            tfdcn.DCNv2(4, 3, padding="causal")
        self.addCleanup(keras.config.set_image_data_format, keras.config.image_data_format())
        keras.config.set_image_data_format("channels_first")
        with self.assertRaisesRegex(ValueError, "image_data_format"):
            tfdcn.DCNv2(4, 3)
        explicit = tfdcn.DCNv2(4, 3, data_format="channels_last")
        self.assertEqual(explicit.data_format, "channels_last")
        keras.config.set_image_data_format("channels_last")
        with self.assertRaisesRegex(ValueError, "kernel_size"):
            tfdcn.DCNv2(4, 0)
        with self.assertRaisesRegex(ValueError, "deformable_groups"):
            tfdcn.DCNv2(4, 3, deformable_groups=0)
        x = random_inputs(1, HEIGHT, WIDTH, CHANNELS)
        with self.assertRaisesRegex(ValueError, r"channels \(4\) must be divisible by groups"):
            tfdcn.DCNv2(3, 3, groups=3)(x)
        with self.assertRaisesRegex(ValueError, "divisible by deformable_groups"):
            tfdcn.DCNv2(3, 3, deformable_groups=3)(x)
        with self.assertRaisesRegex(ValueError, "takes a single input"):
            tfdcn.DCNv2(3, 3)([x, x])
        with self.assertRaisesRegex(ValueError, r"\[x, offset, mask\], got 1 input"):
            tfdcn.DCNv2(3, 3, use_custom_offset=True)(x)
        with self.assertRaisesRegex(ValueError, "got 4 input"):
            tfdcn.DCNv2(3, 3, use_custom_offset=True)([x, x, x, x])
        with self.assertRaisesRegex(ValueError, "offset needs 18 channels and mask 9"):
            tfdcn.DCNv2(3, 3, use_custom_offset=True)([x, x, x])
        with self.assertRaisesRegex(ValueError, "height and width of x"):
            tfdcn.DCNv2(3, 3, use_custom_offset=True)([x, x[:, :-2]])
        with self.assertRaisesRegex(ValueError, "too small"):
            tfdcn.DCNv2(3, 7)(x)

    def test_custom_mode_keeps_the_number_of_inputs_it_was_built_with(self):
        x = random_inputs(1, HEIGHT, WIDTH, CHANNELS)
        layer = tfdcn.DCNv2(FILTERS, 3, padding="same", use_custom_offset=True)
        layer([x, *offset_and_mask([(0, 0)], 1.0, batch=1)])
        with self.assertRaisesRegex(ValueError, "expects 3 input"):
            layer([x, x])

    @parameterized.named_parameters(
        ("automatic", False, None, ["kernel", "bias", "offset_kernel", "offset_bias"]),
        ("offset_source", True, 5, ["kernel", "bias", "offset_kernel", "offset_bias"]),
        ("given_offset_and_mask", True, None, ["kernel", "bias"]),
    )
    def test_weights_names_shapes_and_order(self, use_custom_offset, source_channels, names):
        groups, deformable_groups = 2, 2
        layer = tfdcn.DCNv2(
            6,
            3,
            groups=groups,
            deformable_groups=deformable_groups,
            use_custom_offset=use_custom_offset,
        )
        x_shape = (None, HEIGHT, WIDTH, CHANNELS)
        if not use_custom_offset:
            layer.build(x_shape)
        elif source_channels:
            layer.build([x_shape, (None, HEIGHT, WIDTH, source_channels)])
        else:
            layer.build(
                [
                    x_shape,
                    (None, 4, 5, 2 * deformable_groups * TAPS),
                    (None, 4, 5, deformable_groups * TAPS),
                ]
            )
        predicted = 3 * deformable_groups * TAPS
        expected_shapes = {
            "kernel": (3, 3, CHANNELS // groups, 6),
            "bias": (6,),
            "offset_kernel": (3, 3, source_channels or CHANNELS, predicted),
            "offset_bias": (predicted,),
        }
        self.assertEqual([w.name for w in layer.weights], names)
        for weight in layer.weights:
            self.assertEqual(weight.shape, expected_shapes[weight.name])
            if weight.name.startswith("offset"):
                self.assertAllEqual(weight.numpy(), np.zeros(weight.shape))

    def test_get_config_round_trip(self):
        layer = tfdcn.DCNv2(
            6,
            (3, 5),
            strides=(2, 1),
            padding=(1, 2),
            dilation_rate=(1, 2),
            groups=2,
            activation="relu",
            use_bias=False,
            kernel_initializer="he_normal",
            kernel_regularizer=keras.regularizers.L2(1e-3),
            activity_regularizer="l1",
            kernel_constraint=keras.constraints.MaxNorm(2.0),
            deformable_groups=2,
            use_custom_offset=True,
            name="deformable",
        )
        config = layer.get_config()
        restored = tfdcn.DCNv2.from_config(config)
        self.assertEqual(restored.get_config(), config)
        self.assertEqual(restored.padding, (1, 2))
        self.assertIsInstance(restored.kernel_regularizer, keras.regularizers.L2)
        # Through Keras' serialization, as in a .keras file: JSON lists instead of tuples.
        serialized = keras.saving.serialize_keras_object(layer)
        self.assertEqual(serialized["registered_name"], "tensorflow_dcn>DCNv2")
        restored = keras.saving.deserialize_keras_object(serialized)
        self.assertIs(type(restored), tfdcn.DCNv2)
        self.assertEqual(restored.get_config(), config)

    def test_dcnv2_optimized_is_the_same_layer_under_both_names(self):
        self.assertIs(tfdcn.DCNv2Optimized, tfdcn.DCNv2)
        # A config written under the other name, as another DCNv2Optimized would write it.
        serialized = keras.saving.serialize_keras_object(tfdcn.DCNv2Optimized(4, 3))
        serialized["class_name"] = "DCNv2Optimized"
        serialized["registered_name"] = "tensorflow_dcn>DCNv2Optimized"
        self.assertIsInstance(keras.saving.deserialize_keras_object(serialized), tfdcn.DCNv2)

    @parameterized.named_parameters(
        ("valid", dict(padding="valid")),
        ("same", dict(padding="same")),
        ("same_strided_odd", dict(padding="same", strides=2)),
        ("same_strided_dilated", dict(padding="same", strides=(2, 3), dilation_rate=2)),
        ("valid_strided", dict(padding="valid", strides=(3, 2))),
        ("valid_dilated", dict(padding="valid", dilation_rate=(2, 1))),
        ("explicit", dict(padding=(2, 0), strides=2)),
    )
    def test_compute_output_shape_matches_the_output(self, args):
        x = random_inputs(2, 9, 8, CHANNELS)
        layer = tfdcn.DCNv2(FILTERS, 3, **args)
        self.assertEqual(layer.compute_output_shape(x.shape), layer(x).shape)
        symbolic = layer(keras.Input((9, 8, CHANNELS)))
        self.assertEqual(symbolic.shape, (None, *layer(x).shape[1:]))
        # keras.layers.Conv2D is the reference for its own padding modes.
        strided_and_dilated = max(layer.strides) > 1 and max(layer.dilation_rate) > 1
        if isinstance(layer.padding, str) and not strided_and_dilated:
            conv = keras.layers.Conv2D(FILTERS, 3, **args)
            self.assertEqual(
                layer.compute_output_shape(x.shape), conv.compute_output_shape(x.shape)
            )

    def test_compute_output_shape_in_custom_mode_and_with_unknown_sizes(self):
        layer = tfdcn.DCNv2(FILTERS, 3, padding="same", strides=2, use_custom_offset=True)
        self.assertEqual(
            layer.compute_output_shape([(None, 9, None, CHANNELS), (None, 9, None, 2)]),
            (None, 5, None, FILTERS),
        )


class ModesTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("same", dict(padding="same")),
        ("strided_dilated_grouped", dict(padding="valid", strides=2, dilation_rate=1, groups=2)),
        ("dilated", dict(padding="same", dilation_rate=2)),
    )
    def test_automatic_mode_starts_as_half_a_conv2d(self, args):
        """Zero-initialised offset weights: zero offsets and mask sigmoid(0) = 1/2."""
        x = random_inputs(2, HEIGHT, WIDTH, CHANNELS)
        layer = tfdcn.DCNv2(FILTERS * 2, 3, bias_initializer="glorot_uniform", **args)
        output = layer(x).numpy()
        kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
        expected = reference_conv(x, 0.5 * kernel, bias, **args)
        self.assertAllClose(output, expected, atol=1e-5)

    @parameterized.named_parameters(("automatic", False), ("given_offset_and_mask", True))
    def test_offset_and_mask_layout(self, use_custom_offset):
        """Integer offsets per deformable group equal a conv of the shifted input, scaled by the
        mask: this pins the (dy, dx) order, the group/tap order and the sigmoid on the mask."""
        shifts = [(1, 0), (0, -2)]
        x = random_inputs(2, HEIGHT, WIDTH, CHANNELS)
        layer = tfdcn.DCNv2(
            FILTERS, 3, padding="same", deformable_groups=2, use_custom_offset=use_custom_offset
        )
        offset, mask = offset_and_mask(shifts, 0.75)
        if use_custom_offset:
            output = layer([x, offset, mask])
        else:
            layer.build(x.shape)
            # The internal conv's bias alone sets the prediction; logit(0.75) = log(3).
            mask_logits = np.full(len(shifts) * TAPS, np.log(3))
            layer.offset_bias.assign(np.concatenate([offset[0, 0, 0], mask_logits]))
            output = layer(x)
        # Shift after the 'same' zero padding: a deformed tap may reach into the image from a
        # position in the padding.
        padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
        expected = reference_conv(
            shift_channel_groups(padded, shifts), 0.75 * layer.kernel.numpy(), layer.bias.numpy()
        )
        self.assertAllClose(output, expected, atol=1e-5)

    @parameterized.named_parameters(
        ("same", dict(padding="same")),
        ("same_dilated", dict(padding="same", dilation_rate=2)),
        ("explicit_strided", dict(padding=(2, 1), strides=2)),
        ("explicit_strided_dilated", dict(padding=(2, 1), strides=(2, 3), dilation_rate=2)),
    )
    def test_offset_and_mask_prediction_and_its_gradients(self, args):
        """The internal conv against tf.nn.convolution at stride 1 (space-to-batch for dilations,
        differentiable on every CPU) with the strided outputs taken after, float64; as DCNv2
        runs it on a GPU (zero filters up to 32 channels) and on the CPU."""
        source = tf.constant(random_inputs(2, HEIGHT, WIDTH, CHANNELS).astype("float64"))
        layer = tfdcn.DCNv2(FILTERS, 3, dtype="float64", **args)
        layer.build(source.shape)
        self.assertEqual(
            layer.offset_channel_multiple(), 8 if tf.config.list_logical_devices("GPU") else 1
        )
        rng = np.random.default_rng(3)
        for weight in (layer.offset_kernel, layer.offset_bias):
            weight.assign(rng.uniform(-0.5, 0.5, weight.shape))

        def reference(source):
            if isinstance(layer.padding, str):
                padded, conv_padding = source, layer.padding.upper()
            else:
                (pad_h, pad_w), conv_padding = layer.padding, "VALID"
                padded = tf.pad(source, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
            predicted = (
                tf.nn.convolution(
                    padded, layer.offset_kernel, padding=conv_padding, dilations=layer.dilation_rate
                )[:, :: layer.strides[0], :: layer.strides[1]]
                + layer.offset_bias
            )
            return predicted[..., : 2 * TAPS], tf.sigmoid(predicted[..., 2 * TAPS :])

        predictions = [reference] + [
            lambda source, m=m: predict_offset_and_mask(layer, source, m) for m in (1, 8)
        ]
        upstream = None
        results = []
        for predict in predictions:
            with tf.GradientTape() as tape:
                tape.watch(source)
                offset, mask = predict(source)
                if upstream is None:
                    upstream = [rng.uniform(-1, 1, t.shape) for t in (offset, mask)]
                loss = tf.reduce_sum(offset * upstream[0]) + tf.reduce_sum(mask * upstream[1])
            grads = tape.gradient(loss, [source, layer.offset_kernel, layer.offset_bias])
            results.append([offset, mask, *grads])
        self.assertEqual(results[0][0].shape[1:3], layer(source).shape[1:3])
        for got in results[1:]:
            for expected, value in zip(results[0], got):
                self.assertAllClose(value, expected, rtol=1e-12, atol=1e-12)

    def test_activation_is_applied(self):
        x = random_inputs(2, HEIGHT, WIDTH, CHANNELS)
        linear = tfdcn.DCNv2(FILTERS, 3)
        relu = tfdcn.DCNv2(FILTERS, 3, activation="relu")
        linear.build(x.shape)
        relu.build(x.shape)
        relu.set_weights(linear.get_weights())
        self.assertAllClose(relu(x), np.maximum(linear(x), 0))


class CheckpointCompatibilityTest(tf.test.TestCase, parameterized.TestCase):
    """Weights of the pure-TF DCNv2 layers users have (layer_test_util.DCNv2) load into ours."""

    @parameterized.named_parameters(
        ("automatic", False, tfdcn.DCNv2),
        ("offset_source_as_dcnv2_optimized", True, tfdcn.DCNv2Optimized),
    )
    def test_weights_file_loads_and_outputs_agree(self, use_custom_offset, layer_class):
        x = random_inputs(2, HEIGHT, WIDTH, CHANNELS)
        source = np.random.default_rng(2).uniform(0, 1, (2, HEIGHT, WIDTH, 2)).astype("float32")
        inputs = keras.Input(x.shape[1:])
        if use_custom_offset:
            inputs = [inputs, keras.Input(source.shape[1:])]
        legacy = keras.Model(
            inputs,
            layer_test_util.DCNv2(FILTERS, (3, 3), use_custom_offset=use_custom_offset)(inputs),
        )
        ours = keras.Model(
            inputs,
            layer_class(FILTERS, 3, padding="same", use_custom_offset=use_custom_offset)(inputs),
        )
        # Fractional offsets, mostly under a pixel, so samples stay near the image (both layers
        # read zeros outside it), and a mask away from 1/2.
        rng = np.random.default_rng(1)
        legacy.set_weights(
            [
                rng.uniform(-scale, scale, w.shape).astype("float32")
                for scale, w in zip([0.3, 0.3, 0.05, 0.5], legacy.get_weights())
            ]
        )
        path = os.path.join(self.get_temp_dir(), "legacy.weights.h5")
        legacy.save_weights(path)
        ours.load_weights(path)
        model_inputs = [x, source] if use_custom_offset else x
        self.assertAllClose(ours(model_inputs), legacy(model_inputs), atol=2e-5)
        # get_weights/set_weights keep the same order.
        ours.set_weights([np.zeros_like(w) for w in ours.get_weights()])
        ours.set_weights(legacy.get_weights())
        self.assertAllClose(ours(model_inputs), legacy(model_inputs), atol=2e-5)


class TrainingTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        keras.utils.set_random_seed(0)

    @parameterized.named_parameters(("automatic", False), ("offset_source", True))
    def test_gradients_reach_all_four_weights(self, use_custom_offset):
        x = tf.constant(random_inputs(2, HEIGHT, WIDTH, CHANNELS))
        layer = tfdcn.DCNv2(FILTERS, 3, padding="same", use_custom_offset=use_custom_offset)
        inputs = [x, tf.square(x)] if use_custom_offset else x
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(inputs)))
        gradients = tape.gradient(loss, [x] + layer.trainable_weights)
        self.assertEqual(
            [w.name for w in layer.trainable_weights],
            ["kernel", "bias", "offset_kernel", "offset_bias"],
        )
        for gradient in gradients:
            self.assertGreater(tf.reduce_max(tf.abs(gradient)), 1e-4)

    def _assert_fit_reduces_loss(self, model, inputs, targets, factor=0.5):
        model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
        initial_loss = model.evaluate(inputs, targets, verbose=0)
        model.fit(inputs, targets, batch_size=8, epochs=6, verbose=0)
        self.assertLess(model.evaluate(inputs, targets, verbose=0), factor * initial_loss)

    def test_sequential_fit_reduces_loss(self):
        """Learning to read a neighbouring pixel: the deformation has to move."""
        x = random_inputs(32, HEIGHT, WIDTH, 2)
        targets = shift_channel_groups(x, [(1, 1)])[..., :1]
        model = keras.Sequential(
            [
                keras.Input(x.shape[1:]),
                tfdcn.DCNv2(4, 3, padding="same", activation="tanh"),
                keras.layers.Conv2D(1, 1),
            ]
        )
        self._assert_fit_reduces_loss(model, x, targets)
        self.assertGreater(np.abs(model.layers[0].offset_kernel.numpy()).max(), 0)

    @parameterized.named_parameters(("float32", "float32"), ("mixed_bfloat16", "mixed_bfloat16"))
    def test_dilated_fit_reduces_loss(self, policy):
        """As above with a dilated layer, in graph mode: on a CPU whose convolutions TensorFlow
        runs without oneDNN (no AVX-512) a dilated conv has no gradient kernel there."""
        self.addCleanup(keras.mixed_precision.set_global_policy, "float32")
        keras.mixed_precision.set_global_policy(policy)
        x = random_inputs(32, HEIGHT, WIDTH, 2)
        targets = shift_channel_groups(x, [(1, 1)])[..., :1]
        model = keras.Sequential(
            [
                keras.Input(x.shape[1:]),
                tfdcn.DCNv2(4, 3, padding="same", dilation_rate=2, activation="tanh"),
                keras.layers.Conv2D(1, 1),
            ]
        )
        # The taps are 2 pixels apart: a 1-pixel shift is further from a tap than above.
        self._assert_fit_reduces_loss(model, x, targets, factor=0.7)
        self.assertGreater(np.abs(model.layers[0].offset_kernel.numpy()).max(), 0)

    def test_functional_fit_with_offset_source_reduces_loss(self):
        x = random_inputs(32, HEIGHT, WIDTH, 2)
        source = random_inputs(32, HEIGHT, WIDTH, 3, seed=3)
        targets = shift_channel_groups(x, [(0, -1)])[..., 1:]
        image, offset_source = keras.Input(x.shape[1:]), keras.Input(source.shape[1:])
        features = tfdcn.DCNv2(4, 3, padding="same", activation="tanh", use_custom_offset=True)(
            [image, offset_source]
        )
        model = keras.Model([image, offset_source], keras.layers.Conv2D(1, 1)(features))
        self._assert_fit_reduces_loss(model, [x, source], targets)

    def test_default_compile_resolves_to_xla_and_trains(self):
        """On a GPU machine Keras resolves jit_compile='auto' to XLA when every layer supports it;
        DCNv2 does (its ops have XLA lowerings) when the library has the CUDA kernels, whose XLA
        GPU lowering comes with them. A visible GPU is faked: Keras only counts the devices. The
        compiled model then trains under XLA on this machine's CPU."""

        def model_with(layer):
            return keras.Sequential([keras.Input((HEIGHT, WIDTH, 2)), layer])

        gpu = tf.config.PhysicalDevice(name="/physical_device:GPU:0", device_type="GPU")
        with mock.patch.object(
            tf.config,
            "list_physical_devices",
            return_value=tf.config.list_physical_devices("CPU") + [gpu],
        ):
            conv_model = model_with(keras.layers.Conv2D(2, 3))
            dcn_model = model_with(tfdcn.DCNv2(2, 3))
            conv_model.compile(loss="mse")
            dcn_model.compile(loss="mse")
        self.assertTrue(conv_model.jit_compile)
        self.assertEqual(dcn_model.jit_compile, _library.has_cuda_kernels())
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "doesn't support jit_compile" fallback
            dcn_model.compile(loss="mse", jit_compile=True)
        self.assertTrue(dcn_model.jit_compile)
        tfdcn.implementations_run(reset=True)
        history = dcn_model.fit(
            random_inputs(4, HEIGHT, WIDTH, 2), random_inputs(4, 4, 5, 2), epochs=2, verbose=0
        )
        self.assertTrue(np.all(np.isfinite(history.history["loss"])))
        ran = tfdcn.implementations_run()
        for op in ("DCNv2Forward", "DCNv2BackwardInput", "DCNv2BackwardWeight"):
            self.assertTrue(any(name.startswith(op + "/") for name in ran), (op, ran))


def build_model(mode, layer_class=tfdcn.DCNv2):
    """A small model around DCNv2 in each mode, with random non-zero weights, and its inputs."""
    x = random_inputs(2, HEIGHT, WIDTH, CHANNELS)
    if mode == "sequential":
        model = keras.Sequential(
            [keras.Input(x.shape[1:]), layer_class(FILTERS, 3, strides=2, padding="same")]
        )
        inputs = x
    elif mode == "offset_source":
        image, source = keras.Input(x.shape[1:]), keras.Input((HEIGHT, WIDTH, 2))
        output = layer_class(FILTERS, 3, padding="same", use_custom_offset=True)([image, source])
        model = keras.Model([image, source], output)
        inputs = [x, random_inputs(2, HEIGHT, WIDTH, 2, seed=4)]
    else:
        image = keras.Input(x.shape[1:])
        predicted = keras.layers.Conv2D(3 * TAPS, 3, padding="same")(image)
        offset = predicted[..., : 2 * TAPS]
        mask = keras.layers.Activation("sigmoid")(predicted[..., 2 * TAPS :])
        output = layer_class(FILTERS, 3, padding="same", use_custom_offset=True)(
            [image, offset, mask]
        )
        model = keras.Model(image, output)
        inputs = x
    randomize_weights(model)
    return model, inputs


class SavingTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.named_parameters(
        ("sequential", "sequential", tfdcn.DCNv2),
        ("offset_source", "offset_source", tfdcn.DCNv2),
        ("given_offset_and_mask", "given", tfdcn.DCNv2Optimized),
    )
    def test_keras_file_round_trip(self, mode, layer_class):
        model, inputs = build_model(mode, layer_class)
        path = os.path.join(self.get_temp_dir(), "m.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertIsInstance(loaded.layers[-1], tfdcn.DCNv2)
        self.assertAllEqual(loaded(inputs), model(inputs))

    def test_saved_model_of_a_module_round_trip_with_gradients(self):
        model, x = build_model("sequential")

        class Serving(tf.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model
                # Saved explicitly so the reloaded object exposes them in this order.
                self.model_weights = list(model.trainable_weights)

            @tf.function(input_signature=[tf.TensorSpec((None, HEIGHT, WIDTH, CHANNELS))])
            def __call__(self, x):
                return self.model(x)

        path = os.path.join(self.get_temp_dir(), "module")
        tf.saved_model.save(Serving(model), path)
        loaded = tf.saved_model.load(path)
        self.assertAllEqual(loaded(x), model(x))

        def gradients(function, weights):
            inputs = tf.constant(x)
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                loss = tf.reduce_sum(tf.square(function(inputs)))
            return tape.gradient(loss, [inputs] + list(weights))

        reloaded_gradients = gradients(loaded, loaded.model_weights)
        self.assertLen(reloaded_gradients, 5)
        self.assertAllClose(reloaded_gradients, gradients(model, model.trainable_weights))

    def test_saved_model_of_the_model_serving_signature(self):
        model, x = build_model("sequential")
        path = os.path.join(self.get_temp_dir(), "model")
        tf.saved_model.save(model, path)
        loaded = tf.saved_model.load(path)
        serving = loaded.signatures["serving_default"]
        (input_name,) = serving.structured_input_signature[1]
        (output,) = serving(**{input_name: tf.constant(x)}).values()
        self.assertAllEqual(output, model(x))

    def test_export_round_trip(self):
        model, inputs = build_model("offset_source")
        path = os.path.join(self.get_temp_dir(), "export")
        model.export(path, verbose=False)
        loaded = tf.saved_model.load(path)
        self.assertAllEqual(loaded.serve(inputs), model(inputs))


class MixedPrecisionTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.addCleanup(keras.mixed_precision.set_global_policy, "float32")

    @parameterized.product(
        policy=[("mixed_float16", "float16", 2e-2), ("mixed_bfloat16", "bfloat16", 6e-2)],
        mode=["sequential", "offset_source", "given"],
        offset_channel_multiple=[1, 8],  # the CPU's, the GPU's (zero filters added)
    )
    def test_computes_in_policy_dtype_with_float32_weights(
        self, policy, mode, offset_channel_multiple
    ):
        policy_name, compute_dtype, tolerance = policy
        self.enter_context(
            mock.patch.object(
                tfdcn.DCNv2, "offset_channel_multiple", lambda _: offset_channel_multiple
            )
        )
        reference, inputs = build_model(mode)
        keras.mixed_precision.set_global_policy(policy_name)
        model, _ = build_model(mode)
        model.set_weights(reference.get_weights())
        dcn = model.layers[-1]
        self.assertEqual([w.dtype for w in dcn.weights], ["float32"] * len(dcn.weights))
        with tf.GradientTape() as tape:
            output = model(inputs)
            loss = tf.reduce_sum(tf.square(tf.cast(output, tf.float32)))
        self.assertEqual(output.dtype, compute_dtype)
        self.assertAllClose(
            tf.cast(output, tf.float32), reference(inputs), atol=tolerance, rtol=tolerance
        )
        for gradient in tape.gradient(loss, dcn.trainable_weights):
            self.assertEqual(gradient.dtype, tf.float32)
            self.assertTrue(np.isfinite(gradient.numpy()).all())


if __name__ == "__main__":
    tf.test.main()
