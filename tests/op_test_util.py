"""Shared helpers for the DCNv2 op tests: devices, problem configurations and builders, tolerances,
checks against the float64 oracle, and the bad-input cases as data (replayed on every device)."""

import dataclasses
import zlib

import numpy as np
import tensorflow as tf

from tensorflow_dcn import ops

import oracle

GPUS = tf.config.list_physical_devices("GPU")
for _gpu in GPUS:
    # Lets a subprocess (the determinism test) get GPU memory next to this process.
    tf.config.experimental.set_memory_growth(_gpu, True)
# TensorFlow allows TF32 for float32 matmuls by default; the float32 tests assert float32
# accuracy, so they run with it off (tests that want TF32 turn it on themselves).
tf.config.experimental.enable_tensor_float_32_execution(False)

DEVICES = ("cpu", "gpu") if GPUS else ("cpu",)

# Largest error allowed by assert_near: elementwise |actual - expected| <= tol * (|expected| +
# max|expected|), i.e. about tol relative to the largest magnitude of the float64 reference.
TOLERANCE = {
    tf.float64: 1e-10,
    tf.float32: 1e-5,
    # half and bfloat16 keep 11 and 8 significant bits (relative rounding 2^-11 = 4.9e-4 and
    # 2^-8 = 3.9e-3) and accumulate in float. The bound allows about four roundings of the
    # largest value: the result's, plus those of sampled or gradient columns where a GPU kernel
    # stages them in the operand type for its tensor cores.
    tf.float16: 2e-3,
    tf.bfloat16: 1.6e-2,
}
LOW_PRECISION_DTYPES = (tf.float16, tf.bfloat16)


def device_name(device):
    return {"cpu": "/CPU:0", "gpu": "/GPU:0"}[device]


def with_devices(named_cases, devices=DEVICES):
    """Crosses (name, kwargs) cases with devices, as dicts for parameterized.named_parameters."""
    return [
        dict(testcase_name=f"{name}_{device}" if name else device, device=device, **kwargs)
        for name, kwargs in named_cases
        for device in devices
    ]


@dataclasses.dataclass(frozen=True)
class Config:
    """One DCNv2 problem. offsets: "random" (uniform in +-max_offset), "integer" (integers in
    +-max_offset), "fractional" (integers in +-3 plus a fraction in +-[0.2, 0.8], so every sample
    stays away from integer positions where the bilinear interpolation has kinks) or "zero"."""

    batch: int = 1
    height: int = 5
    width: int = 5
    in_channels: int = 4
    out_channels: int = 4
    kernel: tuple = (3, 3)
    stride: tuple = (1, 1)
    pad: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    deformable_groups: int = 1
    offsets: str = "random"
    max_offset: float = 6.0
    mask: bool = True
    bias: bool = True

    @property
    def attrs(self):
        return dict(
            kernel_h=self.kernel[0],
            kernel_w=self.kernel[1],
            stride_h=self.stride[0],
            stride_w=self.stride[1],
            pad_h=self.pad[0],
            pad_w=self.pad[1],
            dilation_h=self.dilation[0],
            dilation_w=self.dilation[1],
            groups=self.groups,
            deformable_groups=self.deformable_groups,
        )

    @property
    def output_hw(self):
        return tuple(
            oracle.output_size(n, k, s, p, d)
            for n, k, s, p, d in zip(
                (self.height, self.width), self.kernel, self.stride, self.pad, self.dilation
            )
        )


