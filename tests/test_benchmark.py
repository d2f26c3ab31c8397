"""Tests of the benchmark's pure-TF baseline (tensorflow_dcn.reference) against our op, and CPU
smoke runs of `python -m tensorflow_dcn.benchmark` (op/layer level, tiny configs) and
`python -m tensorflow_dcn.benchmark model` (a tiny segmentation model)."""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

import tensorflow_dcn as tfdcn
from tensorflow_dcn.benchmark import cli, configs, data
from tensorflow_dcn.reference import PureTFDCNv2, deform_conv2d_reference

OPERANDS = ("inputs", "offset", "mask", "kernel", "bias")


def random_problem(
    batch,
    height,
    width,
    channels,
    filters,
    kernel_hw,
    out_hw,
    groups=1,
    deformable_groups=1,
    dtype=np.float64,
    seed=0,
):
    rng = np.random.default_rng(seed)
    taps = kernel_hw[0] * kernel_hw[1] * deformable_groups
    return {
        "inputs": rng.uniform(-1, 1, (batch, height, width, channels)).astype(dtype),
        # Offsets of a few pixels: many samples leave the image or straddle its border.
        "offset": rng.uniform(-3, 3, (batch, *out_hw, 2 * taps)).astype(dtype),
        "mask": rng.uniform(0, 1, (batch, *out_hw, taps)).astype(dtype),
        "kernel": rng.uniform(-1, 1, (*kernel_hw, channels // groups, filters)).astype(dtype),
        "bias": rng.uniform(-1, 1, (filters,)).astype(dtype),
    }


def value_and_gradients(function, operands, **attrs):
    """function(**operands, **attrs) and its gradients for a random upstream gradient."""
    tensors = {name: tf.constant(value) for name, value in operands.items() if value is not None}
    with tf.GradientTape() as tape:
        tape.watch(list(tensors.values()))
        output = function(**tensors, **attrs)
    upstream = tf.constant(np.random.default_rng(7).uniform(-1, 1, output.shape), output.dtype)
    gradients = tape.gradient(output, list(tensors.values()), output_gradients=upstream)
    return output.numpy(), dict(zip(tensors, (g.numpy() for g in gradients)))


class ReferenceMatchesOpTest(tf.test.TestCase, parameterized.TestCase):
    """deform_conv2d_reference has tfdcn.deform_conv2d's semantics (values and all gradients)."""

    @parameterized.named_parameters(
        ("pad1", dict(padding=1), (3, 3), (7, 9)),
        ("valid", dict(padding="valid"), (3, 3), (5, 7)),
        ("same_stride2_odd", dict(padding="same", strides=2), (3, 3), (4, 5)),
        (
            "stride2_dg2_groups2",
            dict(padding=1, strides=2, deformable_groups=2, groups=2),
            (3, 3),
            (4, 5),
        ),
        ("dilation2_asymmetric", dict(padding=(2, 1), dilation_rate=(2, 1)), (3, 2), (7, 10)),
        ("dg4_kernel1", dict(padding=0, deformable_groups=4), (1, 1), (7, 9)),
    )
    def test_values_and_gradients(self, attrs, kernel_hw, out_hw):
        problem = random_problem(
            2,
            7,
            9,
            8,
            6,
            kernel_hw,
            out_hw,
            groups=attrs.get("groups", 1),
            deformable_groups=attrs.get("deformable_groups", 1),
        )
        expected, expected_grads = value_and_gradients(tfdcn.deform_conv2d, problem, **attrs)
        actual, actual_grads = value_and_gradients(deform_conv2d_reference, problem, **attrs)
        self.assertAllClose(actual, expected, rtol=1e-12, atol=1e-12)
        for name in OPERANDS:
            self.assertAllClose(
                actual_grads[name], expected_grads[name], rtol=1e-11, atol=1e-11, msg=name
            )

    def test_without_mask_and_bias(self):
        problem = random_problem(1, 5, 6, 4, 3, (3, 3), (5, 6))
        problem["mask"] = problem["bias"] = None
        expected, expected_grads = value_and_gradients(tfdcn.deform_conv2d, problem, padding=1)
        actual, actual_grads = value_and_gradients(deform_conv2d_reference, problem, padding=1)
        self.assertAllClose(actual, expected, rtol=1e-12, atol=1e-12)
        for name in ("inputs", "offset", "kernel"):
            self.assertAllClose(actual_grads[name], expected_grads[name], rtol=1e-11, atol=1e-11)

    def test_border_integer_and_non_finite_positions(self):
        # A 1x1 kernel over a 4x4 image: each of the 16 output pixels samples one position, on
        # the -1 edge, on integers, just inside or outside the border, far away or non-finite.
        positions = [
            (-1, 0),
            (-1.5, 0.5),
            (0, -1),
            (3, 1),
            (3.999, -0.5),
            (4, 0.25),
            (1e30, 0),
            (np.nan, 0),
            (np.inf, 0),
            (-np.inf, 1),
            (-0.25, 4.5),
            (2.5, -2),
            (1, 1),
            (2.5, 2.5),
            (-1, -1),
            (0.5, 3),
        ]
        problem = random_problem(1, 4, 4, 3, 2, (1, 1), (4, 4))
        pixel_centers = np.stack(np.meshgrid(np.arange(4), np.arange(4), indexing="ij"), -1)
        problem["offset"] = (np.reshape(positions, (1, 4, 4, 2)) - pixel_centers).astype(np.float64)
        expected, expected_grads = value_and_gradients(tfdcn.deform_conv2d, problem)
        actual, actual_grads = value_and_gradients(deform_conv2d_reference, problem)
        self.assertAllClose(actual, expected, rtol=1e-12, atol=1e-12)
        for name in OPERANDS:
            self.assertAllClose(
                actual_grads[name], expected_grads[name], rtol=1e-11, atol=1e-11, msg=name
            )


class PureTFLayerTest(tf.test.TestCase, parameterized.TestCase):
    """PureTFDCNv2 has tfdcn.DCNv2's arguments and weights, computes what it computes, and runs
    under XLA in every dtype the benchmark uses."""

    ARGS = dict(filters=6, kernel_size=3, strides=2, padding=1, deformable_groups=2)

    def _random_weights(self, layer, seed=3):
        rng = np.random.default_rng(seed)
        layer.set_weights(
            [rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in layer.get_weights()]
        )

    @parameterized.named_parameters(
        ("automatic", False, 1), ("offset_source", True, 2), ("offset_and_mask", True, 3)
    )
    def test_same_weights_same_output_as_dcnv2(self, use_custom_offset, num_inputs):
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (2, 9, 8, 4)).astype("float32")
        inputs = {
            1: x,
            2: [x, rng.uniform(-1, 1, (2, 9, 8, 5)).astype("float32")],
            3: [
                x,
                rng.uniform(-2, 2, (2, 5, 4, 36)).astype("float32"),
                rng.uniform(0, 1, (2, 5, 4, 18)).astype("float32"),
            ],
        }[num_inputs]
        ours = tfdcn.DCNv2(**self.ARGS, use_custom_offset=use_custom_offset)
        pure = PureTFDCNv2(**self.ARGS, use_custom_offset=use_custom_offset)
        ours(inputs)
        pure(inputs)
        self.assertEqual(
            [(w.name, w.shape) for w in pure.weights], [(w.name, w.shape) for w in ours.weights]
        )
        self._random_weights(ours)
        pure.set_weights(ours.get_weights())
        self.assertAllClose(pure(inputs), ours(inputs), rtol=1e-5, atol=1e-5)
        self.assertEqual(
            pure.compute_output_shape([i.shape for i in inputs] if num_inputs > 1 else x.shape),
            (2, 5, 4, 6),
        )

    def test_config_round_trip(self):
        layer = PureTFDCNv2(**self.ARGS, activation="relu", use_bias=False)
        clone = PureTFDCNv2.from_config(layer.get_config())
        self.assertEqual(clone.get_config(), layer.get_config())

    @parameterized.parameters("float32", "float16", "bfloat16")
    def test_xla_forward_and_backward_in_dtype(self, dtype):
        x = tf.constant(np.random.default_rng(1).uniform(-1, 1, (2, 8, 8, 8)), dtype)
        policy = dtype if dtype == "float32" else f"mixed_{dtype}"
        layer = PureTFDCNv2(**self.ARGS, dtype=policy)
        layer(x)
        self._random_weights(layer)

        @tf.function(jit_compile=True)
        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
            return y, tape.gradient(y, [x] + layer.trainable_variables)

        y, gradients = step(x)
        self.assertEqual(y.dtype, dtype)
        self.assertEqual(gradients[0].dtype, dtype)
        float_layer = PureTFDCNv2(**self.ARGS)
        float_layer(tf.cast(x, tf.float32))
        float_layer.set_weights(layer.get_weights())
        tolerance = {"float32": 1e-5, "float16": 2e-2, "bfloat16": 1e-1}[dtype]
        self.assertAllClose(
            tf.cast(y, tf.float32),
            float_layer(tf.cast(x, tf.float32)),
            rtol=tolerance,
            atol=tolerance,
        )


class DataTest(tf.test.TestCase):
    def test_offset_spread_follows_offset_std(self):
        config = configs.parse_config("2x32x32x16")
        for std in (0.25, 2.0):
            offsets = data.make_data(config, seed=1, offset_std=std)["offset"]
            self.assertAllClose(np.std(offsets), std, rtol=0.05)
        zero = data.make_data(config, offset_std=0.0)
        self.assertAllEqual(zero["offset"], np.zeros_like(zero["offset"]))
        with self.assertRaises(SystemExit):  # argparse's usage error
            cli._parse_args(["--device", "cpu", "--offset-std=-1"])


class ConfigsTest(tf.test.TestCase):
    def test_specs_round_trip(self):
        for spec in (
            configs.GPU_CONFIGS
            + configs.CPU_CONFIGS
            + configs.QUICK_CONFIGS
            + ("1x5x7x8-k5-p1-dg2",)
        ):
            self.assertEqual(configs.parse_config(spec).name, spec)
        config = configs.parse_config("8x64x64x128-s2")
        self.assertEqual((config.out_height, config.out_width, config.pad), (32, 32, 1))

    def test_selection_by_index_and_errors(self):
        self.assertEqual(
            [c.name for c in configs.select_configs("0,2x8x8x4", ("4x4x4x4",))],
            ["4x4x4x4", "2x8x8x4"],
        )
        with self.assertRaisesRegex(ValueError, "NxHxWxC"):
            configs.parse_config("2x8x8")
        with self.assertRaisesRegex(ValueError, "unknown dtype"):
            configs.select_dtypes("fp8", configs.CPU_DTYPES)
        # float32 with TF32 off runs before any TF32 variant, the others keep their order.
        self.assertEqual(
            [v.key for v in configs.select_dtypes("tf32,bf16,fp32,fp16", ())],
            ["fp32", "tf32", "bf16", "fp16"],
        )
        with self.assertRaisesRegex(ValueError, "unknown impl"):
            configs.select_impls("tfdcn,cudnn", configs.IMPLS)


RECORD_KEYS = {
    "config",
    "dtype",
    "tf32",
    "impl",
    "level",
    "status",
    "error",
    "fwd_ms",
    "fwd_bwd_ms",
    "fwd_peak_extra_mib",
    "peak_extra_mib",
    "max_abs_err",
    "max_rel_err",
}
RETRACING_WARNING = "triggered tf.function retracing"


def our_layer_compiles_with_xla():
    """Whether tfdcn.DCNv2 says it runs under XLA (the XLA lowering of the ops is built in)."""
    return bool(tfdcn.DCNv2(4, 3).supports_jit)


def run_benchmark(out_dir, *args, env=None, level=()):
    """The CLI in a subprocess (as users run it), with this process' import path. `level`:
    () for the op/layer benchmark, ("model",) for the model-level one."""
    environment = dict(
        os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), **(env or {})
    )
    timing = ["--repeats", "1", "--warmup", "1", "--round-ms", "1"] if not level else []
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tensorflow_dcn.benchmark",
            *level,
            "--device",
            "cpu",
            *timing,
            "--out",
            out_dir,
            *args,
        ],
        capture_output=True,
        text=True,
        env=environment,
        timeout=900,
    )
    if result.returncode:
        raise AssertionError(f"benchmark failed ({result.returncode}):\n{result.stderr[-5000:]}")
    with open(os.path.join(out_dir, "benchmark.json")) as f:
        return json.load(f), result


