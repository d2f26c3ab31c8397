"""Benchmark problems, dtypes and implementations, by name.

A config is named by its spec, `NxHxWxC` with optional `-k<kernel>`, `-s<stride>`, `-p<pad>` and
`-dg<deformable groups>` suffixes (defaults: 3x3 kernel, stride 1, pad (k-1)//2, dg 1); Cout = Cin.
Any spec works on the command line, not only the listed ones.
"""

import dataclasses
import re

# The user's earlier three, then ResNet / segmentation shapes, one with dg 4 and one with stride 2.
GPU_CONFIGS = (
    "2x32x32x64",
    "4x64x64x128",
    "2x128x128x256",
    "8x64x64x128",
    "8x32x32x256",
    "4x64x64x256",
    "2x128x128x256-dg4",
    "4x32x32x512",
    "8x64x64x128-s2",
)
# The CPU default (`make bench`): the first GPU config and a stride-4 level of a 256x256
# segmentation model (issue 13's CPU targets are set on these two).
CPU_CONFIGS = ("2x32x32x64", "1x64x64x128")
# --quick: tiny, for smoke tests; every implementation and dtype in seconds.
QUICK_CONFIGS = ("2x16x16x32", "2x16x16x32-s2-dg2")

_SPEC = re.compile(r"^(\d+)x(\d+)x(\d+)x(\d+)((?:-(?:k|s|p|dg)\d+)*)$")
_SUFFIX = re.compile(r"-(k|s|p|dg)(\d+)")


@dataclasses.dataclass(frozen=True)
class Config:
    batch: int
    height: int
    width: int
    channels: int
    kernel: int = 3
    stride: int = 1
    pad: int = 1
    deformable_groups: int = 1

    @property
    def name(self):
        name = f"{self.batch}x{self.height}x{self.width}x{self.channels}"
        if self.kernel != 3:
            name += f"-k{self.kernel}"
        if self.stride != 1:
            name += f"-s{self.stride}"
        if self.pad != (self.kernel - 1) // 2:
            name += f"-p{self.pad}"
        if self.deformable_groups != 1:
            name += f"-dg{self.deformable_groups}"
        return name

    @property
    def taps(self):
        return self.kernel * self.kernel

    @property
    def out_height(self):
        return (self.height + 2 * self.pad - self.kernel) // self.stride + 1

    @property
    def out_width(self):
        return (self.width + 2 * self.pad - self.kernel) // self.stride + 1

    def geometry(self):
        """Keyword arguments of `deform_conv2d` and the DCN layers for this stride, padding and
        deformable groups."""
        return dict(strides=self.stride, padding=self.pad, deformable_groups=self.deformable_groups)

    def op_result_elements(self):
        """Elements one op-level forward+backward returns: the output and the gradients of input,
        offset, mask, kernel and bias (Cout = Cin)."""
        pixels = self.batch * self.out_height * self.out_width
        samples = pixels * self.deformable_groups * self.taps
        return (
            pixels * self.channels
            + self.batch * self.height * self.width * self.channels
            + 3 * samples  # offset (dy, dx) and mask
            + self.taps * self.channels * self.channels
            + self.channels
        )

    def as_dict(self):
        return dict(dataclasses.asdict(self), out_height=self.out_height, out_width=self.out_width)