def make_problem(config, seed=None):
    """Random float64 operands for `config` (deterministic per config): a dict with input, offset,
    weight, mask and bias (None when the config has none)."""
    rng = np.random.default_rng(zlib.crc32(repr(config).encode()) if seed is None else seed)
    n, (ho, wo) = config.batch, config.output_hw
    taps = config.kernel[0] * config.kernel[1]
    samples = (n, ho, wo, config.deformable_groups * taps)
    offset_shape = samples[:3] + (2 * samples[3],)
    if config.offsets == "random":
        offset = rng.uniform(-config.max_offset, config.max_offset, offset_shape)
    elif config.offsets == "integer":
        offset = rng.integers(
            -config.max_offset, config.max_offset, offset_shape, endpoint=True
        ).astype(np.float64)
    elif config.offsets == "fractional":
        fraction = rng.uniform(0.2, 0.8, offset_shape) * rng.choice([-1.0, 1.0], offset_shape)
        offset = rng.integers(-3, 3, offset_shape, endpoint=True) + fraction
    else:
        offset = np.zeros(offset_shape)
    cin_per_group = config.in_channels // config.groups
    return dict(
        input=rng.normal(size=(n, config.height, config.width, config.in_channels)),
        offset=offset,
        weight=rng.normal(size=config.kernel + (cin_per_group, config.out_channels)),
        mask=rng.uniform(0.0, 1.0, samples) if config.mask else None,
        bias=rng.normal(size=(config.out_channels,)) if config.bias else None,
    )


def as_dtype(operands, dtype):
    """The operands as tensors of dtype (None stays None)."""
    return {k: None if v is None else tf.constant(v, dtype) for k, v in operands.items()}


def assert_on_device(test, tensor, device):
    # Guards against a silent fallback to the CPU kernel.
    test.assertIn(device.upper() + ":0", tensor.device)


def forward(operands, attrs, device):
    with tf.device(device_name(device)):
        return ops.dcn_v2_forward(**operands, **attrs)


def backward(grad_output, operands, attrs, device):
    """Gradients from the raw backward ops: a dict over the operands present."""
    with tf.device(device_name(device)):
        grad_input, grad_offset, grad_mask = ops.dcn_v2_backward_input(
            grad_output,
            operands["input"],
            operands["offset"],
            operands["weight"],
            mask=operands["mask"],
            **attrs,
        )
        grad_weight, grad_bias = ops.dcn_v2_backward_weight(
            grad_output,
            operands["input"],
            operands["offset"],
            mask=operands["mask"],
            with_bias=operands["bias"] is not None,
            **attrs,
        )
    grads = dict(
        input=grad_input, offset=grad_offset, mask=grad_mask, weight=grad_weight, bias=grad_bias
    )
    return {k: v for k, v in grads.items() if v is not None}


def assert_near(test, actual, expected, dtype, msg=None):
    """Elementwise within TOLERANCE[dtype] of expected, relative to |expected| plus its max."""
    tol = TOLERANCE[dtype]
    actual, expected = (np.asarray(tf.cast(t, tf.float64)) for t in (actual, expected))
    test.assertEqual(actual.shape, expected.shape, msg)
    scale = np.max(np.abs(expected), initial=0.0)
    test.assertAllClose(actual, expected, rtol=tol, atol=tol * scale, msg=msg)


def gradient_probe(config, dtype, seed=1):
    """A random grad_output for config's output, in dtype (the oracle gets the same values)."""
    rng = np.random.default_rng(seed)
    shape = (config.batch,) + config.output_hw + (config.out_channels,)
    return tf.constant(rng.normal(size=shape), dtype)


def assert_forward_matches_oracle(test, config, dtype, device):
    operands = as_dtype(make_problem(config), dtype)
    actual = forward(operands, config.attrs, device)
    assert_on_device(test, actual, device)
    test.assertEqual(actual.dtype, dtype)
    # The oracle sees exactly the (rounded) values the op sees.
    assert_near(test, actual, oracle.deform_conv2d(**operands, **config.attrs), dtype)


def assert_backward_matches_oracle(test, config, dtype, device):
    operands = as_dtype(make_problem(config), dtype)
    grad_output = gradient_probe(config, dtype)
    actual = backward(grad_output, operands, config.attrs, device)
    expected = oracle.gradients(grad_output, **operands, **config.attrs)
    test.assertCountEqual(actual.keys(), expected.keys())
    for name, value in actual.items():
        assert_on_device(test, value, device)
        test.assertEqual(value.dtype, dtype)
        assert_near(test, value, expected[name], dtype, msg=f"gradient of {name}")