def assert_figure_written(test, out_dir, result):
    if importlib.util.find_spec("matplotlib"):
        test.assertTrue(os.path.getsize(os.path.join(out_dir, "benchmark.png")))
    else:
        test.assertIn("benchmark.png skipped", result.stdout)


class OpWorkspaceTest(tf.test.TestCase):
    """The workspace column: fwd+bwd peak minus what the step returns, counted by hand here."""

    def test_peak_minus_output_and_gradients(self):
        from tensorflow_dcn.benchmark import report

        # 2x16x16x32, 3x3, stride 1: output 2*16*16*32, grad_input the same, offset and mask
        # 3 * 512 pixels * 9 taps, kernel 9*32*32, bias 32.
        returned = 2 * 16384 + 3 * 512 * 9 + 9 * 32 * 32 + 32
        record = dict(config="2x16x16x32", dtype_key="tf32", impl="tfdcn", peak_extra_mib=1.0)
        self.assertAllClose(report.op_workspace_mib(record), 1.0 - returned * 4 / 2**20)
        half = dict(record, dtype_key="bf16", impl="torchvision")
        self.assertAllClose(report.op_workspace_mib(half), 1.0 - returned * 2 / 2**20)
        self.assertIsNone(report.op_workspace_mib(dict(record, impl="tfdcn_layer")))
        self.assertIsNone(report.op_workspace_mib(dict(record, peak_extra_mib=None)))

        path = os.path.join(self.get_temp_dir(), "benchmark.md")
        records = [dict(record, status="ok", level="op"), dict(half, status="ok", level="op")]
        header = dict(
            date="2026-11-30",
            device="gpu",
            device_name="GPU",
            tensorflow="2.21.0",
            tf_cuda="12",
            tf_cudnn="9",
            keras="3",
            tensorflow_dcn="0.1.0",
            python="3",
            timing=dict(warmup=1, repeats=1, target_ms=1, max_calls_per_sync=1),
            command=["benchmark"],
        )
        report.write_markdown(path, header, records, ["tf32", "bf16"], ["2x16x16x32"])
        with open(path) as f:
            text = f.read()
        self.assertIn("## Workspace (op level)", text)
        self.assertIn(
            f"| 2x16x16x32 | float32+TF32 | 0.2 | {1.0 - returned * 4 / 2**20:.1f} | — |", text
        )
        self.assertIn(
            f"| 2x16x16x32 | bfloat16 | 0.1 | — | {1.0 - returned * 2 / 2**20:.1f} |", text
        )


