"""Where the model-level benchmark's training step spends the GPU's time: every kernel of a few
profiled steps (TensorFlow's profiler, through CUPTI), summed per kernel and per kind, per model
and dtype, each in a process of its own (the model-level benchmark's model, compile and data).

    python3 scripts/gpu/model_kernels.py --models conv,tfdcn,pure_tf --dtypes fp32 --out DIR

Writes DIR/<model>-<dtype>.json (kernel name -> launches, microseconds per step) and prints, per
run, the kinds' totals per step and the costliest kernels.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

# Kinds of kernels, by the first pattern their name contains (lowercase; mangled or not).
KINDS = (
    ("dcn", ("tensorflow_dcn",)),
    ("memcpy/memset", ("memcpy", "memset")),
    ("transpose/copy", ("transpose", "copy")),
    (
        "conv/gemm",
        ("cudnn", "xmma", "cutlass", "gemm", "conv", "implicit", "dgrad", "wgrad", "fprop"),
    ),
    ("reduction", ("reduce", "reduction")),
    ("other (XLA fusions, elementwise)", ("",)),
)


DERIVED_LINES = {
    "XLA Modules",
    "XLA Ops",
    "XLA TraceMe",
    "TensorFlow Ops",
    "TensorFlow Name Scope",
    "Steps",
    "Source code",
    "Launch Stats",
}


def kind_of(name):
    lower = name.lower()
    return next(kind for kind, patterns in KINDS if any(p in lower for p in patterns))


def gpu_kernels(logdir):
    """{kernel name: [launches, total microseconds]} of the GPU streams in the profile."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    kernels = {}
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            if not plane.name.startswith("/device:GPU:"):
                continue
            # The streams' own events ("Stream #N..."); the derived lines (XLA Ops, TensorFlow
            # Ops, Steps...) repeat them. Without such names: every line but the derived ones.
            streams = [line for line in plane.lines if line.name.startswith("Stream")]
            if not streams:
                streams = [line for line in plane.lines if line.name not in DERIVED_LINES]
            for line in streams:
                for event in line.events:
                    name = plane.event_metadata[event.metadata_id].name
                    entry = kernels.setdefault(name, [0, 0.0])
                    entry[0] += 1
                    entry[1] += event.duration_ps / 1e6
    return kernels


def profile_one(model, dtype, steps, warmup_steps, out):
    import tensorflow as tf

    from tensorflow_dcn.benchmark import model_cli, model_worker

    args = model_cli._parse_args(["--models", model, "--dtypes", dtype])
    keras_model, dataset = model_worker.build(model_cli.make_job(args, model, dtype))
    fit = dict(epochs=1, verbose=0, shuffle=False)
    keras_model.fit(dataset, steps_per_epoch=warmup_steps, **fit)  # compile, autotune
    tf.test.experimental.sync_devices()
    logdir = os.path.join(out, f"trace-{model}-{dtype}")
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    keras_model.fit(dataset, steps_per_epoch=steps, **fit)
    tf.test.experimental.sync_devices()
    wall_ms = (time.perf_counter() - start) * 1e3 / steps
    tf.profiler.experimental.stop()
    kernels = {
        name: [count / steps, us / steps] for name, (count, us) in gpu_kernels(logdir).items()
    }
    shutil.rmtree(logdir)
    result = {
        "model": model,
        "dtype": dtype,
        "steps": steps,
        "jit_compile": bool(keras_model.jit_compile),
        "wall_ms_per_step_profiled": wall_ms,
        "kernels": kernels,
    }
    with open(os.path.join(out, f"{model}-{dtype}.json"), "w") as f:
        json.dump(result, f, indent=1)


def report(result, top):
    kernels = result["kernels"]
    busy = sum(us for _, us in kernels.values())
    print(
        f"\n## {result['model']} {result['dtype']} (XLA {'on' if result['jit_compile'] else 'off'})"
        f": GPU busy {busy / 1e3:.2f} ms per step, wall {result['wall_ms_per_step_profiled']:.2f}"
        f" ms per step while profiled, {sum(n for n, _ in kernels.values()):.0f} launches\n"
    )
    totals = {}
    for name, (count, us) in kernels.items():
        total = totals.setdefault(kind_of(name), [0.0, 0.0])
        total[0] += count
        total[1] += us
    print("| kind | launches/step | ms/step |\n|---|--:|--:|")
    for kind, _ in KINDS:
        if kind in totals:
            print(f"| {kind} | {totals[kind][0]:.0f} | {totals[kind][1] / 1e3:.3f} |")
    print(f"\n| kernel (top {top}) | kind | launches/step | us/step |\n|---|---|--:|--:|")
    for name, (count, us) in sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"| `{name[:110]}` | {kind_of(name)} | {count:.0f} | {us:.1f} |")
    sys.stdout.flush()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="conv,tfdcn,pure_tf")
    parser.add_argument("--dtypes", default="fp32")
    parser.add_argument("--steps", type=int, default=10, help="profiled steps")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=25, help="kernels listed per run")
    parser.add_argument("--out", required=True)
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.one:
        profile_one(*args.one, args.steps, args.warmup_steps, args.out)
        return
    for dtype in args.dtypes.split(","):
        for model in args.models.split(","):
            command = [sys.executable, __file__, "--one", model, dtype]
            command += ["--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps)]
            done = subprocess.run(command + ["--out", args.out], check=False)
            path = os.path.join(args.out, f"{model}-{dtype}.json")
            if done.returncode != 0 or not os.path.exists(path):
                print(f"\n## {model} {dtype}: failed (rc {done.returncode})", flush=True)
                continue
            with open(path) as f:
                report(json.load(f), args.top)


if __name__ == "__main__":
    main()