def assert_finite_difference_gradients(test, config, device):
    """tf.test.compute_gradient in float64 for every operand of config's problem."""
    operands = {
        k: v for k, v in as_dtype(make_problem(config), tf.float64).items() if v is not None
    }
    names = list(operands)

    def f(*values):
        with tf.device(device_name(device)):
            return ops.dcn_v2_forward(**dict(zip(names, values)), **config.attrs)

    theoretical, numerical = tf.test.compute_gradient(f, list(operands.values()))
    for name, t, n in zip(names, theoretical, numerical):
        # The output is linear in each operand within a bilinear cell, so central differences
        # are exact up to float64 rounding of the output (~1e-15) divided by the step (~1e-3).
        test.assertAllClose(t, n, rtol=1e-7, atol=1e-7, msg=f"jacobian for {name}")


# The parity matrix: a covering set rather than the cartesian product. Every kernel (1x1, 3x3,
# 5x3), stride (1, 2, asymmetric), padding (0, 1, 2, asymmetric), dilation (1, 2), groups (1, 2),
# deformable groups (1, 2, 4; 3 across conv groups), batch (1, 3), offset kind (uniform +-6 with
# many samples outside the image, small, integer), mask and bias on/off appear with several
# others. Spatial sizes are odd, 5 to 13; channels 4 to 16.
PARITY_CONFIGS = [
    ("k1x1", Config(height=5, width=7, kernel=(1, 1))),
    ("k3x3_pad1_batch3", Config(batch=3, height=7, width=5, out_channels=6, pad=(1, 1))),
    (
        "k3x3_stride2_dil2_groups2_dg2_nomask",
        Config(
            height=9,
            width=11,
            in_channels=8,
            out_channels=6,
            stride=(2, 2),
            pad=(1, 1),
            dilation=(2, 2),
            groups=2,
            deformable_groups=2,
            mask=False,
        ),
    ),
    (
        "k5x3_pad2_dg4_nobias",
        Config(
            height=11,
            width=9,
            in_channels=8,
            out_channels=5,
            kernel=(5, 3),
            pad=(2, 2),
            deformable_groups=4,
            max_offset=4.0,
            bias=False,
        ),
    ),
    (
        "k5x3_stride2_dil2_groups2_integer_batch3",
        Config(
            batch=3,
            height=13,
            width=11,
            kernel=(5, 3),
            stride=(2, 2),
            dilation=(2, 2),
            groups=2,
            offsets="integer",
        ),
    ),
    (
        "k3x3_pad2_dil2_dg4_nomask_nobias",
        Config(
            height=9,
            width=9,
            in_channels=16,
            out_channels=8,
            pad=(2, 2),
            dilation=(2, 2),
            deformable_groups=4,
            mask=False,
            bias=False,
        ),
    ),
    (
        "k1x1_stride2_pad1_groups2_dg2_batch3",
        Config(
            batch=3,
            height=7,
            width=9,
            out_channels=6,
            kernel=(1, 1),
            stride=(2, 2),
            pad=(1, 1),
            groups=2,
            deformable_groups=2,
        ),
    ),
    (
        "k3x3_asymmetric_groups2_dg4",
        Config(
            height=11,
            width=13,
            in_channels=8,
            stride=(1, 2),
            pad=(2, 0),
            dilation=(2, 1),
            groups=2,
            deformable_groups=4,
            max_offset=3.0,
        ),
    ),
    (
        "k5x3_asymmetric_dg2_integer_batch3_nomask",
        Config(
            batch=3,
            height=13,
            width=7,
            in_channels=6,
            out_channels=3,
            kernel=(5, 3),
            stride=(2, 1),
            pad=(1, 2),
            dilation=(1, 2),
            deformable_groups=2,
            offsets="integer",
            mask=False,
        ),
    ),
    ("k3x3_stride2_tiny_nobias", Config(stride=(2, 2), bias=False)),
    (
        "k1x1_pad2_dg4",
        Config(height=5, width=7, in_channels=8, kernel=(1, 1), pad=(2, 2), deformable_groups=4),
    ),
    (
        "k3x3_groups2_dg4_integer_batch3_nobias",
        Config(
            batch=3,
            height=7,
            width=7,
            in_channels=8,
            out_channels=8,
            pad=(1, 1),
            groups=2,
            deformable_groups=4,
            offsets="integer",
            bias=False,
        ),
    ),
    # Deformable groups (2 channels each) straddle the conv groups (3 channels each).
    (
        "k3x3_groups2_dg3_straddling",
        Config(height=7, width=9, in_channels=6, pad=(1, 1), groups=2, deformable_groups=3),
    ),
    (
        "k5x3_dil2_dg2_small_offsets_nomask_nobias",
        Config(
            height=13,
            width=9,
            kernel=(5, 3),
            pad=(1, 1),
            dilation=(2, 2),
            deformable_groups=2,
            max_offset=1.0,
            mask=False,
            bias=False,
        ),
    ),
]