def parse_config(spec):
    match = _SPEC.match(spec.strip())
    if not match:
        raise ValueError(f"config {spec!r} is not NxHxWxC[-k<k>][-s<s>][-p<p>][-dg<g>]")
    batch, height, width, channels = (int(v) for v in match.groups()[:4])
    options = {key: int(value) for key, value in _SUFFIX.findall(match.group(5))}
    kernel = options.get("k", 3)
    config = Config(
        batch,
        height,
        width,
        channels,
        kernel=kernel,
        stride=options.get("s", 1),
        pad=options.get("p", (kernel - 1) // 2),
        deformable_groups=options.get("dg", 1),
    )
    if channels % config.deformable_groups:
        raise ValueError(f"config {spec!r}: C={channels} is not divisible by dg")
    if config.out_height < 1 or config.out_width < 1:
        raise ValueError(f"config {spec!r} has an empty output")
    return config


def select_configs(selection, defaults):
    """Configs from comma-separated specs or indices into `defaults` (None: all defaults)."""
    if not selection:
        return [parse_config(spec) for spec in defaults]
    configs = []
    for item in selection.split(","):
        item = item.strip()
        configs.append(parse_config(defaults[int(item)] if item.isdigit() else item))
    return configs


@dataclasses.dataclass(frozen=True)
class DtypeVariant:
    """A dtype as benchmarked: float32 is run with TF32 off and on."""

    key: str
    dtype: str
    tf32: bool | None  # None: not a float32 variant (half types run with TF32 left on)

    @property
    def label(self):
        return {"fp32": "float32", "tf32": "float32+TF32"}.get(self.key, self.dtype)

    @property
    def itemsize(self):
        return 4 if self.dtype == "float32" else 2


DTYPES = {
    "fp32": DtypeVariant("fp32", "float32", False),
    "tf32": DtypeVariant("tf32", "float32", True),
    "fp16": DtypeVariant("fp16", "float16", None),
    "bf16": DtypeVariant("bf16", "bfloat16", None),
}
_DTYPE_ALIASES = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
GPU_DTYPES = ("fp32", "tf32", "fp16", "bf16")
# TF32 is a GPU tensor-core mode; float16 is a GPU type too (TensorFlow's CPU convolutions fall
# back to slow Eigen code for it): ask for fp16 on a CPU with --dtypes.
CPU_DTYPES = ("fp32", "bf16")


def select_dtypes(selection, defaults):
    keys = selection.split(",") if selection else defaults
    variants = []
    for key in keys:
        key = _DTYPE_ALIASES.get(key.strip().lower(), key.strip().lower())
        if key not in DTYPES:
            raise ValueError(f"unknown dtype {key!r}; choose from {', '.join(DTYPES)}")
        variants.append(DTYPES[key])
    # Strict float32 first; the benchmark measures each TF32 mode in its own process
    # (cli._benchmark: TensorFlow's autotuning keeps an algorithm chosen in the other mode).
    return sorted(variants, key=lambda v: v.tf32 is not False)


# Op level: offsets and mask given. Layer level: offsets and mask predicted by the internal conv.
OP_IMPLS = ("tfdcn", "tfdcn_xla", "torchvision", "conv2d", "conv2d_xla")
LAYER_IMPLS = (
    "tfdcn_layer",
    "tfdcn_layer_xla",
    "pure_tf",
    "pure_tf_xla",
    "baseline",
    "baseline_xla",
)
IMPLS = OP_IMPLS + LAYER_IMPLS
# The op-level impls that run in this process (torchvision runs in its own).
TF_OP_IMPLS = ("tfdcn", "tfdcn_xla", "conv2d", "conv2d_xla")
# Timed inside tf.function(jit_compile=True), as Keras' default compile runs a model on a GPU.
XLA_IMPLS = ("tfdcn_xla", "conv2d_xla", "tfdcn_layer_xla", "pure_tf_xla", "baseline_xla")
# Impls that need --baseline.
BASELINE_IMPLS = ("baseline", "baseline_xla")
# Each comparison: (ours, other); speed-up = other's time / ours.
COMPARISONS = (
    ("tfdcn", "torchvision"),
    ("tfdcn_xla", "torchvision"),
    ("tfdcn_layer", "pure_tf"),
    ("tfdcn_layer", "pure_tf_xla"),
    ("tfdcn_layer_xla", "pure_tf_xla"),
    ("tfdcn_layer", "baseline"),
    ("tfdcn_layer_xla", "baseline_xla"),
    ("tfdcn", "conv2d"),
    ("tfdcn_xla", "conv2d_xla"),
)


def select_impls(selection, default):
    impls = [item.strip() for item in selection.split(",")] if selection else list(default)
    unknown = [impl for impl in impls if impl not in IMPLS]
    if unknown:
        raise ValueError(f"unknown impl(s) {', '.join(unknown)}; choose from {', '.join(IMPLS)}")
    return [impl for impl in IMPLS if impl in impls]
