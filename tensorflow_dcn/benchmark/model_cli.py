"""`python -m tensorflow_dcn.benchmark model`: a FaPN-style segmentation model's training step
(`model.fit` under Keras' default compile) with plain convolutions, the pure-TF DCNv2, ours and
a `--baseline` layer in the DCN's place, in float32, mixed_bfloat16 and mixed_float16.

Each (model, dtype) is measured in a process of its own (model_worker.py); this process picks
the device, runs them one after the other and writes benchmark.md / .json / .png into --out.
docs/benchmarks/README.md explains the method and the columns.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from tensorflow_dcn.benchmark.environment import environment, load_class, resolve_device
from tensorflow_dcn.benchmark.model_report import summary_lines, write_all, write_json
from tensorflow_dcn.benchmark.segmentation_model import (
    ALIGNED_STRIDES,
    OUTPUT_STRIDE,
    dcn_arguments,
)

MODELS = ("conv", "pure_tf", "tfdcn", "baseline")
DTYPES = ("fp32", "bf16", "fp16")
# TensorFlow's CPU convolutions have no fast half-precision backward: mixed precision on a CPU
# times the missing kernels, not the DCN (ask with --dtypes).
CPU_DTYPES = ("fp32",)
RECORD_FIELDS = (
    "status",
    "error",
    "policy",
    "jit_compile",
    "optimizer",
    "tf32",
    "parameters",
    "step_ms",
    "epoch_step_ms",
    "images_per_s",
    "peak_mib",
    "memory_kind",
    "loss_first",
    "loss_last",
    "epoch_losses",
    "trained",
    "steps",
    "warmup_s",
    "log_tail",
)
# GPU: sized like issue 10's H200 measurement. CPU (and --quick): about 10 s per model on 2
# cores, most of it TensorFlow's start and tracing; large enough that the DCNs' cost shows.
SIZES = {
    "gpu": dict(batch=16, image_size=256, channels=64, warmup_steps=10, steps=20, epochs=5),
    "cpu": dict(batch=2, image_size=128, channels=32, warmup_steps=2, steps=10, epochs=3),
}
WORKER_MODULE = "tensorflow_dcn.benchmark.model_worker"
LOG_TAIL_LINES = 20


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m tensorflow_dcn.benchmark model",
        description="Times a FaPN-style segmentation model's training step (model.fit, Keras' "
        "default compile) with plain Conv2D, the pure-TF DCNv2, tfdcn.DCNv2 and a --baseline "
        "layer aligning its decoder features.",
    )
    parser.add_argument(
        "--device", choices=("gpu", "cpu"), help="default: gpu when TensorFlow sees one, else cpu"
    )
    parser.add_argument(
        "--models",
        help="comma-separated from "
        + ", ".join(MODELS)
        + "; default: all (baseline only with --baseline)",
    )
    parser.add_argument(
        "--baseline",
        metavar="MODULE:CLASS",
        help="a DCNv2 Keras layer taking use_custom_offset=True and called on "
        "[x, offset_source], e.g. iseg.layers.dcn_v2:DCNv2",
    )
    parser.add_argument(
        "--dtypes",
        help="comma-separated from fp32 (float32; on a GPU with TF32 "
        "on, TensorFlow's default), bf16 (mixed_bfloat16), fp16 (mixed_float16, "
        "loss scaling as Keras adds it); default: all on GPU, fp32 on CPU",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the CPU sizes and step counts on any device (a smoke test)",
    )
    gpu, cpu = SIZES["gpu"], SIZES["cpu"]
    for name, what in (
        ("batch", "images per step"),
        ("image_size", f"side of the square images, a multiple of {OUTPUT_STRIDE}"),
        ("channels", "decoder width; the encoder has 1, 2, 4, 8 times as many"),
        ("warmup_steps", "steps of the untimed first fit (tracing, compilation)"),
        ("steps", "steps per timed epoch"),
        ("epochs", "timed epochs; ms/step is the median over them"),
    ):
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            help=f"{what} (default GPU {gpu[name]}, CPU and --quick {cpu[name]})",
        )
    parser.add_argument(
        "--jit-compile",
        choices=("auto", "true", "false"),
        default="auto",
        help="model.compile's jit_compile (default auto: Keras' default, XLA on "
        "a GPU when every layer supports it, never on a CPU)",
    )
    parser.add_argument(
        "--tf32",
        choices=("on", "off"),
        default="on",
        help="float32 matmuls and convolutions in TF32 (tf.config.experimental."
        "enable_tensor_float_32_execution; default on, TensorFlow's default on a GPU)",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="tf.config.experimental.enable_op_determinism() in every model's process: "
        "bit-reproducible steps, slower (to compare the models' losses step by step)",
    )
    parser.add_argument(
        "--norm",
        choices=("batch", "group"),
        default="batch",
        help="the network's normalization layers (default batch)",
    )
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's (default 1e-3)")
    parser.add_argument(
        "--distinct-batches",
        type=int,
        default=4,
        help="distinct batches of synthetic images, cycled (default 4)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800,
        help="seconds one measurement may take (default 1800)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        default=os.path.join("bench_out", "model"),
        help="output folder for benchmark.md/.json/.png (default ./bench_out/model)",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="measure nothing: one report in --out from the benchmark.json of "
        "several runs of the same model and training settings (e.g. one run "
        "per --dtypes where a command has a time limit)",
    )
    args = parser.parse_args(argv)
    if args.merge:
        return args
    try:
        args.device = resolve_device(args.device)
        args.models = _select(
            args.models, [m for m in MODELS if m != "baseline" or args.baseline], MODELS, "model"
        )
        args.dtypes = _select(
            args.dtypes, DTYPES if args.device == "gpu" else CPU_DTYPES, DTYPES, "dtype"
        )
        if "baseline" in args.models:
            if not args.baseline:
                raise ValueError("model baseline needs --baseline MODULE:CLASS")
            dcn_arguments(load_class(args.baseline))  # fails early on an unusable class
    except ValueError as e:
        parser.error(str(e))
    sizes = SIZES["cpu" if args.quick or args.device == "cpu" else "gpu"]
    for name, default in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.image_size % OUTPUT_STRIDE:
        parser.error(f"--image-size must be a multiple of {OUTPUT_STRIDE}")
    return args


def _select(selection, default, known, what):
    items = [item.strip() for item in selection.split(",")] if selection else list(default)
    unknown = [item for item in items if item not in known]
    if unknown:
        raise ValueError(f"unknown {what}(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return [item for item in known if item in items]


def _header(args, argv):
    return {
        "header": True,
        "benchmark": "model",
        **environment(args.device),
        "baseline": args.baseline if "baseline" in args.models else None,
        "model": {
            "name": "fapn_segmentation",
            "batch": args.batch,
            "image_size": args.image_size,
            "channels": args.channels,
            "norm": args.norm,
            "aligned_strides": list(ALIGNED_STRIDES),
            "learning_rate": args.learning_rate,
            "distinct_batches": args.distinct_batches,
        },
        "training": {
            "jit_compile": args.jit_compile,
            "tf32": args.tf32,
            "deterministic": args.deterministic,
            "steps_per_execution": 1,
            "warmup_steps": args.warmup_steps,
            "steps": args.steps,
            "epochs": args.epochs,
        },
        "models": list(args.models),
        "dtypes": list(args.dtypes),
        "command": ["python", "-m", "tensorflow_dcn.benchmark", "model"] + list(argv),
    }


def _run_worker(job, scratch, timeout):
    """The worker's record; on a crash or a timeout an error record with the end of its log."""
    name = f"{job['model']}-{job['dtype_key']}"
    job_path = os.path.join(scratch, f"{name}.job.json")
    result_path = os.path.join(scratch, f"{name}.result.json")
    with open(job_path, "w") as f:
        json.dump(job, f)
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if job["device"] == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # Keras then resolves jit_compile as on a CPU machine
    try:
        result = subprocess.run(
            [sys.executable, "-m", WORKER_MODULE, job_path, result_path],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )
        log, returncode = result.stdout + result.stderr, result.returncode
    except subprocess.TimeoutExpired as e:
        output = (e.stdout or b"") + (e.stderr or b"")
        log = output.decode(errors="replace") if isinstance(output, bytes) else output
        return {
            "status": "error",
            "error": f"timed out after {timeout:g} s",
            "log_tail": log.splitlines()[-LOG_TAIL_LINES:],
        }
    if returncode == 0 and os.path.exists(result_path):
        with open(result_path) as f:
            record = json.load(f)
        if record["status"] != "ok":
            record["log_tail"] = log.splitlines()[-LOG_TAIL_LINES:]
        return record
    lines = log.splitlines()
    reason = (
        "killed (out of host memory?)" if returncode in (-9, 137) else f"exit code {returncode}"
    )
    return {
        "status": "oom" if returncode in (-9, 137) else "error",
        "error": f"the worker died: {reason}; last line: {lines[-1] if lines else ''}",
        "log_tail": lines[-LOG_TAIL_LINES:],
    }