# Problems the Hopper kernels (cuda_wgmma_sm90a) take: the forward and the backward weight in
# fp16, bf16 and fp32 (TF32 or 3xTF32) with channels per group and per deformable group multiples
# of 128 bytes; the backward input in fp32 (TF32 or 3xTF32), and in fp16 and bf16 beyond 128
# output channels per group, with those channels multiples of 4, the output channels a
# multiple of 16 bytes and, with groups, of 128 bytes per group
# (test_gpu.sm90a_takes_backward_input). Its 128 x 128 tile (198 pixels, 72
# outputs); its 64 x 256 tile with stride 2 and dg 4 (200 outputs); groups 2 with dg 2, whose 48
# outputs per group keep the backward input portable; 512 x 512 channels, whose strict float32
# forward runs in two K chunks (its weight copy would exceed 12 MiB), deformable groups starting
# inside a chunk.
SM90A_CONFIGS = [
    Config(
        batch=2,
        height=9,
        width=11,
        in_channels=64,
        out_channels=72,
        pad=(1, 1),
        offsets="fractional",
    ),
    Config(
        batch=2,
        height=13,
        width=11,
        in_channels=256,
        out_channels=200,
        stride=(2, 2),
        pad=(1, 1),
        deformable_groups=4,
    ),
    Config(
        height=12,
        width=10,
        in_channels=128,
        out_channels=96,
        pad=(1, 1),
        groups=2,
        deformable_groups=2,
        bias=False,
    ),
    Config(
        height=6,
        width=7,
        in_channels=512,
        out_channels=512,
        pad=(1, 1),
        deformable_groups=4,
    ),
]

# Big enough for many parallel pixel blocks in the CPU kernels and, in float64, for two of the
# backward pass's 64 MiB column chunks (dcn_v2_cpu.cc), the chunk boundary falling inside an image.
LARGE_CONFIG = Config(
    batch=3,
    height=31,
    width=31,
    in_channels=128,
    out_channels=8,
    kernel=(5, 5),
    pad=(2, 2),
    groups=2,
    deformable_groups=2,
)

# Zero offsets: DCNv2 is then an ordinary convolution.
CONV_CONFIGS = [
    ("k3x3_pad1_batch2", Config(batch=2, height=7, width=5, out_channels=6, pad=(1, 1))),
    (
        "k5x3_stride2_pad2_groups2",
        Config(height=11, width=9, kernel=(5, 3), stride=(2, 2), pad=(2, 2), groups=2),
    ),
    (
        "k3x3_stride2_dil2_asymmetric_pad_groups2_dg2",
        Config(
            height=9,
            width=13,
            in_channels=8,
            out_channels=6,
            stride=(2, 2),
            pad=(2, 1),
            dilation=(2, 2),
            groups=2,
            deformable_groups=2,
        ),
    ),
    (
        "k1x1_asymmetric_stride_nobias",
        Config(height=7, width=9, kernel=(1, 1), stride=(1, 2), bias=False),
    ),
    (
        "k3x3_dil2_dg4",
        Config(height=9, width=9, in_channels=8, dilation=(2, 2), deformable_groups=4),
    ),
]
CONV_CONFIGS = [(name, dataclasses.replace(c, offsets="zero")) for name, c in CONV_CONFIGS]