class Tf32ModesTest(tf.test.TestCase):
    """TF32 on and off run in separate processes, their rows in the usual order."""

    def test_groups(self):
        variants = configs.select_dtypes("tf32,bf16,fp32,fp16", ())
        self.assertEqual(
            [[v.key for v in group] for group in cli._tf32_groups(variants)],
            [["fp32"], ["tf32", "bf16", "fp16"]],
        )
        self.assertLen(cli._tf32_groups(configs.select_dtypes("fp32", ())), 1)

    def test_run_with_both_modes(self):
        records, _ = run_benchmark(
            os.path.join(self.get_temp_dir(), "bench"),
            "--configs",
            "1x6x6x4,1x6x6x4-s2",
            "--dtypes",
            "tf32,fp32",
            "--impls",
            "tfdcn,conv2d",
        )
        self.assertEqual(
            [(r["config"], r["dtype_key"], r["impl"], r["status"]) for r in records[1:]],
            [
                (config, dtype, impl, "ok")
                for config in ("1x6x6x4", "1x6x6x4-s2")
                for dtype in ("fp32", "tf32")
                for impl in ("tfdcn", "conv2d")
            ],
        )


class BenchmarkCliTest(tf.test.TestCase):
    """One tiny run through every TensorFlow implementation, a baseline layer and a failure."""

    def test_tiny_run_writes_md_json_png(self):
        out_dir = os.path.join(self.get_temp_dir(), "bench")
        # layer_test_util.DCNv2 is an iSeg-like user layer: stride 1 only, so the -s2 config must
        # be recorded as unsupported for it without stopping the run.
        impls = (
            "tfdcn",
            "tfdcn_xla",
            "conv2d",
            "conv2d_xla",
            "tfdcn_layer",
            "tfdcn_layer_xla",
            "pure_tf",
            "pure_tf_xla",
            "baseline",
            "baseline_xla",
        )
        records, result = run_benchmark(
            out_dir,
            "--configs",
            "1x6x6x4,1x6x6x4-s2",
            "--dtypes",
            "fp32,bf16",
            "--impls",
            ",".join(impls),
            "--baseline",
            "layer_test_util:DCNv2",
        )
        header, records = records[0], records[1:]
        self.assertTrue(header["header"])
        for key in ("date", "device", "device_name", "tensorflow", "tf_cuda", "timing", "configs"):
            self.assertIn(key, header)
        self.assertEqual(header["baseline"], "layer_test_util:DCNv2")
        self.assertLen(records, 2 * 2 * len(impls))
        for record in records:
            self.assertContainsSubset(RECORD_KEYS, record.keys())
            self.assertIn(record["impl"], configs.IMPLS)
            self.assertIn(record["dtype"], ("float32", "bfloat16"))
        by_key = {(r["config"], r["dtype"], r["impl"]): r for r in records}
        xla = our_layer_compiles_with_xla()
        for key, record in by_key.items():
            if key[0] == "1x6x6x4-s2" and key[2] in ("baseline", "baseline_xla"):
                self.assertEqual(record["status"], "unsupported", record["error"])
                self.assertIn("strides", record["error"])
                continue
            if key[2] in ("tfdcn_xla", "tfdcn_layer_xla") and not xla:
                # Without the XLA lowering the op says so, in one line, and the run goes on.
                self.assertEqual(record["status"], "unsupported", record["error"])
                self.assertRegex(record["error"], r"^InvalidArgumentError: DCNv2Forward .* no XLA")
                continue
            self.assertEqual(record["status"], "ok", f"{key}: {record['error']}")
            self.assertGreater(record["fwd_ms"], 0)
            self.assertGreater(record["fwd_bwd_ms"], 0)
            self.assertIsNone(record["peak_extra_mib"])  # no allocator stats on the CPU
            # bfloat16 keeps 8 bits; the iSeg-like baseline even samples at bfloat16 positions.
            self.assertLess(record["max_rel_err"], 1e-5 if key[1] == "float32" else 1e-1, key)

        with open(os.path.join(out_dir, "benchmark.md")) as f:
            markdown = f.read()
        self.assertIn("| config | dtype | impl | fwd ms | fwd+bwd ms |", markdown)
        self.assertIn("tfdcn_layer vs pure_tf_xla fwd+bwd", markdown)
        self.assertIn("tfdcn_layer_xla vs baseline_xla fwd+bwd", markdown)
        self.assertIn("unsupported [1]", markdown)
        assert_figure_written(self, out_dir, result)
        # The summary at the end: every comparison, and the way to the full report.
        summary = result.stdout[result.stdout.index("Speed-ups") :]
        for mine, other in (
            ("tfdcn_layer", "pure_tf"),
            ("tfdcn_layer_xla", "pure_tf_xla"),
            ("tfdcn_layer", "baseline"),
            ("tfdcn", "conv2d"),
            ("tfdcn_xla", "conv2d_xla"),
        ):
            self.assertRegex(summary, rf"\n  {mine} vs {other} +fwd ")
        self.assertRegex(summary, r"tfdcn_layer vs pure_tf +fwd \d+\.\d\d× \(\d+\.\d\d×–")
        self.assertIn(f"Full report: {os.path.join(out_dir, 'benchmark.md')}", summary)
        # Each step is traced once, as a concrete function: TensorFlow sees no retracing.
        self.assertNotIn(RETRACING_WARNING, result.stderr)

    def test_torchvision_in_its_own_process(self):
        # TFDCN_TORCH_PYTHON may name a Python with torch and torchvision (e.g. a separate venv).
        torch_python = os.environ.get("TFDCN_TORCH_PYTHON") or (
            sys.executable if importlib.util.find_spec("torchvision") else None
        )
        if not torch_python:
            self.skipTest("no torchvision: set TFDCN_TORCH_PYTHON to a Python that has it")
        records, _ = run_benchmark(
            os.path.join(self.get_temp_dir(), "torch"),
            "--configs",
            "1x6x6x4-s2-dg2",
            "--dtypes",
            "fp32,bf16",
            "--impls",
            "tfdcn,torchvision",
            "--torch-python",
            torch_python,
        )
        header, records = records[0], records[1:]
        self.assertIn("torchvision", header)
        by_key = {(r["dtype"], r["impl"]): r for r in records}
        self.assertEqual(by_key[("float32", "torchvision")]["status"], "ok")
        # Same data, same semantics: torchvision agrees with the float64 result of our op.
        self.assertLess(by_key[("float32", "torchvision")]["max_rel_err"], 1e-5)
        self.assertEqual(by_key[("bfloat16", "torchvision")]["status"], "unsupported")