def _progress(index, total, started, job, record):
    if record["status"] == "ok":
        summary = (
            f"{record['step_ms']:.2f} ms/step, {record['images_per_s']:.1f} images/s, "
            f"peak {record['peak_mib']:.0f} MiB, loss {record['loss_first']:.3f} -> "
            f"{record['loss_last']:.3f}, XLA {'on' if record['jit_compile'] else 'off'}, "
            f"warm-up {record['warmup_s']:.1f} s"
        )
    else:
        summary = f"{record['status']}: {record['error']}"
    print(
        f"[{index}/{total}, {time.perf_counter() - started:.0f}s] {job['dtype_key']} "
        f"{job['model']}: {summary}",
        file=sys.stderr,
        flush=True,
    )


def _merged(paths, argv):
    """(header, records) of several runs' benchmark.json: the first run's header, the union of
    the models and dtypes, every run's command; ValueError unless all ran the same model and
    training settings on the same device."""
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    header = dict(runs[0][0])
    for run, path in zip(runs[1:], paths[1:]):
        for key in (
            "benchmark",
            "device",
            "device_name",
            "model",
            "training",
            "tensorflow",
            "tensorflow_dcn",
            "baseline",
        ):
            if run[0].get(key) != header.get(key):
                raise ValueError(
                    f"--merge: {path} differs from {paths[0]} in {key!r}: "
                    f"{run[0].get(key)!r} vs {header.get(key)!r}"
                )
    records = {}
    for run in runs:
        for record in run[1:]:
            records[(record["dtype_key"], record["model"])] = record  # a later run's wins
    header.update(
        models=[m for m in MODELS if any(m in run[0]["models"] for run in runs)],
        dtypes=[d for d in DTYPES if any(d in run[0]["dtypes"] for run in runs)],
        command=["python", "-m", "tensorflow_dcn.benchmark", "model"] + list(argv),
        merged_commands=[run[0]["command"] for run in runs],
    )
    ordered = [
        records[(d, m)] for d in header["dtypes"] for m in header["models"] if (d, m) in records
    ]
    return header, ordered


