"""Command line of `python -m tensorflow_dcn.benchmark`: see the package docstring."""

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from tensorflow_dcn.benchmark import configs as cfg
from tensorflow_dcn.benchmark.data import OFFSET_STD_PIXELS, make_data
from tensorflow_dcn.benchmark.environment import environment, load_class, resolve_device
from tensorflow_dcn.benchmark.report import summary_lines, write_all, write_json
from tensorflow_dcn.benchmark.tf_runner import (
    TensorFlowRunner,
    output_errors,
    reset_between_configs,
)
from tensorflow_dcn.benchmark.timing import MAX_CALLS_PER_SYNC

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torchvision_worker.py")
RECORD_FIELDS = (
    "status",
    "error",
    "fwd_ms",
    "fwd_bwd_ms",
    "fwd_peak_extra_mib",
    "peak_extra_mib",
    "max_abs_err",
    "max_rel_err",
    "fwd_calls_per_sync",
    "fwd_bwd_calls_per_sync",
)


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m tensorflow_dcn.benchmark",
        description="Times tfdcn's DCNv2 against pure-TF layers, torchvision and conv2d.",
        epilog="The model-level benchmark (a segmentation model's training step): "
        "python -m tensorflow_dcn.benchmark model --help",
    )
    parser.add_argument(
        "--device", choices=("gpu", "cpu"), help="default: gpu when TensorFlow sees one, else cpu"
    )
    parser.add_argument(
        "--configs",
        help="comma-separated specs NxHxWxC[-k3][-s2][-p1][-dg4] or "
        "indices into the default list (GPU: "
        + ", ".join(cfg.GPU_CONFIGS)
        + "; CPU: "
        + ", ".join(cfg.CPU_CONFIGS)
        + "; --quick: "
        + ", ".join(cfg.QUICK_CONFIGS)
        + ")",
    )
    parser.add_argument(
        "--dtypes",
        help="comma-separated from fp32 (TF32 off), tf32 (float32 with "
        "TF32 on), fp16, bf16; default: all on GPU, fp32,bf16 on CPU",
    )
    parser.add_argument(
        "--impls",
        help="comma-separated from "
        + ", ".join(cfg.IMPLS)
        + "; default: all (baseline, baseline_xla only with --baseline)",
    )
    parser.add_argument(
        "--baseline",
        metavar="MODULE:CLASS",
        help="a Keras layer with weights kernel, bias, offset_kernel, offset_bias "
        "to time as impls 'baseline' and 'baseline_xla', e.g. "
        "iseg.layers.dcn_v2:DCNv2",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny configs and few repeats, for a smoke test"
    )
    parser.add_argument(
        "--repeats", type=int, help="timed rounds per measurement (default 10, CPU and quick 3)"
    )
    parser.add_argument(
        "--warmup", type=int, help="untimed calls first (default 3, CPU and quick 1)"
    )
    parser.add_argument(
        "--round-ms",
        type=float,
        help="target length of one timed round (default 50, CPU and quick 20)",
    )
    parser.add_argument(
        "--torch-python",
        default=sys.executable,
        help="Python with torch and torchvision for impl torchvision (default: this one)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--offset-std",
        type=float,
        default=OFFSET_STD_PIXELS,
        help="standard deviation of the offsets in pixels, independent per pixel and tap "
        f"(default {OFFSET_STD_PIXELS}; small values put neighbouring samples in the same "
        "input cells)",
    )
    parser.add_argument(
        "--out",
        default="bench_out",
        help="output folder for benchmark.md/.json/.png (default ./bench_out)",
    )
    args = parser.parse_args(argv)
    try:
        args.device = resolve_device(args.device)
        args.configs = cfg.select_configs(
            args.configs,
            cfg.QUICK_CONFIGS
            if args.quick
            else cfg.GPU_CONFIGS
            if args.device == "gpu"
            else cfg.CPU_CONFIGS,
        )
        args.dtypes = cfg.select_dtypes(
            args.dtypes, cfg.GPU_DTYPES if args.device == "gpu" else cfg.CPU_DTYPES
        )
        args.explicit_impls = args.impls is not None
        args.impls = cfg.select_impls(
            args.impls,
            [impl for impl in cfg.IMPLS if impl not in cfg.BASELINE_IMPLS or args.baseline],
        )
    except (ValueError, IndexError) as e:
        parser.error(str(e))
    if not 0 <= args.offset_std < float("inf"):
        parser.error(f"--offset-std must be finite and >= 0, got {args.offset_std}")
    uses_baseline = any(impl in cfg.BASELINE_IMPLS for impl in args.impls)
    if uses_baseline and not args.baseline:
        parser.error("impls baseline and baseline_xla need --baseline MODULE:CLASS")
    try:
        args.baseline_class = load_class(args.baseline) if uses_baseline else None
    except ValueError as e:
        parser.error(str(e))
    short = args.quick or args.device == "cpu"
    for name, short_default, default in (
        ("repeats", 3, 10),
        ("warmup", 1, 3),
        ("round_ms", 20.0, 50.0),
    ):
        if getattr(args, name) is None:
            setattr(args, name, short_default if short else default)
    return args