# Finite-difference gradient checks: tiny problems (the numeric Jacobian costs two forward
# passes per operand element) with offsets away from integer sample positions.
GRADIENT_CONFIGS = [
    ("k3x3_pad1", Config(height=5, width=5, in_channels=2, out_channels=2, pad=(1, 1))),
    (
        "k3x3_dil2_batch2_nomask_nobias",
        Config(
            batch=2,
            height=5,
            width=4,
            in_channels=2,
            out_channels=3,
            pad=(1, 1),
            dilation=(2, 2),
            mask=False,
            bias=False,
        ),
    ),
    (
        "k3x3_stride2_groups2_dg2",
        Config(height=7, width=7, stride=(2, 2), pad=(1, 1), groups=2, deformable_groups=2),
    ),
    (
        "k5x3_stride2_dg4_nomask",
        Config(
            height=5,
            width=4,
            out_channels=2,
            kernel=(5, 3),
            stride=(2, 1),
            pad=(2, 1),
            deformable_groups=4,
            mask=False,
        ),
    ),
    (
        "k1x1_batch2_dg4_nobias",
        Config(
            batch=2,
            height=3,
            width=5,
            out_channels=2,
            kernel=(1, 1),
            deformable_groups=4,
            bias=False,
        ),
    ),
]
GRADIENT_CONFIGS = [
    (name, dataclasses.replace(c, offsets="fractional")) for name, c in GRADIENT_CONFIGS
]

# half and bfloat16: a few parity configs that between them cover groups, deformable groups,
# stride, dilation, integer offsets and absent mask/bias.
LOW_PRECISION_CONFIGS = [
    (name, c)
    for name, c in PARITY_CONFIGS
    if name
    in (
        "k3x3_pad1_batch3",
        "k3x3_stride2_dil2_groups2_dg2_nomask",
        "k5x3_stride2_dil2_groups2_integer_batch3",
        "k3x3_pad2_dil2_dg4_nomask_nobias",
    )
]


# Bad inputs, as data. Each case starts from a consistent problem (input_shape, out_channels,
# attrs), replaces some operand shapes, and names the ops it applies to (those that take every
# replaced operand). `message` is a regex the error must match: it names the argument at fault.
ALL_OPS = ("forward", "backward_input", "backward_weight")
_OPERANDS = {
    "forward": ("input", "offset", "mask", "weight", "bias"),
    "backward_input": ("grad_output", "input", "offset", "mask", "weight"),
    "backward_weight": ("grad_output", "input", "offset", "mask"),
}