MODEL_RECORD_KEYS = {
    "model",
    "dtype_key",
    "status",
    "error",
    "policy",
    "jit_compile",
    "optimizer",
    "parameters",
    "step_ms",
    "images_per_s",
    "peak_mib",
    "memory_kind",
    "loss_first",
    "loss_last",
    "epoch_losses",
    "steps",
    "warmup_s",
}
# The smallest network (32x32 images: the encoder ends at 1x1) and steps: tracing dominates.
TINY_MODEL = [
    "--quick",
    "--batch",
    "2",
    "--image-size",
    "32",
    "--channels",
    "8",
    "--warmup-steps",
    "2",
    "--steps",
    "2",
    "--epochs",
    "2",
]


class SegmentationModelTest(tf.test.TestCase):
    def test_dcn_aligns_at_strides_16_8_4(self):
        from tensorflow_dcn.benchmark import segmentation_model

        for dcn_class in (tfdcn.DCNv2, PureTFDCNv2, None):
            model = segmentation_model.build_model(dcn_class, 64, channels=8)
            self.assertEqual(model.output_shape, (None, 64, 64, segmentation_model.NUM_CLASSES))
            aligners = [
                layer
                for layer in model.layers
                if layer.name.startswith("align")
                and layer.name.endswith("_conv" if dcn_class is None else "_dcn")
            ]
            self.assertEqual(
                [type(layer) for layer in aligners], [dcn_class or keras.layers.Conv2D] * 3
            )
            # Inputs [x, offset_source] (x only for Conv2D) at 64 / 16, 64 / 8, 64 / 4.
            sizes = [(layer.input[0] if dcn_class else layer.input).shape[1] for layer in aligners]
            self.assertEqual(sizes, [4, 8, 16])
        with self.assertRaisesRegex(ValueError, "multiple of 32"):
            segmentation_model.build_model(None, 48)
        with self.assertRaisesRegex(ValueError, "use_custom_offset"):
            segmentation_model.dcn_arguments(keras.layers.Conv2D)