def _report(out, header, records):
    skipped_png = write_all(out, header, records)
    print("\n".join(summary_lines(header, records)))
    if skipped_png:
        print(f"benchmark.png skipped: {skipped_png}")
    written = ["benchmark.json"] + ([] if skipped_png else ["benchmark.png"])
    print(f"Full report: {os.path.join(out, 'benchmark.md')} (also {', '.join(written)})")


def make_job(args, model, dtype_key):
    """The job of one measurement (model_worker's input) from the parsed arguments."""
    return {
        "model": model,
        "dtype_key": dtype_key,
        "device": args.device,
        "baseline": args.baseline,
        "jit_compile": args.jit_compile,
        "tf32": args.tf32,
        "deterministic": args.deterministic,
        "norm": args.norm,
        "learning_rate": args.learning_rate,
        "distinct_batches": args.distinct_batches,
        "seed": args.seed,
        **{name: getattr(args, name) for name in SIZES["gpu"]},
    }


def main(argv):
    args = _parse_args(argv)
    if args.merge:
        try:
            header, records = _merged(args.merge, argv)
        except (OSError, ValueError, KeyError, IndexError) as e:
            print(f"python -m tensorflow_dcn.benchmark model: error: {e}", file=sys.stderr)
            return 2
        _report(args.out, header, records)
        return 0
    header = _header(args, argv)
    total = len(args.models) * len(args.dtypes)
    print(
        f"model-level: {len(args.models)} model(s) x {len(args.dtypes)} dtype(s), batch "
        f"{args.batch}, {args.image_size}x{args.image_size}, channels {args.channels}, on "
        f"{header['device_name']}; one process per measurement",
        file=sys.stderr,
        flush=True,
    )
    records, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tfdcn-model-benchmark-") as scratch:
        for dtype_key in args.dtypes:
            for model in args.models:
                job = make_job(args, model, dtype_key)
                record = _run_worker(job, scratch, args.timeout)
                records.append(
                    {
                        "model": model,
                        "dtype_key": dtype_key,
                        **{field: record.get(field) for field in RECORD_FIELDS},
                    }
                )
                _progress(len(records), total, started, job, records[-1])
                # The rows so far, so that a run cut off by a time limit keeps what it measured
                # (--merge reads them).
                os.makedirs(args.out, exist_ok=True)
                write_json(os.path.join(args.out, "benchmark.json"), header, records)
    _report(args.out, header, records)
    return 0
