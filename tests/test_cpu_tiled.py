"""The CPU's tiled kernels (cpu_tiled): which implementation the plan chooses, and the tiled kernels
against the float64 oracle on shapes that exercise the tiling: channel counts that are not a
multiple of the vector width, wider than a backward-input slice, groups and deformable groups
straddling each other, several tiles with a partial last one, batch 0, non-finite offsets. Each
instruction-set variant (AVX-512, AVX2, baseline SSE2) runs the parity tests in a subprocess."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tensorflow_dcn.ops import implementations_run

import op_test_util as util
import oracle

OPS = ("DCNv2Forward", "DCNv2BackwardInput", "DCNv2BackwardWeight")
HERE = os.path.dirname(os.path.abspath(__file__))


def subprocess_env(**variables):
    """This process's environment and module path (tests/ and tensorflow_dcn importable), the
    default kernel choice, and `variables`."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([HERE] + [p for p in sys.path if p]),
        TF_CPP_MIN_LOG_LEVEL="2",
        TFDCN_KERNELS="auto",
    )
    env.update(variables)
    return env


class AutoKernelsTestCase(tf.test.TestCase, parameterized.TestCase):
    """Runs its tests with TFDCN_KERNELS=auto (the ops read it at every run), whatever the
    environment says, so that this file also passes when the suite runs with im2col."""

    def setUp(self):
        super().setUp()
        previous = os.environ.get("TFDCN_KERNELS")
        os.environ["TFDCN_KERNELS"] = "auto"
        self.addCleanup(
            lambda: os.environ.pop("TFDCN_KERNELS")
            if previous is None
            else os.environ.update(TFDCN_KERNELS=previous)
        )


# The parity matrix plus shapes aimed at the tiled kernels' edges (vector width 4, 8 or 16 floats,
# depth blocks of 16, micro-tiles of 32/16/8 output channels, 48-pixel tiles, backward-input
# slices of 16 to 64 channels within one group and deformable group).
TILED_CONFIGS = util.PARITY_CONFIGS + [
    (
        "odd_channels_7_to_5",
        util.Config(height=9, width=11, in_channels=7, out_channels=5, pad=(1, 1)),
    ),
    (
        "odd_channels_37_to_19_batch2",
        util.Config(
            batch=2, height=8, width=9, in_channels=37, out_channels=19, pad=(1, 1), max_offset=3.0
        ),
    ),
    # 40 channels per group, 16 per deformable group: shares of 16, 8+8, 16 ... per group.
    (
        "channels_80_groups2_dg5",
        util.Config(
            height=7,
            width=9,
            in_channels=80,
            out_channels=34,
            pad=(1, 1),
            groups=2,
            deformable_groups=5,
            max_offset=3.0,
        ),
    ),
    (
        "channels_130_to_66_nobias",
        util.Config(
            height=6,
            width=7,
            in_channels=130,
            out_channels=66,
            pad=(1, 1),
            max_offset=3.0,
            bias=False,
        ),
    ),
    # 3 x 17 x 19 = 969 pixels: 18 to 21 tiles (56 or 48 pixels), the last partial; images end
    # inside tiles.
    (
        "many_tiles_batch3_nomask",
        util.Config(
            batch=3, height=17, width=19, in_channels=24, out_channels=40, pad=(1, 1), mask=False
        ),
    ),
    (
        "k5x3_stride2_dil2_groups3_dg2",
        util.Config(
            height=15,
            width=13,
            in_channels=48,
            out_channels=33,
            kernel=(5, 3),
            stride=(2, 2),
            pad=(3, 2),
            dilation=(2, 2),
            groups=3,
            deformable_groups=2,
            max_offset=4.0,
        ),
    ),
]
LOW_PRECISION_CONFIGS = [
    (name, c)
    for name, c in TILED_CONFIGS
    if name
    in (
        "k3x3_stride2_dil2_groups2_dg2_nomask",
        "odd_channels_37_to_19_batch2",
        "channels_80_groups2_dg5",
        "many_tiles_batch3_nomask",
    )
]

FLOAT_DTYPES = (tf.float32, tf.float16, tf.bfloat16)