class ModelReportTest(tf.test.TestCase):
    def test_ratios_against_the_targets(self):
        from tensorflow_dcn.benchmark import model_report

        def record(model, dtype_key, step_ms, peak_mib=100.0, status="ok"):
            return {
                "model": model,
                "dtype_key": dtype_key,
                "status": status,
                "step_ms": step_ms,
                "peak_mib": peak_mib,
                "memory_kind": "gpu_allocator_peak",
            }

        records = [
            record("conv", "fp32", 10.0),
            record("pure_tf", "fp32", 16.0, 300.0),
            record("tfdcn", "fp32", 12.0, 150.0),
            record("baseline", "fp32", 13.0),
            # bf16: the pure-TF model no slower than conv (cost undefined), no baseline.
            record("conv", "bf16", 8.0),
            record("pure_tf", "bf16", 7.5),
            record("tfdcn", "bf16", 9.0),
            record("baseline", "bf16", None, status="oom"),
            record("conv", "fp16", 8.0),
            record("tfdcn", "fp16", None, status="error"),
        ]
        ratios = model_report.ratios(records)
        self.assertEqual(set(ratios), {"fp32", "bf16"})
        fp32 = ratios["fp32"]
        self.assertAllClose(
            [
                fp32["vs_conv"],
                fp32["cost_vs_pure_tf"],
                fp32["cost_vs_baseline"],
                fp32["speedup_vs_pure_tf"],
                fp32["speedup_vs_baseline"],
                fp32["peak_vs_pure_tf"],
            ],
            [1.2, 1 / 3, 2 / 3, 16 / 12, 13 / 12, 0.5],
        )
        self.assertIsNone(ratios["bf16"]["cost_vs_pure_tf"])
        self.assertIsNone(ratios["bf16"]["cost_vs_baseline"])
        self.assertAllClose(ratios["bf16"]["vs_conv"], 9 / 8)

    def test_merge_runs(self):
        from tensorflow_dcn.benchmark import model_cli

        def run(dtypes, models, channels=8):
            header = {
                "header": True,
                "benchmark": "model",
                "device": "gpu",
                "device_name": "X",
                "model": {"channels": channels},
                "training": {"steps": 20},
                "tensorflow": "2.21.0",
                "tensorflow_dcn": "0.1.0",
                "baseline": None,
                "models": models,
                "dtypes": dtypes,
                "command": ["run", *dtypes],
            }
            path = os.path.join(self.get_temp_dir(), f"{'_'.join(dtypes)}{channels}.json")
            with open(path, "w") as f:
                json.dump(
                    [header]
                    + [
                        {"dtype_key": d, "model": m, "step_ms": 1.0} for d in dtypes for m in models
                    ],
                    f,
                )
            return path

        header, records = model_cli._merged(
            [run(["fp16"], ["conv", "tfdcn"]), run(["fp32", "bf16"], ["tfdcn", "pure_tf"])], []
        )
        self.assertEqual(
            (header["dtypes"], header["models"]),
            (["fp32", "bf16", "fp16"], ["conv", "pure_tf", "tfdcn"]),
        )
        self.assertEqual(
            [(r["dtype_key"], r["model"]) for r in records],
            [
                ("fp32", "pure_tf"),
                ("fp32", "tfdcn"),
                ("bf16", "pure_tf"),
                ("bf16", "tfdcn"),
                ("fp16", "conv"),
                ("fp16", "tfdcn"),
            ],
        )
        self.assertEqual(header["merged_commands"], [["run", "fp16"], ["run", "fp32", "bf16"]])
        with self.assertRaisesRegex(ValueError, "differs .* in 'model'"):
            model_cli._merged([run(["fp32"], ["conv"]), run(["bf16"], ["conv"], channels=16)], [])