def _header(args, argv):
    return {
        "header": True,
        **environment(args.device),
        "baseline": args.baseline if args.baseline_class else None,
        "timing": {
            "warmup": args.warmup,
            "repeats": args.repeats,
            "target_ms": args.round_ms,
            "max_calls_per_sync": MAX_CALLS_PER_SYNC,
        },
        "configs": {config.name: config.as_dict() for config in args.configs},
        "offset_std": args.offset_std,
        "dtypes": [variant.key for variant in args.dtypes],
        "impls": list(args.impls),
        "skipped": {},
        "command": ["python", "-m", "tensorflow_dcn.benchmark"] + list(argv),
    }


def _run_torchvision(args, scratch):
    """Runs the worker over every config and dtype before TensorFlow takes GPU memory.

    Returns ({(config, dtype_key): record}, versions) or (None, why it is unavailable)."""
    cases = []
    for config in args.configs:
        path = os.path.join(scratch, f"{config.name}.npz")
        data = make_data(config, args.seed, args.offset_std)
        np.savez(path, **{k: data[k] for k in ("x", "offset", "mask", "kernel", "bias", "grad_y")})
        cases.append(
            {
                "config": config.name,
                "params": config.as_dict(),
                "data": path,
                "variants": [{"key": v.key, "dtype": v.dtype, "tf32": v.tf32} for v in args.dtypes],
            }
        )
    job = {
        "device": "cuda" if args.device == "gpu" else "cpu",
        "warmup": args.warmup,
        "repeats": args.repeats,
        "target_seconds": args.round_ms / 1e3,
        "cases": cases,
        "out_dir": scratch,
    }
    job_path = os.path.join(scratch, "torchvision_job.json")
    with open(job_path, "w") as f:
        json.dump(job, f)
    print(
        f"torchvision: running {len(cases) * len(args.dtypes)} measurements with "
        f"{args.torch_python}",
        file=sys.stderr,
        flush=True,
    )
    try:
        returncode = subprocess.run([args.torch_python, WORKER, job_path]).returncode
    except OSError as e:
        return None, f"cannot run {args.torch_python}: {e}"
    results_path = os.path.join(scratch, "results.json")
    if returncode != 0 or not os.path.exists(results_path):
        return None, f"the torchvision worker exited with code {returncode}"
    with open(results_path) as f:
        results = json.load(f)
    if "unavailable" in results:
        return None, results["unavailable"]
    return {(r["config"], r["dtype_key"]): r for r in results["records"]}, results["versions"]


def _progress(index, total, started, config, variant, impl, record):
    if record["status"] == "ok":
        summary = f"fwd {record['fwd_ms']:.3f} ms, fwd+bwd {record['fwd_bwd_ms']:.3f} ms"
        if record.get("peak_extra_mib") is not None:
            summary += f", peak {record['peak_extra_mib']:.1f} MiB"
        if record.get("max_rel_err") is not None:
            summary += f", rel err {record['max_rel_err']:.1e}"
    else:
        summary = f"{record['status']}: {record['error']}"
    print(
        f"[{index}/{total}, {time.perf_counter() - started:.0f}s] {config.name} {variant.key} "
        f"{impl}: {summary}",
        file=sys.stderr,
        flush=True,
    )