class TiledParityTest(AutoKernelsTestCase):
    """The tiled kernels against the float64 oracle, asserting that they (and not im2col) ran."""

    def setUp(self):
        super().setUp()
        implementations_run(reset=True)

    def assert_ran_tiled(self, ops_expected=OPS):
        ran = implementations_run()
        self.assertEqual(sorted(ran), sorted(f"{op}/cpu_tiled" for op in ops_expected))

    @parameterized.named_parameters(
        [(f"{name}_float32", config, tf.float32) for name, config in TILED_CONFIGS]
        + [
            (f"{name}_{dtype.name}", config, dtype)
            for name, config in LOW_PRECISION_CONFIGS
            for dtype in (tf.float16, tf.bfloat16)
        ]
    )
    def test_matches_oracle(self, config, dtype):
        util.assert_forward_matches_oracle(self, config, dtype, "cpu")
        util.assert_backward_matches_oracle(self, config, dtype, "cpu")
        self.assert_ran_tiled()

    @parameterized.named_parameters([(dtype.name, dtype) for dtype in FLOAT_DTYPES])
    def test_batch_zero(self, dtype):
        config = util.Config(
            batch=0,
            height=7,
            width=5,
            in_channels=6,
            out_channels=6,
            pad=(1, 1),
            groups=2,
            deformable_groups=3,
        )
        operands = util.as_dtype(util.make_problem(config), dtype)
        output = util.forward(operands, config.attrs, "cpu")
        self.assertEqual(output.shape, [0, 7, 5, 6])
        grads = util.backward(tf.zeros(output.shape, dtype), operands, config.attrs, "cpu")
        self.assertAllEqual(grads["weight"], tf.zeros([3, 3, 3, 6], dtype))
        self.assertAllEqual(grads["bias"], tf.zeros([6], dtype))
        # Forward and backward input have nothing to compute; the weight gradients are written.
        self.assert_ran_tiled(["DCNv2BackwardWeight"])

    @parameterized.named_parameters([(dtype.name, dtype) for dtype in FLOAT_DTYPES])
    def test_non_finite_offsets_drop_their_sample(self, dtype):
        # As test_validation's NonFiniteOffsetTest: the results equal the oracle's with those
        # samples' offsets made finite and their mask zero; their offset gradients are zero.
        config = util.Config(
            batch=2,
            height=6,
            width=7,
            in_channels=20,
            out_channels=9,
            pad=(1, 1),
            deformable_groups=2,
            offsets="fractional",
        )
        problem = util.make_problem(config)
        offset = problem["offset"].reshape(2, 6, 7, 18, 2)
        rng = np.random.default_rng(3)
        dropped = rng.random(offset.shape[:-1]) < 0.15
        bad = rng.choice([np.nan, np.inf, -np.inf, 1e30], offset.shape[:-1])
        offset[..., 0] = np.where(dropped, bad, offset[..., 0])
        problem["offset"] = offset.reshape(2, 6, 7, 36)
        dropped = dropped.reshape(2, 6, 7, 18)
        with np.errstate(over="ignore"):  # 1e30 is inf in half
            operands = util.as_dtype(problem, dtype)
            reference = util.as_dtype(
                dict(
                    problem,
                    mask=np.where(dropped, 0.0, problem["mask"]),
                    offset=np.where(np.repeat(dropped, 2, -1), 0.0, problem["offset"]),
                ),
                dtype,
            )
        output = util.forward(operands, config.attrs, "cpu")
        util.assert_near(self, output, oracle.deform_conv2d(**reference, **config.attrs), dtype)
        grad_output = util.gradient_probe(config, dtype)
        grads = util.backward(grad_output, operands, config.attrs, "cpu")
        expected = oracle.gradients(grad_output, **reference, **config.attrs)
        for name in ("input", "weight", "bias"):
            util.assert_near(self, grads[name], expected[name], dtype, msg=name)
        grads = {k: np.asarray(tf.cast(v, tf.float64)) for k, v in grads.items()}
        dropped_offsets = grads["offset"][np.repeat(dropped, 2, -1)]
        self.assertAllEqual(dropped_offsets, np.zeros_like(dropped_offsets))
        dropped_masks = grads["mask"][dropped]
        self.assertAllEqual(dropped_masks, np.zeros_like(dropped_masks))
        self.assert_ran_tiled()


def run_small_problem(dtype):
    """Forward and backward of a small problem on the CPU."""
    config = util.Config(in_channels=8, out_channels=4, pad=(1, 1))
    operands = util.as_dtype(util.make_problem(config), dtype)
    util.forward(operands, config.attrs, "cpu")
    util.backward(util.gradient_probe(config, dtype), operands, config.attrs, "cpu")


class PlanChoiceTest(AutoKernelsTestCase):
    def test_float_types_run_tiled_and_float64_im2col(self):
        for dtype, implementation in (
            (tf.float32, "cpu_tiled"),
            (tf.float16, "cpu_tiled"),
            (tf.bfloat16, "cpu_tiled"),
            (tf.float64, "cpu_im2col"),
        ):
            implementations_run(reset=True)
            run_small_problem(dtype)
            self.assertEqual(
                implementations_run(), {f"{op}/{implementation}": 1 for op in OPS}, dtype.name
            )

    def test_kernels_im2col_runs_im2col(self):
        script = textwrap.dedent("""
            import json
            import tensorflow as tf
            import test_cpu_tiled as t
            for dtype in (tf.float32, tf.bfloat16):
                t.run_small_problem(dtype)
            print("RAN", json.dumps(t.implementations_run()))
        """)
        env = subprocess_env(TFDCN_KERNELS="im2col")
        result = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        ran = [line for line in result.stdout.splitlines() if line.startswith("RAN ")]
        self.assertEqual(len(ran), 1, result.stdout)
        self.assertEqual(
            ran[0],
            'RAN {"DCNv2Forward/cpu_im2col": 2, '
            '"DCNv2BackwardInput/cpu_im2col": 2, '
            '"DCNv2BackwardWeight/cpu_im2col": 2}',
        )


class InstructionSetTest(AutoKernelsTestCase):
    """TFDCN_CPU_ISA caps the variant of the tiled kernels: the narrower ones are otherwise never
    run on a machine with AVX-512. Each runs TiledParityTest in a subprocess."""

    @parameterized.named_parameters(("avx2", "avx2"), ("baseline", "baseline"))
    def test_variant_matches_oracle(self, variant):
        env = subprocess_env(TFDCN_CPU_ISA=variant)
        result = subprocess.run(
            [sys.executable, os.path.join(HERE, "test_cpu_tiled.py"), "TiledParityTest"],
            env=env,
            cwd=HERE,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-5000:])


if __name__ == "__main__":
    tf.test.main()