class ModelBenchmarkCliTest(tf.test.TestCase):
    """The model-level benchmark on the CPU: every model trains, one process each."""

    def test_quick_run_writes_md_json_png(self):
        out_dir = os.path.join(self.get_temp_dir(), "model")
        records, result = run_benchmark(
            out_dir, *TINY_MODEL, "--baseline", "layer_test_util:DCNv2", level=("model",)
        )
        header, records = records[0], records[1:]
        self.assertEqual(header["benchmark"], "model")
        self.assertEqual(header["baseline"], "layer_test_util:DCNv2")
        self.assertEqual((header["model"]["batch"], header["model"]["image_size"]), (2, 32))
        self.assertEqual(
            [(r["model"], r["dtype_key"]) for r in records],
            [(m, "fp32") for m in ("conv", "pure_tf", "tfdcn", "baseline")],
        )
        for r in records:
            self.assertContainsSubset(MODEL_RECORD_KEYS, r.keys())
            self.assertEqual(r["status"], "ok", f"{r['model']}: {r['error']} {r.get('log_tail')}")
            self.assertEqual(r["policy"], "float32")
            self.assertFalse(r["jit_compile"])  # Keras' default on a CPU: no XLA
            self.assertEqual(r["optimizer"], "Adam")
            self.assertGreater(r["step_ms"], 0)
            self.assertAllClose(r["images_per_s"], 2 / (r["step_ms"] / 1e3))
            self.assertEqual(r["memory_kind"], "process_peak_rss")
            self.assertGreater(r["peak_mib"], 100)
            self.assertEqual(r["steps"], 2 + 2 * 2)
            self.assertTrue(np.isfinite(r["loss_first"]) and np.isfinite(r["loss_last"]))
        by_model = {r["model"]: r for r in records}
        # The DCN models have the same weights in the same order, seeded alike: same first loss.
        self.assertAllClose(
            by_model["tfdcn"]["loss_first"], by_model["pure_tf"]["loss_first"], rtol=1e-4
        )
        self.assertEqual(by_model["tfdcn"]["parameters"], by_model["pure_tf"]["parameters"])
        self.assertGreater(by_model["tfdcn"]["parameters"], by_model["conv"]["parameters"])
        tfdcn_record = by_model["tfdcn"]
        self.assertAllClose(
            tfdcn_record["vs_conv"], tfdcn_record["step_ms"] / by_model["conv"]["step_ms"]
        )
        self.assertIn("cost_vs_baseline", tfdcn_record)

        with open(os.path.join(out_dir, "benchmark.md")) as f:
            markdown = f.read()
        self.assertIn("| dtype | model | XLA | ms/step | images/s | peak RSS MiB |", markdown)
        self.assertIn("| float32 | tfdcn.DCNv2 | off |", markdown)
        self.assertIn("## Against the targets", markdown)
        assert_figure_written(self, out_dir, result)
        summary = result.stdout[result.stdout.index("Model-level:") :]
        self.assertRegex(
            summary,
            r"float32: conv [\d.]+ ms, pure_tf [\d.]+ ms, tfdcn [\d.]+ ms, "
            r"baseline [\d.]+ ms; ours/conv [\d.]+ [✓✗]",
        )
        self.assertIn(f"Full report: {os.path.join(out_dir, 'benchmark.md')}", summary)
        self.assertNotIn(RETRACING_WARNING, result.stderr)

    def test_mixed_float16_under_xla(self):
        # jit_compile=True on the CPU: XLA when the layer supports it, else Keras turns it off.
        # mixed_float16 also gets Keras' loss scaling (mixed_bfloat16 differs from it only in the
        # half type, which the op/layer test covers under XLA).
        out_dir = os.path.join(self.get_temp_dir(), "model_mixed")
        records, _ = run_benchmark(
            out_dir,
            *TINY_MODEL,
            "--models",
            "tfdcn",
            "--dtypes",
            "fp16",
            "--jit-compile",
            "true",
            level=("model",),
        )
        (r,) = records[1:]
        self.assertEqual(r["status"], "ok", f"{r['error']} {r.get('log_tail')}")
        self.assertEqual(r["policy"], "mixed_float16")
        self.assertEqual(r["jit_compile"], our_layer_compiles_with_xla())
        self.assertEqual(r["optimizer"], "LossScaleOptimizer")
        self.assertTrue(np.isfinite(r["loss_last"]))

    def test_deterministic_tf32_off_repeats_bit_for_bit(self):
        # --deterministic --tf32 off: two runs of the same model give the same losses exactly,
        # and the report says how the runs were made.
        losses = []
        for run in ("a", "b"):
            out_dir = os.path.join(self.get_temp_dir(), f"model_deterministic_{run}")
            records, _ = run_benchmark(
                out_dir,
                *TINY_MODEL,
                "--models",
                "tfdcn",
                "--tf32",
                "off",
                "--deterministic",
                level=("model",),
            )
            header, (r,) = records[0], records[1:]
            self.assertEqual(r["status"], "ok", f"{r['error']} {r.get('log_tail')}")
            self.assertEqual(
                (header["training"]["tf32"], header["training"]["deterministic"]), ("off", True)
            )
            self.assertFalse(r["tf32"])
            losses.append((r["loss_first"], r["epoch_losses"]))
            with open(os.path.join(out_dir, "benchmark.md")) as f:
                self.assertIn("TF32 off, op determinism on.", f.read())
        self.assertEqual(losses[0], losses[1])

    def test_unusable_baseline_is_a_usage_error(self):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "tensorflow_dcn.benchmark",
                "model",
                "--device",
                "cpu",
                "--baseline",
                "keras.layers:Dense",
                "--out",
                self.get_temp_dir(),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)),
        )
        self.assertEqual(result.returncode, 2, result.stderr[-3000:])
        self.assertIn("takes no use_custom_offset", result.stderr)


if __name__ == "__main__":
    tf.test.main()
