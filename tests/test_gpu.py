"""GPU kernels against the CPU op and the float64 oracle; determinism; a tensor beyond 2^31
elements. Skips without a GPU. (test_forward, test_gradients and test_validation are
device-parametrized as well and run their GPU cases wherever a GPU is visible.)"""

import json
import os
import subprocess
import sys
import textwrap
import unittest

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from tensorflow_dcn import ops

import op_test_util as util
import oracle

# The >2^31-element test holds two 4.4 GB half tensors (input, grad_input) plus whatever the
# kernels stage (~20 GB in all at most); it runs on GPUs with at least this much memory, or
# anywhere when TFDCN_RUN_HUGE=1.
HUGE_TEST_MIN_GPU_BYTES = 40 << 30


def gpu_memory_bytes():
    """Total memory of the first GPU per nvidia-smi, or 0 when that cannot be read."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return int(result.stdout.split()[0]) << 20
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0


def sm90a_takes_backward_input(config, dtype):
    """Whether cuda_wgmma_sm90a runs the backward input on compute capability 9.0 (outside
    deterministic mode): float32 (TF32 or 3xTF32), fp16 and bf16 with more than 128 output
    channels per group; input channels per group and per deformable group multiples of 4; the
    output channels a multiple of 16 bytes; one group, or output channels per group a multiple
    of 128 bytes."""
    if dtype != tf.float32 and config.out_channels // config.groups <= 128:
        return False
    cin, cout, groups = config.in_channels, config.out_channels, config.groups
    return (
        cin // groups % 4 == 0
        and cin // config.deformable_groups % 4 == 0
        and cout * dtype.size % 16 == 0
        and (groups == 1 or cout // groups * dtype.size % 128 == 0)
    )


def parity_cases(configs, dtypes):
    return [
        dict(testcase_name=f"{name}_{dtype.name}", config=config, dtype=dtype)
        for name, config in configs
        for dtype in dtypes
    ]


@unittest.skipUnless(util.GPUS, "needs a GPU")
class GpuTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        # A GPU test must fail, not fall back to the CPU kernel, when no GPU kernel fits.
        tf.config.set_soft_device_placement(False)
        self.addCleanup(tf.config.set_soft_device_placement, True)

    @parameterized.named_parameters(
        parity_cases(util.PARITY_CONFIGS + [("large", util.LARGE_CONFIG)], (tf.float64, tf.float32))
    )
    def test_matches_cpu_and_oracle(self, config, dtype):
        operands = util.as_dtype(util.make_problem(config), dtype)
        gpu = util.forward(operands, config.attrs, "gpu")
        util.assert_on_device(self, gpu, "gpu")
        util.assert_near(self, gpu, util.forward(operands, config.attrs, "cpu"), dtype)
        util.assert_forward_matches_oracle(self, config, dtype, "gpu")

        grad_output = util.gradient_probe(config, dtype)
        gpu = util.backward(grad_output, operands, config.attrs, "gpu")
        cpu = util.backward(grad_output, operands, config.attrs, "cpu")
        self.assertCountEqual(gpu.keys(), cpu.keys())
        for name in gpu:
            util.assert_on_device(self, gpu[name], "gpu")
            util.assert_near(self, gpu[name], cpu[name], dtype, msg=name)
        util.assert_backward_matches_oracle(self, config, dtype, "gpu")

    @parameterized.named_parameters(
        parity_cases(util.LOW_PRECISION_CONFIGS, util.LOW_PRECISION_DTYPES)
    )
    def test_low_precision_matches_oracle(self, config, dtype):
        util.assert_forward_matches_oracle(self, config, dtype, "gpu")
        util.assert_backward_matches_oracle(self, config, dtype, "gpu")

    @parameterized.named_parameters(parity_cases(util.LOW_PRECISION_CONFIGS, (tf.float32,)))
    def test_float32_with_tf32_within_tf32_accuracy(self, config, dtype):
        # TensorFlow's default. TF32 rounds matmul operands to 10 explicit mantissa bits, as
        # half does, so the results get half's tolerance.
        tf.config.experimental.enable_tensor_float_32_execution(True)
        self.addCleanup(tf.config.experimental.enable_tensor_float_32_execution, False)
        operands = util.as_dtype(util.make_problem(config), dtype)
        expected = oracle.deform_conv2d(**operands, **config.attrs)
        actual = util.forward(operands, config.attrs, "gpu")
        util.assert_near(self, actual, expected, tf.float16)
        grad_output = util.gradient_probe(config, dtype)
        expected = oracle.gradients(grad_output, **operands, **config.attrs)
        for name, value in util.backward(grad_output, operands, config.attrs, "gpu").items():
            util.assert_near(self, value, expected[name], tf.float16, msg=name)

    @parameterized.named_parameters(
        [dict(testcase_name=name, config=config) for name, config in util.GRADIENT_CONFIGS]
    )
    def test_matches_finite_differences(self, config):
        util.assert_finite_difference_gradients(self, config, "gpu")

    @parameterized.named_parameters(
        [
            dict(testcase_name=f"{name}_{op}", case=case, op=op)
            for name, case in util.BAD_INPUTS
            for op in case.ops
        ]
    )
    def test_bad_input_raises_invalid_argument(self, case, op):
        with tf.device(util.device_name("gpu")):
            with self.assertRaisesRegex(tf.errors.InvalidArgumentError, case.message):
                util.run_op(op, case.operand_shapes(op), case.full_attrs)

    def test_repeated_runs_are_bit_identical_under_op_determinism(self):
        # enable_op_determinism is process-wide, hence the subprocess. Samples are pulled into a
        # 4x4 patch so that the scatter of grad_input collides on every pixel.
        script = textwrap.dedent("""
            import numpy as np
            import tensorflow as tf
            tf.config.experimental.enable_op_determinism()
            tf.config.set_soft_device_placement(False)
            from tensorflow_dcn import ops

            rng = np.random.default_rng(0)
            n, h, w, cin, cout, dg = 4, 32, 32, 64, 64, 2
            ky, kx = np.meshgrid(np.arange(3), np.arange(3), indexing="ij")
            base_y = np.arange(h)[:, None, None] - 1 + ky.reshape(-1)
            base_x = np.arange(w)[None, :, None] - 1 + kx.reshape(-1)
            target = rng.uniform(10, 14, (n, h, w, dg, 9, 2))
            offset = target - np.stack(np.broadcast_arrays(base_y, base_x), -1)[None, :, :, None]
            arrays = dict(input=rng.normal(size=(n, h, w, cin)),
                          offset=offset.reshape(n, h, w, dg * 18),
                          mask=rng.uniform(size=(n, h, w, dg * 9)),
                          weight=rng.normal(size=(3, 3, cin, cout)),
                          grad_output=rng.normal(size=(n, h, w, cout)))
            attrs = dict(kernel_h=3, kernel_w=3, pad_h=1, pad_w=1, deformable_groups=dg)
            for dtype in (tf.float64, tf.float32, tf.float16, tf.bfloat16):
                with tf.device("/GPU:0"):
                    t = {k: tf.constant(v, dtype) for k, v in arrays.items()}
                    runs = []
                    for _ in range(3):
                        results = [ops.dcn_v2_forward(t["input"], t["offset"], t["weight"],
                                                      mask=t["mask"], **attrs)]
                        results += ops.dcn_v2_backward_input(
                            t["grad_output"], t["input"], t["offset"], t["weight"],
                            mask=t["mask"], **attrs)
                        results += ops.dcn_v2_backward_weight(
                            t["grad_output"], t["input"], t["offset"], mask=t["mask"], **attrs)
                        assert all("GPU" in r.device for r in results), dtype
                        runs.append([np.asarray(tf.cast(r, tf.float64)).tobytes() for r in results])
                names = ["output", "grad_input", "grad_offset", "grad_mask", "grad_weight",
                         "grad_bias"]
                for run in runs[1:]:
                    differ = [name for name, a, b in zip(names, runs[0], run) if a != b]
                    assert not differ, f"{dtype.name}: {differ} differ between runs"
            print("bit-identical")
            """)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=540
        )
        self.assertEqual(result.returncode, 0, result.stderr[-4000:])
        self.assertIn("bit-identical", result.stdout)

    def test_default_kernels_match_im2col_kernels(self):
        # The im2col kernels are the simple GPU path the faster kernels are checked against;
        # TFDCN_KERNELS=im2col selects them (per process, hence subprocesses). The run counts
        # show which implementations ran.
        script = textwrap.dedent("""
            import json
            import sys
            import numpy as np
            import tensorflow as tf
            tf.config.experimental.enable_tensor_float_32_execution(False)
            tf.config.set_soft_device_placement(False)
            import tensorflow_dcn as tfdcn
            from tensorflow_dcn import ops

            rng = np.random.default_rng(0)
            results = {}
            # (n, h, w, cin, cout, stride, dg, groups): channel counts the fused kernels take.
            for n, h, w, cin, cout, stride, dg, groups in [(2, 16, 16, 64, 64, 1, 1, 1),
                                                           (2, 13, 11, 128, 200, 2, 4, 1),
                                                           (1, 12, 10, 64, 32, 1, 2, 2)]:
                ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
                arrays = dict(input=rng.normal(size=(n, h, w, cin)),
                              offset=rng.uniform(-3, 3, (n, ho, wo, dg * 18)),
                              mask=rng.uniform(size=(n, ho, wo, dg * 9)),
                              weight=rng.normal(size=(3, 3, cin // groups, cout)) / 20,
                              bias=rng.normal(size=(cout,)),
                              grad_output=rng.normal(size=(n, ho, wo, cout)))
                attrs = dict(kernel_h=3, kernel_w=3, pad_h=1, pad_w=1, stride_h=stride,
                             stride_w=stride, deformable_groups=dg, groups=groups)
                for dtype in (tf.float32, tf.float16, tf.bfloat16):
                    with tf.device("/GPU:0"):
                        t = {k: tf.constant(v, dtype) for k, v in arrays.items()}
                        out = [ops.dcn_v2_forward(t["input"], t["offset"], t["weight"],
                                                  mask=t["mask"], bias=t["bias"], **attrs)]
                        out += ops.dcn_v2_backward_input(t["grad_output"], t["input"],
                                                         t["offset"], t["weight"],
                                                         mask=t["mask"], **attrs)
                        out += ops.dcn_v2_backward_weight(t["grad_output"], t["input"],
                                                          t["offset"], mask=t["mask"], **attrs)
                    for i, r in enumerate(out):
                        key = f"{n}x{h}x{w}x{cin}-{cout}-{dtype.name}-{i}"
                        results[key] = tf.cast(r, tf.float64).numpy()
            np.savez(sys.argv[1], **results)
            print("RAN", json.dumps(tfdcn.implementations_run()))
            """)
        paths, ran = {}, {}
        for mode in ("auto", "im2col"):
            paths[mode] = os.path.join(self.get_temp_dir(), f"{mode}.npz")
            env = dict(
                os.environ, TFDCN_KERNELS=mode, PYTHONPATH=os.pathsep.join(p for p in sys.path if p)
            )
            result = subprocess.run(
                [sys.executable, "-c", script, paths[mode]],
                capture_output=True,
                text=True,
                env=env,
                timeout=540,
            )
            self.assertEqual(result.returncode, 0, result.stderr[-4000:])
            ran[mode] = json.loads(result.stdout.split("RAN ", 1)[1])
        self.assertEqual({name.split("/")[1] for name in ran["im2col"]}, {"cuda_im2col"})
        # These channel counts take the tensor-core kernels for the forward and both backwards.
        for op in ("DCNv2Forward", "DCNv2BackwardInput", "DCNv2BackwardWeight"):
            faster = [
                name
                for name in ran["auto"]
                if name.startswith(op + "/") and not name.endswith("/cuda_im2col")
            ]
            self.assertTrue(faster, (op, ran["auto"]))
        fused, simple = np.load(paths["auto"]), np.load(paths["im2col"])
        dtypes = {"float32": tf.float32, "float16": tf.float16, "bfloat16": tf.bfloat16}
        for key in simple.files:
            util.assert_near(self, fused[key], simple[key], dtypes[key.split("-")[2]], msg=key)

    def test_sm90a_kernels_are_planned_fall_back_and_match_oracle(self):
        # On compute capability 9.0 the forward and the backward weight in fp16, bf16, TF32 and
        # strict float32 (as 3xTF32) run cuda_wgmma_sm90a where channels per group and per
        # deformable group are multiples of 128 bytes; so does the backward input where
        # sm90a_takes_backward_input says so.
        # TFDCN_KERNELS=portable and an sm_90a module that does not load
        # (TFDCN_SIMULATE_SM90A_UNAVAILABLE=1) run the portable kernels instead. Every mode
        # matches the float64 oracle (strict float32 with float32's tolerance). The choice is
        # read per process, hence subprocesses.
        script = textwrap.dedent("""
            import sys
            import numpy as np
            import tensorflow as tf
            tf.config.set_soft_device_placement(False)
            import op_test_util as util
            import tensorflow_dcn as tfdcn
            from tensorflow_dcn import ops

            results = {}
            for i, config in enumerate(util.SM90A_CONFIGS):
                for dtype, tf32 in ((tf.float16, False), (tf.bfloat16, False), (tf.float32, True),
                                    (tf.float32, False)):
                    tf.config.experimental.enable_tensor_float_32_execution(tf32)
                    operands = util.as_dtype(util.make_problem(config), dtype)
                    grad_output = util.gradient_probe(config, dtype)
                    key = f"{i}-{dtype.name}-{'tf32' if tf32 else 'strict'}"
                    tfdcn.implementations_run(reset=True)
                    out = util.forward(operands, config.attrs, "gpu")
                    results["forward-" + key] = tf.cast(out, tf.float64).numpy()
                    ran = tfdcn.implementations_run(reset=True)
                    results["ran-forward-" + key] = np.array(sorted(ran))
                    with tf.device("/GPU:0"):
                        grads = ops.dcn_v2_backward_input(
                            grad_output, operands["input"], operands["offset"],
                            operands["weight"], mask=operands["mask"], **config.attrs)
                    for part, grad in zip(("input", "offset", "mask"), grads):
                        results[f"{part}-{key}"] = tf.cast(grad, tf.float64).numpy()
                    ran = tfdcn.implementations_run(reset=True)
                    results["ran-input-" + key] = np.array(sorted(ran))
                    with tf.device("/GPU:0"):
                        grad_weight, _ = ops.dcn_v2_backward_weight(
                            grad_output, operands["input"], operands["offset"],
                            mask=operands["mask"], with_bias=operands["bias"] is not None,
                            **config.attrs)
                    results["weight-" + key] = tf.cast(grad_weight, tf.float64).numpy()
                    ran = tfdcn.implementations_run(reset=True)
                    results["ran-weight-" + key] = np.array(sorted(ran))
            np.savez(sys.argv[1], **results)
            """)
        details = tf.config.experimental.get_device_details(util.GPUS[0])
        hopper = details.get("compute_capability") == (9, 0)
        runs = {}
        for mode, env_update in (
            ("auto", {"TFDCN_KERNELS": "auto"}),
            ("portable", {"TFDCN_KERNELS": "portable"}),
            ("unavailable", {"TFDCN_KERNELS": "auto", "TFDCN_SIMULATE_SM90A_UNAVAILABLE": "1"}),
        ):
            path = os.path.join(self.get_temp_dir(), f"sm90a_{mode}.npz")
            env = dict(
                os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), **env_update
            )
            result = subprocess.run(
                [sys.executable, "-c", script, path],
                capture_output=True,
                text=True,
                env=env,
                timeout=540,
            )
            self.assertEqual(result.returncode, 0, result.stderr[-4000:])
            runs[mode] = np.load(path)
        kinds = (
            (tf.float16, "strict"),
            (tf.bfloat16, "strict"),
            (tf.float32, "tf32"),
            (tf.float32, "strict"),
        )
        for i, config in enumerate(util.SM90A_CONFIGS):
            # The portable backward input: cuda_fused_sm80 (channels per group and per deformable
            # group multiples of 4). The portable backward weight: cuda_fused_sm80 up to one tile
            # of 128 outputs per group, im2col beyond.
            portable = {
                "DCNv2Forward": "cuda_fused_sm80",
                "DCNv2BackwardInput": "cuda_fused_sm80",
                "DCNv2BackwardWeight": "cuda_fused_sm80"
                if config.out_channels // config.groups <= 128
                else "cuda_im2col",
            }
            for dtype, kind in kinds:
                takes = {
                    "DCNv2Forward": True,
                    "DCNv2BackwardInput": sm90a_takes_backward_input(config, dtype),
                    "DCNv2BackwardWeight": True,
                }
                for op, part in (
                    ("DCNv2Forward", "forward"),
                    ("DCNv2BackwardInput", "input"),
                    ("DCNv2BackwardWeight", "weight"),
                ):
                    key = f"ran-{part}-{i}-{dtype.name}-{kind}"
                    expected = "cuda_wgmma_sm90a" if hopper and takes[op] else portable[op]
                    self.assertEqual(list(runs["auto"][key]), [f"{op}/{expected}"], key)
                    for mode in ("portable", "unavailable"):
                        self.assertEqual(
                            list(runs[mode][key]), [f"{op}/{portable[op]}"], f"{mode} {key}"
                        )
        # Each result against the float64 oracle (TF32 with half's tolerance, as above).
        for i, config in enumerate(util.SM90A_CONFIGS):
            for dtype, kind in kinds:
                operands = util.as_dtype(util.make_problem(config), dtype)
                gradients = oracle.gradients(
                    util.gradient_probe(config, dtype), **operands, **config.attrs
                )
                expected = {
                    "forward": oracle.deform_conv2d(**operands, **config.attrs),
                    **{part: gradients[part] for part in ("input", "offset", "mask", "weight")},
                }
                tolerance_dtype = tf.float16 if kind == "tf32" else dtype
                for mode in runs:
                    for part in expected:
                        key = f"{part}-{i}-{dtype.name}-{kind}"
                        util.assert_near(
                            self,
                            runs[mode][key],
                            expected[part],
                            tolerance_dtype,
                            msg=f"{mode} {key}",
                        )

    def test_tensor_beyond_2_31_elements(self):
        if os.environ.get("TFDCN_RUN_HUGE") != "1" and gpu_memory_bytes() < HUGE_TEST_MIN_GPU_BYTES:
            self.skipTest("needs a GPU with >= 40 GB of memory or TFDCN_RUN_HUGE=1")
        # float16 input [130, 128, 128, 1024]: 2.18e9 elements (4.4 GB), per image 2^24, so
        # images 128 and 129 start beyond 2^31. A 1x1 kernel with 8 outputs keeps the rest small.
        n, h, w, cin, cout = 130, 128, 128, 1024, 8
        attrs = dict(kernel_h=1, kernel_w=1)
        with tf.device(util.device_name("gpu")):

            def uniform(shape, seed, low=-1.0, high=1.0):
                return tf.random.stateless_uniform(shape, [seed, 0], low, high, tf.float16)

            x = uniform([n, h, w, cin], 1)
            offset = uniform([n, h, w, 2], 2, -2.0, 2.0)
            mask = uniform([n, h, w, 1], 3, 0.0, 1.0)
            weight = uniform([1, 1, cin, cout], 4, -1.0 / 32, 1.0 / 32)
            bias = uniform([cout], 5)
            grad_output = uniform([n, h, w, cout], 6)
            output = ops.dcn_v2_forward(x, offset, weight, mask=mask, bias=bias, **attrs)
            grad_input, grad_offset, grad_mask = ops.dcn_v2_backward_input(
                grad_output, x, offset, weight, mask=mask, **attrs
            )
            util.assert_on_device(self, output, "gpu")
            self.assertGreater(x.shape.num_elements(), 2**31)

        for image in (0, 128, n - 1):
            one = slice(image, image + 1)
            with tf.device(util.device_name("gpu")):
                gpu = [t[one] for t in (output, grad_input, grad_offset, grad_mask)]
                operands = [t[one] for t in (x, offset, mask, grad_output)]
            # The CPU op in float32 on the same half values: a reference far tighter than half.
            with tf.device(util.device_name("cpu")):
                xs, offset_s, mask_s, grad_s = (tf.cast(t, tf.float32) for t in operands)
                weight_s, bias_s = tf.cast(weight, tf.float32), tf.cast(bias, tf.float32)
                cpu = [
                    ops.dcn_v2_forward(xs, offset_s, weight_s, mask=mask_s, bias=bias_s, **attrs)
                ]
                cpu += ops.dcn_v2_backward_input(
                    grad_s, xs, offset_s, weight_s, mask=mask_s, **attrs
                )
            for name, g, c in zip(("output", "grad_input", "grad_offset", "grad_mask"), gpu, cpu):
                util.assert_near(self, g, c, tf.float16, msg=f"{name} of image {image}")


if __name__ == "__main__":
    tf.test.main()
