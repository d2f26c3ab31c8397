"""How accurate the DCN's output and gradients are in each dtype: our op and the pure-TF DCN,
both under XLA as the model benchmark runs them, each against the pure-TF DCN in float64 on the
same operands rounded to the dtype (the benchmark's operands; `session.sh precision`, GPU 0).
It asks whether our half-precision gradients are less accurate than the pure-TF layer's (a bias
that would show in training).

    python3 layer_precision.py 16x64x64x64 16x32x32x64 --dtypes fp16,bf16,tf32

Per operand: relative L2 error ||a - ref|| / ||ref|| and the largest error over the largest
reference magnitude, for two scales of the upstream gradient: 1 and 2^-12 (about what reaches the
decoder's DCNs from a mean cross-entropy over 16 x 256 x 256 pixels under a loss scale of 2^15,
where half precision's subnormals start to matter). One JSON line per case, then a table.
"""

import argparse
import json

import numpy as np
import tensorflow as tf

import tensorflow_dcn as tfdcn
from tensorflow_dcn.benchmark.configs import DTYPES, parse_config
from tensorflow_dcn.benchmark.data import make_data
from tensorflow_dcn.benchmark.tf_runner import _op_steps, output_errors
from tensorflow_dcn.reference import deform_conv2d_reference

OPERANDS = ("x", "offset", "mask", "kernel", "bias")
RESULTS = ("output",) + OPERANDS
GRAD_SCALES = (1.0, 2.0**-12)
IMPLS = {"tfdcn": tfdcn.deform_conv2d, "pure_tf": deform_conv2d_reference}


def forward_and_grads(function, config, tensors, grad_y, jit_compile):
    """The output and the gradients of every operand (the benchmark's forward+backward step), as
    float64 numpy arrays."""

    def operator(x, offset, mask, kernel, bias):
        return function(x, offset, kernel, bias, mask, **config.geometry())

    _, forward_backward = _op_steps(operator, jit_compile)
    y, grads = forward_backward(*tensors, grad_y)
    return [t.numpy().astype(np.float64) for t in [y] + list(grads)]


def errors(values, reference):
    """Per result: relative L2 error, the benchmark's largest error over the largest reference
    magnitude, and whether every value is finite."""
    out = {}
    for name, a, ref in zip(RESULTS, values, reference):
        _, rel_max = output_errors(a, ref)
        out[name] = {
            "rel_l2": float(np.linalg.norm(a - ref) / np.linalg.norm(ref)),
            "rel_max": rel_max,
            "finite": bool(np.isfinite(a).all()),
        }
    return out


def run(config_name, dtype_keys):
    config = parse_config(config_name)
    data = make_data(config)

    lines = []
    for scale in GRAD_SCALES:
        references = {}  # per dtype: tf32 and fp32 round the operands alike
        for key in dtype_keys:
            variant = DTYPES[key]
            dtype = tf.as_dtype(variant.dtype)
            operands = [tf.constant(data[k], dtype) for k in OPERANDS]
            grad_y = tf.constant(data["grad_y"] * scale, dtype)
            # The reference takes the same (rounded) operands: what differs is the arithmetic.
            if variant.dtype not in references:
                tf.config.experimental.enable_tensor_float_32_execution(False)
                references[variant.dtype] = forward_and_grads(
                    deform_conv2d_reference,
                    config,
                    [tf.cast(t, tf.float64) for t in operands],
                    tf.cast(grad_y, tf.float64),
                    False,
                )
            reference = references[variant.dtype]
            tf.config.experimental.enable_tensor_float_32_execution(variant.tf32 is not False)
            for impl, function in IMPLS.items():
                values = forward_and_grads(function, config, operands, grad_y, True)
                record = {
                    "config": config_name,
                    "dtype": key,
                    "grad_scale": scale,
                    "impl": impl,
                    "errors": errors(values, reference),
                }
                print(json.dumps(record), flush=True)
                lines.append(record)
    return lines


def table(records):
    rows = [
        "| config | dtype | grad scale | impl | "
        + " | ".join(f"{n} rel L2 (max)" for n in RESULTS)
        + " |",
        "|---|---|---|---|" + "---|" * len(RESULTS),
    ]
    for r in records:
        cells = []
        for name in RESULTS:
            e = r["errors"][name]
            cell = f"{e['rel_l2']:.2e} ({e['rel_max']:.1e})"
            cells.append(cell if e["finite"] else cell + " non-finite")
        scale = "1" if r["grad_scale"] == 1.0 else "2^-12"
        rows.append(
            f"| {r['config']} | {r['dtype']} | {scale} | {r['impl']} | " + " | ".join(cells) + " |"
        )
    return "\n".join(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+", help="NxHxWxC[...] as the op benchmark's")
    parser.add_argument("--dtypes", default="fp16,bf16,tf32,fp32")
    args = parser.parse_args()
    records = []
    for name in args.configs:
        records += run(name, args.dtypes.split(","))
    print(table(records))


if __name__ == "__main__":
    main()
