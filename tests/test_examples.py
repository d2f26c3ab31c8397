"""CPU smoke tests of examples/train_segmentation.py and examples/long_run.py, run as users run
them (subprocesses, tiny sizes), checking the exit status and the JSON summaries."""

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

from tensorflow_dcn.benchmark import segmentation_model

# The test file may be a symlink (Bazel runfiles): the examples sit next to the real tests/.
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "examples")
TRAIN = os.path.join(EXAMPLES, "train_segmentation.py")
LONG_RUN = os.path.join(EXAMPLES, "long_run.py")
QUICKSTART = os.path.join(EXAMPLES, "quickstart.py")
# 16x16 images (the encoder goes down to 2x2), width 4: tracing dominates the run time.
TINY_TRAINING = [
    "--epochs",
    "2",
    "--steps-per-epoch",
    "4",
    "--batch-size",
    "4",
    "--image-size",
    "16",
    "--channels",
    "4",
    "--verbose",
    "2",
]


def cpu_env():
    """A script's environment: this process' import path, no GPU, quiet TensorFlow logs."""
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="2",
    )


def run_script(out_dir, script, *args, expect_rc=0):
    """The script in a subprocess on the CPU, with this process' import path: its JSON summary,
    the CompletedProcess and the summary's path."""
    if not os.path.exists(script):
        raise FileNotFoundError(f"{script} is missing (the examples live next to tests/)")
    handle, json_path = tempfile.mkstemp(suffix=".json", dir=out_dir)
    os.close(handle)
    result = subprocess.run(
        [sys.executable, script, *args, "--json-out", json_path],
        capture_output=True,
        text=True,
        env=cpu_env(),
        timeout=600,
    )
    if result.returncode != expect_rc:
        raise AssertionError(
            f"{os.path.basename(script)} {' '.join(args)} exited with "
            f"{result.returncode}, expected {expect_rc}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    with open(json_path) as f:
        return json.load(f), result, json_path


def load_module(path):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ScriptRunner:
    """run_script into the test's temporary folder (a mixin: no tests of its own)."""

    def run_script(self, script, *args, expect_rc=0):
        return run_script(self.get_temp_dir(), script, *args, expect_rc=expect_rc)


class QuickstartTest(tf.test.TestCase):
    def test_trains_saves_and_loads(self):
        result = subprocess.run(
            [sys.executable, QUICKSTART, "--epochs", "2", "--size", "16"],
            capture_output=True,
            text=True,
            env=cpu_env(),
            timeout=600,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        first, last = map(float, re.search(r"loss ([\d.]+) -> ([\d.]+)", result.stdout).groups())
        self.assertLess(last, first)
        self.assertIn("the loaded model predicts the same: True", result.stdout)


class TrainSegmentationTest(ScriptRunner, tf.test.TestCase):
    def test_both_layers_then_two_replicas_reproduce_the_step_losses(self):
        one, result, one_path = self.run_script(
            TRAIN, *TINY_TRAINING, "--layer", "both", "--norm", "batch"
        )
        self.assertTrue(one["ok"], one["failures"])
        self.assertEqual(one["num_replicas"], 1)
        self.assertEqual(one["mixed_precision"], "float32")
        self.assertIn("images/s", result.stdout)
        for name in ("tfdcn", "pure_tf"):
            run = one["runs"][name]
            self.assertFalse(run["nan_terminated"])
            self.assertLen(run["epoch_losses"], 2)
            self.assertLess(run["epoch_losses"][1], run["epoch_losses"][0])
            self.assertTrue(run["loss_decreased"])
            self.assertLen(run["first_step_losses"], 4)
            self.assertEqual(run["first_step_losses"][0], run["first_step_running_means"][0])
            self.assertGreater(run["images_per_sec"], 0)
            self.assertEqual(run["timing_warmup"], "first epoch")
            self.assertIsNone(run["gpu_peak_memory_mib"])
            self.assertTrue(run["checkpoint"]["fresh_model_differed"])
            self.assertTrue(run["checkpoint"]["weights_restored_identical"])
            self.assertTrue(run["checkpoint"]["keras_model_restored_identical"])
        # Same initial weights and data: the op and the pure-TF layer agree to float rounding.
        self.assertLess(one["layers_comparison"]["first_step_loss_rel_diff"], 1e-5)
        # On the CPU Keras resolves jit_compile='auto' to no XLA (on a GPU it is XLA).
        self.assertFalse(one["runs"]["tfdcn"]["jit_compile"])
        for run in one["runs"].values():
            self.assertTrue(run["checkpoint"]["resume_identical"], run["checkpoint"])

        # The same global batches split over two logical CPUs give the same step losses
        # (BatchNormalization synchronized over the replicas).
        two, _, _ = self.run_script(
            TRAIN,
            *TINY_TRAINING,
            "--distribute",
            "mirrored",
            "--cpu-replicas",
            "2",
            "--norm",
            "batch",
            "--compare-losses",
            one_path,
        )
        self.assertTrue(two["ok"], two["failures"])
        self.assertEqual(two["num_replicas"], 2)
        self.assertEqual(two["per_replica_batch_size"], 2)
        self.assertTrue(two["runs"]["tfdcn"]["checkpoint"]["weights_restored_identical"])

    def test_mixed_float16_under_jit_compile_stays_close(self):
        summary, _, _ = self.run_script(
            TRAIN,
            *TINY_TRAINING,
            "--mixed-precision",
            "mixed_float16",
            "--jit-compile",
            "true",
            "--compare-float32",
        )
        self.assertTrue(summary["ok"], summary["failures"])
        run = summary["runs"]["tfdcn"]
        self.assertEqual(run["optimizer"], "LossScaleOptimizer")
        self.assertEqual(run["dtype_policy"], "mixed_float16")
        # compile(jit_compile=True) on a model with DCNv2 trains under XLA, without a fallback.
        self.assertTrue(run["jit_compile"])
        self.assertTrue(run["checkpoint"]["resumed_jit_compile"])
        self.assertFalse(
            any("jit_compile" in w for w in run["compile_warnings"]), run["compile_warnings"]
        )
        self.assertFalse(run["nan_terminated"])
        comparison = run["float32_comparison"]
        self.assertTrue(comparison["finite"])
        self.assertLess(comparison["max_prob_diff"], 0.02)
        self.assertGreater(comparison["max_abs_logit_diff"], 0)  # it did run in float16

    def test_exits_non_zero_when_the_loss_does_not_decrease(self):
        # One epoch is exactly the generated images: with a zero learning rate both epochs see
        # the same batches through the same weights. In mixed_bfloat16, which runs here too.
        summary, result, _ = self.run_script(
            TRAIN,
            *TINY_TRAINING,
            "--learning-rate",
            "0",
            "--mixed-precision",
            "mixed_bfloat16",
            "--compare-float32",
            "--deterministic",
            expect_rc=1,
        )
        self.assertFalse(summary["ok"])
        self.assertLen(summary["failures"], 1)
        self.assertIn("did not decrease", result.stderr)
        self.assertTrue(summary["deterministic"])
        run = summary["runs"]["tfdcn"]
        self.assertEqual(run["epoch_losses"][0], run["epoch_losses"][1])
        self.assertEqual(run["optimizer"], "Adam")  # no loss scaling in bfloat16
        self.assertTrue(run["checkpoint"]["weights_restored_identical"])
        self.assertLess(run["float32_comparison"]["max_prob_diff"], 0.1)
        self.assertGreater(run["float32_comparison"]["max_abs_logit_diff"], 0)

    def test_jit_compile_under_mirrored_strategy_is_a_usage_error(self):
        # TensorFlow 2.21 cannot XLA-compile a MirroredStrategy step of any Keras model: the
        # script says so up front instead of failing at the first step.
        module = load_module(TRAIN)
        with self.assertRaises(SystemExit) as raised:
            module.parse_args(["--distribute", "mirrored", "--jit-compile", "true"])
        self.assertEqual(raised.exception.code, 2)
        self.assertEqual(module.parse_args(["--distribute", "mirrored"]).jit_compile, "auto")


class SyntheticDataTest(tf.test.TestCase):
    """The shapes task the segmentation example and the model-level benchmark train on."""

    def test_shapes_are_deterministic_and_labelled(self):
        module = segmentation_model
        images, labels = module.make_shapes(6, 24, seed=3)
        again, labels_again = module.make_shapes(6, 24, seed=3)
        self.assertAllEqual(images, again)
        self.assertAllEqual(labels, labels_again)
        self.assertNotAllEqual(images, module.make_shapes(6, 24, seed=4)[0])
        self.assertEqual(images.shape, (6, 24, 24, 3))
        self.assertEqual(images.dtype, np.uint8)
        self.assertAllInSet(np.unique(labels), range(module.NUM_CLASSES))
        self.assertGreater(np.mean(labels > 0), 0.0)

    def test_triangle_mask(self):
        module = segmentation_model
        yy, xx = np.mgrid[0:21, 0:21].astype(np.float32)
        mask = module._triangle_mask(yy, xx, 10.0, 10.0, 8.0, angle=0.0)
        self.assertTrue(mask[10, 10])  # the centre
        self.assertTrue(mask[10, 17])  # towards the vertex at angle 0 (x = 18)
        self.assertFalse(mask[10, 3])  # beyond the opposite edge (x = 6)
        self.assertFalse(mask[0, 0])


class LongRunTest(ScriptRunner, tf.test.TestCase):
    def test_memory_flat_and_threads_match(self):
        # A shared CPU runner's timing is noisy: the throughput check is for the GPU runs.
        summary, result, _ = self.run_script(
            LONG_RUN,
            "--config",
            "2x8x8x8",
            "--steps",
            "120",
            "--sample-every",
            "5",
            "--threads",
            "3",
            "--calls-per-thread",
            "4",
            "--steady-tol",
            "1e9",
        )
        self.assertTrue(summary["ok"], summary["failures"])
        self.assertTrue(summary["all_finite"])
        self.assertTrue(summary["steadiness"]["steady"])
        self.assertEqual(summary["device"], "CPU:0")
        self.assertLen(summary["samples"], 120 // 5 + 1)
        self.assertEqual(set(summary["flatness"]), {"rss_mib"})  # no GPU: host memory only
        self.assertTrue(summary["flatness"]["rss_mib"]["flat"])
        threads = summary["threads"]
        self.assertTrue(threads["match"])
        self.assertEqual(threads["errors"], [])
        self.assertTrue(threads["distinct_inputs_give_distinct_outputs"])
        self.assertEqual(
            set(threads["tensors"]),
            {"output", "grad_input", "grad_offset", "grad_mask", "grad_weight", "grad_bias"},
        )
        for name, entry in threads["tensors"].items():
            # The CPU kernels have one writer per element and a fixed order: exact.
            self.assertEqual(entry["required"], "exact", name)
            self.assertEqual(entry["max_abs_diff"], 0.0, name)
        self.assertIn("match", result.stdout)

    def test_xla_compiled_training_steps(self):
        summary, _, _ = self.run_script(
            LONG_RUN,
            "--config",
            "2x8x8x8",
            "--steps",
            "40",
            "--sample-every",
            "5",
            "--threads",
            "0",
            "--jit-compile",
            "--steady-tol",
            "1e9",
        )
        self.assertTrue(summary["ok"], summary["failures"])
        self.assertTrue(summary["args"]["jit_compile"])
        self.assertTrue(summary["all_finite"])

    def test_steadiness_detects_a_slow_window(self):
        module = load_module(LONG_RUN)
        steps = 100
        steady = [{"step": s, "ms_per_step": 2.0 + 0.01 * (s % 3)} for s in range(5, steps + 1, 5)]
        slow = [dict(r, ms_per_step=10.0) if r["step"] == 90 else r for r in steady]
        self.assertTrue(module.steadiness(steady, steps, 1.5)["steady"])
        self.assertFalse(module.steadiness(slow, steps, 1.5)["steady"])
        self.assertIsNone(module.steadiness(steady[:1], steps, 1.5)["steady"])

    def test_flatness_detects_growth(self):
        module = load_module(LONG_RUN)
        steps = 100
        flat = [{"step": s, "rss_mib": 500.0 + (s % 3)} for s in range(0, steps + 1, 5)]
        growing = [{"step": s, "rss_mib": 500.0 + s} for s in range(0, steps + 1, 5)]
        self.assertTrue(module.flatness(flat, steps, "rss_mib", 4.0)["flat"])
        check = module.flatness(growing, steps, "rss_mib", 4.0)
        self.assertFalse(check["flat"])
        self.assertAllClose(check["growth_mib"], 50.0)
        self.assertAllClose(check["second_half_slope_kib_per_step"], 1024.0)
        self.assertIsNone(module.flatness(flat[:2], steps, "rss_mib", 4.0)["flat"])


if __name__ == "__main__":
    tf.test.main()