def _benchmark(args, header, scratch):
    torch_records = {}
    torch_missing = {"status": "error", "error": "no result from the torchvision worker"}
    if "torchvision" in args.impls:
        results, info = _run_torchvision(args, scratch)
        if results is not None:
            torch_records = results
            header.update(info)
        elif args.explicit_impls:
            torch_missing = {"status": "unavailable", "error": info}
        else:
            header["skipped"]["torchvision"] = info
            args.impls.remove("torchvision")
            print(f"torchvision skipped: {info}", file=sys.stderr, flush=True)
    groups = _tf32_groups(args.dtypes)
    if len(groups) == 1:
        return _measure_tensorflow(args, groups[0], torch_records, torch_missing, header, [])
    # TensorFlow's autotuning remembers a convolution's algorithm per shape, whatever the TF32
    # mode it was chosen in (on the H200, TF32 rows of conv2d ran the strict float32 algorithm
    # 2.1-3.2x slower, and the reverse order left TF32 in strict float32 rows): one process per
    # mode.
    records = []
    for variants in groups:
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        ) as process:
            records = process.submit(
                _measure_tensorflow, args, variants, torch_records, torch_missing, header, records
            ).result()
    configs = [c.name for c in args.configs]
    dtype_keys = [v.key for v in args.dtypes]
    records.sort(
        key=lambda r: (
            configs.index(r["config"]),
            dtype_keys.index(r["dtype_key"]),
            args.impls.index(r["impl"]),
        )
    )
    return records


def _tf32_groups(variants):
    """The variants with TF32 off, then the others (each group non-empty), in their order."""
    strict = [v for v in variants if v.tf32 is False]
    others = [v for v in variants if v.tf32 is not False]
    return [group for group in (strict, others) if group]


def _measure_tensorflow(args, variants, torch_records, torch_missing, header, earlier):
    """Measures the TensorFlow impls (and files torchvision's records) for `variants`; returns
    `earlier` plus the new records, the file benchmark.json kept up to date with both."""
    runner = TensorFlowRunner(
        "GPU:0" if args.device == "gpu" else "CPU:0",
        warmup=args.warmup,
        repeats=args.repeats,
        target_seconds=args.round_ms / 1e3,
        baseline_class=args.baseline_class,
    )
    tf32_default = tf.config.experimental.tensor_float_32_execution_enabled()
    total = len(args.configs) * len(args.dtypes) * len(args.impls)
    started, records = time.perf_counter(), list(earlier)
    for config in args.configs:
        data = make_data(config, args.seed, args.offset_std)
        references = {}
        for variant in variants:
            tf.config.experimental.enable_tensor_float_32_execution(variant.tf32 is not False)
            if variant.dtype not in references:
                references[variant.dtype] = runner.reference_outputs(config, variant, data)
            for impl in args.impls:
                if impl == "torchvision":
                    record = dict(torch_records.get((config.name, variant.key), torch_missing))
                    output_file = record.pop("output_file", None)
                    output = np.load(output_file) if output_file else None
                else:
                    record, output = runner.measure(impl, config, variant, data)
                level = "layer" if impl in cfg.LAYER_IMPLS else "op"
                reference = references[variant.dtype]
                try:
                    record["max_abs_err"], record["max_rel_err"] = output_errors(
                        output,
                        reference and reference["conv2d" if impl.startswith("conv2d") else level],
                    )
                except ValueError as e:
                    record.update(status="error", error=str(e))
                records.append(
                    {
                        "config": config.name,
                        "dtype": variant.dtype,
                        "tf32": variant.tf32,
                        "dtype_key": variant.key,
                        "impl": impl,
                        "level": level,
                        **{field: record.get(field) for field in RECORD_FIELDS},
                    }
                )
                _progress(len(records), total, started, config, variant, impl, records[-1])
            # The rows so far: a run cut off by a time limit keeps what it measured.
            os.makedirs(args.out, exist_ok=True)
            write_json(os.path.join(args.out, "benchmark.json"), header, records)
        reset_between_configs()
    tf.config.experimental.enable_tensor_float_32_execution(tf32_default)
    return records


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = _parse_args(argv)
    header = _header(args, argv)
    print(
        f"{len(args.configs)} config(s) x {len(args.dtypes)} dtype(s) x {len(args.impls)} "
        f"impl(s) on {header['device_name']}",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="tfdcn-benchmark-") as scratch:
        records = _benchmark(args, header, scratch)
    skipped_png = write_all(
        args.out, header, records, [v.key for v in args.dtypes], [c.name for c in args.configs]
    )
    written = ["benchmark.json"] + ([] if skipped_png else ["benchmark.png"])
    print("\n".join(summary_lines(records)))
    if skipped_png:
        print(f"benchmark.png skipped: {skipped_png}")
    print(f"Full report: {os.path.join(args.out, 'benchmark.md')} (also {', '.join(written)})")
    return 0