@dataclasses.dataclass(frozen=True)
class BadInput:
    message: str
    input_shape: tuple = (1, 5, 5, 4)
    out_channels: int = 4
    attrs: dict = dataclasses.field(default_factory=dict)
    shapes: dict = dataclasses.field(default_factory=dict)
    ops: tuple = ALL_OPS

    @property
    def full_attrs(self):
        return dict(dict(kernel_h=3, kernel_w=3), **self.attrs)

    def operand_shapes(self, op):
        """Shapes of the operands `op` takes: consistent ones, with the case's replacements."""
        a = dict(
            dict(
                stride_h=1,
                stride_w=1,
                pad_h=0,
                pad_w=0,
                dilation_h=1,
                dilation_w=1,
                groups=1,
                deformable_groups=1,
            ),
            **self.full_attrs,
        )
        # Out-of-range attributes are only clamped here, to size the other operands.
        k = [max(a["kernel_h"], 1), max(a["kernel_w"], 1)]
        n, h, w, cin = self.input_shape
        ho, wo = (
            max(
                oracle.output_size(
                    size,
                    kk,
                    max(a[f"stride_{x}"], 1),
                    max(a[f"pad_{x}"], 0),
                    max(a[f"dilation_{x}"], 1),
                ),
                0,
            )
            for size, kk, x in ((h, k[0], "h"), (w, k[1], "w"))
        )
        samples = max(a["deformable_groups"], 1) * k[0] * k[1]
        shapes = dict(
            input=self.input_shape,
            offset=(n, ho, wo, 2 * samples),
            mask=(n, ho, wo, samples),
            weight=(k[0], k[1], cin // max(a["groups"], 1), self.out_channels),
            bias=(self.out_channels,),
            grad_output=(n, ho, wo, self.out_channels),
        )
        shapes.update(self.shapes)
        return {name: shapes[name] for name in _OPERANDS[op]}


def run_op(op, shapes, attrs, dtype=tf.float32):
    """Runs one raw op on zero operands of the given shapes (mask and bias present)."""
    return run_op_on(op, {name: tf.zeros(shape, dtype) for name, shape in shapes.items()}, attrs)


def run_op_on(op, z, attrs):
    """Runs one raw op on the operands in dict z (mask and bias present)."""
    if op == "forward":
        return ops.dcn_v2_forward(
            z["input"], z["offset"], z["weight"], mask=z["mask"], bias=z["bias"], **attrs
        )
    if op == "backward_input":
        return ops.dcn_v2_backward_input(
            z["grad_output"], z["input"], z["offset"], z["weight"], mask=z["mask"], **attrs
        )
    return ops.dcn_v2_backward_weight(
        z["grad_output"], z["input"], z["offset"], mask=z["mask"], with_bias=True, **attrs
    )


# Per-image element counts from 2^31 on overflow 32-bit indexing; batch 0 keeps every tensor
# empty, so nothing large is allocated.
BAD_INPUTS = [
    ("input_rank", BadInput(r"input must be rank 4", shapes=dict(input=(1, 5, 5)))),
    ("offset_rank", BadInput(r"offset must be rank 4", shapes=dict(offset=(1, 3, 3, 9, 2)))),
    ("mask_rank", BadInput(r"mask must be rank 4", shapes=dict(mask=(1, 3, 3)))),
    (
        "weight_rank",
        BadInput(
            r"weight must be rank 4",
            shapes=dict(weight=(3, 3, 4)),
            ops=("forward", "backward_input"),
        ),
    ),
    ("bias_rank", BadInput(r"bias must be rank 1", shapes=dict(bias=(4, 1)), ops=("forward",))),
    (
        "grad_output_rank",
        BadInput(
            r"grad_output must be rank 4",
            shapes=dict(grad_output=(1, 3, 3)),
            ops=("backward_input", "backward_weight"),
        ),
    ),
    (
        "input_empty_height",
        BadInput(r"input height, width and channels must be at least 1", input_shape=(1, 0, 5, 4)),
    ),
    (
        "weight_kernel_size_mismatch",
        BadInput(
            r"weight spatial size 3x2",
            shapes=dict(weight=(3, 2, 4, 4)),
            ops=("forward", "backward_input"),
        ),
    ),
    (
        "weight_in_channels_mismatch",
        BadInput(
            r"weight input channels \(3\)",
            shapes=dict(weight=(3, 3, 3, 4)),
            ops=("forward", "backward_input"),
        ),
    ),
    (
        "bias_size_mismatch",
        BadInput(r"bias must have shape \[4\]", shapes=dict(bias=(5,)), ops=("forward",)),
    ),
    (
        "grad_output_channels_mismatch",
        BadInput(
            r"grad_output must have shape",
            shapes=dict(grad_output=(1, 3, 3, 5)),
            ops=("backward_input",),
        ),
    ),
    (
        "grad_output_spatial_mismatch",
        BadInput(
            r"grad_output must have shape",
            shapes=dict(grad_output=(1, 4, 3, 4)),
            ops=("backward_input", "backward_weight"),
        ),
    ),
    (
        "grad_output_batch_mismatch",
        BadInput(
            r"grad_output must have shape",
            shapes=dict(grad_output=(2, 3, 3, 4)),
            ops=("backward_input", "backward_weight"),
        ),
    ),
    (
        "in_channels_not_divisible_by_groups",
        BadInput(
            r"input channels \(4\) must be divisible by groups \(3\)",
            out_channels=6,
            attrs=dict(groups=3),
        ),
    ),
    (
        "in_channels_not_divisible_by_deformable_groups",
        BadInput(
            r"input channels \(4\) must be divisible by deformable_groups \(3\)",
            attrs=dict(deformable_groups=3),
        ),
    ),
    (
        "out_channels_not_divisible_by_groups",
        BadInput(
            r"output channels \(5\) must be divisible by groups \(2\)",
            out_channels=5,
            attrs=dict(groups=2),
        ),
    ),
    ("kernel_h_zero", BadInput(r"kernel_h must be at least 1", attrs=dict(kernel_h=0))),
    ("kernel_w_negative", BadInput(r"kernel_w must be at least 1", attrs=dict(kernel_w=-1))),
    ("stride_h_zero", BadInput(r"stride_h must be at least 1", attrs=dict(stride_h=0))),
    ("stride_w_zero", BadInput(r"stride_w must be at least 1", attrs=dict(stride_w=0))),
    ("dilation_h_zero", BadInput(r"dilation_h must be at least 1", attrs=dict(dilation_h=0))),
    ("dilation_w_negative", BadInput(r"dilation_w must be at least 1", attrs=dict(dilation_w=-2))),
    ("groups_zero", BadInput(r"groups must be at least 1", attrs=dict(groups=0))),
    (
        "deformable_groups_zero",
        BadInput(r"deformable_groups must be at least 1", attrs=dict(deformable_groups=0)),
    ),
    ("pad_h_negative", BadInput(r"pad_h must not be negative", attrs=dict(pad_h=-1))),
    ("pad_w_negative", BadInput(r"pad_w must not be negative", attrs=dict(pad_w=-1))),
    (
        "pad_h_beyond_exact_float",
        BadInput(
            r"pad_h must be at most 16777216", input_shape=(0, 5, 5, 4), attrs=dict(pad_h=2**24 + 1)
        ),
    ),
    ("output_size_below_one", BadInput(r"output size would be", input_shape=(1, 2, 5, 4))),
    (
        "offset_spatial_mismatch",
        BadInput(r"offset spatial size 4x3", shapes=dict(offset=(1, 4, 3, 18))),
    ),
    ("offset_batch_mismatch", BadInput(r"offset batch size 2", shapes=dict(offset=(2, 3, 3, 18)))),
    (
        "offset_channels_wrong",
        BadInput(
            r"offset must have 2\*deformable_groups\*kernel_h\*kernel_w",
            shapes=dict(offset=(1, 3, 3, 16)),
        ),
    ),
    ("mask_spatial_mismatch", BadInput(r"mask spatial size 3x4", shapes=dict(mask=(1, 3, 4, 9)))),
    ("mask_batch_mismatch", BadInput(r"mask batch size 2", shapes=dict(mask=(2, 3, 3, 9)))),
    (
        "mask_channels_wrong",
        BadInput(
            r"mask must have deformable_groups\*kernel_h\*kernel_w", shapes=dict(mask=(1, 3, 3, 8))
        ),
    ),
    (
        "input_elements_overflow_int32",
        BadInput(
            r"input has 4294967296 elements per image",
            input_shape=(0, 65536, 65536, 1),
            out_channels=1,
            attrs=dict(kernel_h=1, kernel_w=1),
        ),
    ),
    (
        "output_elements_overflow_int32",
        BadInput(
            r"output has 2147483648 elements per image",
            input_shape=(0, 1024, 1024, 1),
            out_channels=2048,
            attrs=dict(kernel_h=1, kernel_w=1),
        ),
    ),
    (
        "offset_elements_overflow_int32",  # 1024 * 1024 * 2 * 33 * 33
        BadInput(
            r"offset has 2283798528 elements per image",
            input_shape=(0, 1024, 1024, 1),
            out_channels=1,
            attrs=dict(kernel_h=33, kernel_w=33, pad_h=16, pad_w=16),
        ),
    ),
    # kernel_h * kernel_w * Cin = 2^31 with a 1x1 output; only DCNv2BackwardWeight can be given
    # this without an 8 GiB weight tensor.
    (
        "weight_elements_overflow_int32",
        BadInput(
            r"weight has 2147483648 elements per image",
            input_shape=(0, 2, 2, 65536),
            out_channels=1,
            attrs=dict(kernel_h=128, kernel_w=256, pad_h=63, pad_w=127),
            ops=("backward_weight",),
        ),
    ),
    (
        "padded_height_beyond_exact_float",
        BadInput(
            r"input height and width plus padding must be at most 16777216",
            input_shape=(0, 2**24 - 1, 1, 1),
            attrs=dict(kernel_h=1, kernel_w=1, pad_h=1),
        ),
    ),
    (
        "padded_width_beyond_exact_float",
        BadInput(
            r"input height and width plus padding must be at most 16777216",
            input_shape=(0, 1, 2**24, 1),
            attrs=dict(kernel_h=1, kernel_w=1, pad_w=1),
        ),
    ),
]
