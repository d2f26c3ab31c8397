#!/usr/bin/env python
"""Long-run and thread-safety check of `tfdcn.deform_conv2d`: memory stays flat, threads agree.

1. Long run: --steps training steps (a tf.function, XLA-compiled with --jit-compile: new random
   input, offsets and mask every step, gradients with respect to all five operands, an SGD update
   of the weight and bias) of one configuration, sampling every
   --sample-every steps the GPU allocator's current bytes and its peak since the previous sample
   (tf.config.experimental.get_memory_info / reset_memory_stats; GPU only) and the host RSS
   (psutil, else /proc/self/status VmRSS), whether the step's checksum is finite, and the time
   per step since the previous sample. Flat means: the largest sample of the last quarter of
   the steps exceeds the largest of the second quarter by at most --gpu-tol-mib (GPU) or
   --rss-tol-mib (host). The first quarter is warm-up. Steady means: over the second half, no
   sampling window is slower than --steady-tol times the median window.
2. Thread test: --threads Python threads each make --calls-per-thread forward+backward calls on
   their own inputs, all at once (even calls through a shared tf.function, odd calls eagerly),
   then the same calls are made one after another and the results compared (with --steps 0 the
   threads start from a cold process). The forward and the bias gradient are computed in a
   fixed order on every device and must match exactly. On the GPU, outside determinism mode,
   the input/offset/mask gradients and (up to 128 output channels per group) the weight
   gradient are accumulated with float atomics, whose order varies from run to run: they must
   match within --thread-rtol (relative to the tensor's largest magnitude;
   default by dtype). With --deterministic (tf.config.experimental.enable_op_determinism(): the
   op then sums them in a fixed order) and on the CPU every tensor must match exactly.

    # CPU, seconds:
    PYTHONPATH=. python examples/long_run.py
    # GPU (defaults there: 8x64x64x128, 10000 steps):
    python examples/long_run.py --dtype float16 --json-out long_fp16.json

Exit status 1 (and the reasons on stderr) when memory grows or a thread result differs.
"""

import argparse
import json
import sys
import threading
import time

import numpy as np

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}
# Relative tolerance (to the tensor's largest magnitude) for gradients summed with float atomics.
ATOMIC_RTOL = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 5e-2}
EXACT_ALWAYS = ("output", "grad_bias")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--device", default=None, help="e.g. GPU:0 or CPU:0 (default: GPU:0 when there is a GPU)"
    )
    parser.add_argument(
        "--config",
        default=None,
        help="NxHxWxC of the input (default 8x64x64x128 on a GPU, 2x16x16x16 on the CPU)",
    )
    parser.add_argument("--filters", type=int, default=None, help="output channels (default C)")
    parser.add_argument("--kernel-size", type=int, default=3)
    parser.add_argument("--deformable-groups", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="long-run steps (default 10000 on a GPU, 1000 on the CPU; 0 skips)",
    )
    parser.add_argument(
        "--sample-every",
        type=int,
        default=None,
        help="memory sample period in steps (default steps/100, at least 1)",
    )
    parser.add_argument(
        "--jit-compile",
        action="store_true",
        help="XLA-compile the training step (tf.function(jit_compile=True))",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=1e-4,
        help="SGD step of the weight and bias in the long run",
    )
    parser.add_argument(
        "--steady-tol",
        type=float,
        default=1.5,
        help="slowest second-half window / median window allowed",
    )
    parser.add_argument("--gpu-tol-mib", type=float, default=1.0)
    parser.add_argument("--rss-tol-mib", type=float, default=32.0)
    parser.add_argument("--threads", type=int, default=4, help="0 skips the thread test")
    parser.add_argument("--calls-per-thread", type=int, default=6)
    parser.add_argument(
        "--thread-config", default=None, help="NxHxWxC for the thread test (default: --config)"
    )
    parser.add_argument(
        "--thread-rtol",
        type=float,
        default=None,
        help="tolerance for atomically accumulated gradients (default by dtype: "
        + ", ".join(f"{k} {v:g}" for k, v in ATOMIC_RTOL.items())
        + ")",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="tf.config.experimental.enable_op_determinism(): all thread results "
        "must then match exactly",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", help="write a JSON summary here")
    args = parser.parse_args(argv)
    args.dtype = DTYPES[args.dtype]
    return args


def parse_config(text):
    try:
        dims = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise SystemExit(f"config must be NxHxWxC with positive sizes, got {text!r}")
    return dims


def host_rss_bytes():
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    return None


class Problem:
    """One DCNv2 configuration: fixed weights, fresh random operands per step or call."""

    def __init__(self, tf, tfdcn, dims, filters, kernel_size, deformable_groups, dtype, seed):
        self.tf, self.tfdcn = tf, tfdcn
        self.dims, self.dtype = dims, tf.as_dtype(dtype)
        n, h, w, c = dims
        self.filters = filters or c
        self.kernel_size, self.dg = kernel_size, deformable_groups
        taps = kernel_size * kernel_size
        self.offset_shape = (n, h, w, 2 * deformable_groups * taps)
        self.mask_shape = (n, h, w, deformable_groups * taps)
        rng = np.random.default_rng(seed)
        scale = 1.0 / np.sqrt(taps * c)
        self.weight = tf.Variable(
            rng.uniform(-scale, scale, (kernel_size, kernel_size, c, self.filters)).astype(dtype)
        )
        self.bias = tf.Variable(rng.uniform(-0.1, 0.1, self.filters).astype(dtype))
        self.seed = seed

    def operands(self, key):
        """Input, offset (about +-2 pixels) and mask in (0, 1) from the integer pair `key`."""
        tf = self.tf
        seed = tf.stack([tf.cast(key[0], tf.int32), tf.cast(key[1], tf.int32) + self.seed * 7919])
        x = tf.random.stateless_uniform(self.dims, seed, -1.0, 1.0)
        offset = 2.0 * tf.random.stateless_normal(self.offset_shape, seed + [0, 1])
        mask = tf.sigmoid(tf.random.stateless_normal(self.mask_shape, seed + [0, 2]))
        return [tf.cast(t, self.dtype) for t in (x, offset, mask)]

    def forward_backward(self, key):
        """Output and the gradients of sum(output * cotangent) w.r.t. every operand."""
        tf = self.tf
        x, offset, mask = self.operands(key)
        with tf.GradientTape() as tape:
            tape.watch([x, offset, mask])
            y = self.tfdcn.deform_conv2d(
                x,
                offset,
                self.weight,
                bias=self.bias,
                mask=mask,
                padding="same",
                deformable_groups=self.dg,
            )
            # A fixed pseudo-random cotangent, so that no gradient is trivially structured.
            cotangent = tf.cast(
                tf.random.stateless_uniform(tf.shape(y), [17, 23], -1.0, 1.0), y.dtype
            )
            loss = tf.reduce_sum(tf.cast(y * cotangent, tf.float32))
        grads = tape.gradient(loss, [x, offset, mask, self.weight, self.bias])
        return dict(
            zip(
                ("output", "grad_input", "grad_offset", "grad_mask", "grad_weight", "grad_bias"),
                [y] + grads,
            )
        )


# ----------------------------------------------------------------------------------------------
# Long run


def long_run(tf, problem, steps, sample_every, device, on_gpu, jit_compile, learning_rate):
    # The step index lives in a variable, as an optimizer's iteration count does: a fresh
    # tf.constant per call would itself grow TensorFlow's memory (host and GPU, about 256 bytes
    # a call, with or without our op), which this run must not mistake for a leak. int64, as
    # Keras' iteration count: TensorFlow keeps an int32 variable in host memory, which an
    # XLA-compiled GPU step cannot read.
    with tf.device(device):
        step_index = tf.Variable(0, dtype=tf.int64, trainable=False)

    @tf.function(jit_compile=jit_compile)
    def step():
        step_index.assign_add(1)
        results = problem.forward_backward(tf.stack([step_index, 0]))
        lr = tf.cast(learning_rate, problem.dtype)
        problem.weight.assign_sub(lr * results["grad_weight"])
        problem.bias.assign_sub(lr * results["grad_bias"])
        # One scalar keeps every gradient alive without copying them to the host.
        return tf.add_n([tf.reduce_sum(tf.cast(v, tf.float32)) for v in results.values()])

    gpu = "GPU:" + device.split(":")[-1] if on_gpu else None
    samples = []

    def sample(step_index, checksum):
        value = float(checksum.numpy())  # waits for the device
        now = time.perf_counter()
        record = {
            "step": step_index,
            "rss_mib": host_rss_bytes() / 2**20,
            "finite": bool(np.isfinite(value)),
        }
        if samples:
            record["ms_per_step"] = (
                1e3 * (now - sample.last_time) / (step_index - samples[-1]["step"])
            )
        sample.last_time = now
        if gpu:
            info = tf.config.experimental.get_memory_info(gpu)
            record["gpu_current_mib"] = info["current"] / 2**20
            record["gpu_peak_mib"] = info["peak"] / 2**20  # since the previous sample
            tf.config.experimental.reset_memory_stats(gpu)
        samples.append(record)

    with tf.device(device):
        checksum = step()
        if gpu:
            tf.config.experimental.reset_memory_stats(gpu)
        sample(0, checksum)
        start = time.perf_counter()
        for i in range(1, steps + 1):
            checksum = step()
            if i % sample_every == 0 or i == steps:
                sample(i, checksum)
                if (i // sample_every) % 10 == 0 or i == steps:
                    last = samples[-1]
                    print(
                        f"step {i}/{steps}: rss {last['rss_mib']:.1f} MiB"
                        + (
                            f", GPU current {last['gpu_current_mib']:.1f} MiB, peak "
                            f"{last['gpu_peak_mib']:.1f} MiB"
                            if gpu
                            else ""
                        ),
                        flush=True,
                    )
        seconds = time.perf_counter() - start
    return samples, seconds


def steadiness(samples, steps, tolerance):
    """The slowest sampling window of the second half against the median window."""
    windows = [s["ms_per_step"] for s in samples if s["step"] > steps / 2 and "ms_per_step" in s]
    if len(windows) < 2:
        return {"steady": None, "reason": "too few samples (need steps >= 4 * sample-every)"}
    median = float(np.median(windows))
    ratio = max(windows) / median
    return {
        "median_ms_per_step": median,
        "slowest_ms_per_step": max(windows),
        "slowest_over_median": ratio,
        "tolerance": tolerance,
        "steady": bool(ratio <= tolerance),
    }


def flatness(samples, steps, key, tolerance_mib):
    """Largest sample of the last quarter vs the largest of the second quarter."""
    second = [s[key] for s in samples if steps / 4 < s["step"] <= steps / 2]
    last = [s[key] for s in samples if s["step"] > 3 * steps / 4]
    if not second or not last:
        return {"flat": None, "reason": "too few samples (need steps >= 4 * sample-every)"}
    growth = max(last) - max(second)
    half = [s for s in samples if s["step"] > steps / 2]
    slope = None
    if len(half) >= 2:
        xs = np.array([s["step"] for s in half], float)
        ys = np.array([s[key] for s in half], float)
        slope = float(np.polyfit(xs, ys, 1)[0] * 1024)  # KiB per step
    return {
        "second_quarter_max_mib": max(second),
        "last_quarter_max_mib": max(last),
        "growth_mib": growth,
        "tolerance_mib": tolerance_mib,
        "second_half_slope_kib_per_step": slope,
        "flat": bool(growth <= tolerance_mib),
    }


# ----------------------------------------------------------------------------------------------
# Threads


def thread_test(tf, problem, threads, calls, device):
    graph_step = tf.function(problem.forward_backward)

    def call(t, m):
        key = tf.constant([1000 + t, m])
        fn = graph_step if m % 2 == 0 else problem.forward_backward
        with tf.device(device):
            return {k: v.numpy() for k, v in fn(key).items()}

    concurrent, errors = {}, []
    barrier = threading.Barrier(threads)

    def worker(t):
        try:
            barrier.wait()
            for m in range(calls):
                concurrent[(t, m)] = call(t, m)
        except Exception as e:  # reported, not swallowed
            errors.append(f"thread {t}: {type(e).__name__}: {e}")

    start = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    seconds = time.perf_counter() - start
    # The threads go first: with --steps 0 they start from a cold process (first launches,
    # tf.function tracing), where thread-safety bugs are likeliest.
    sequential = {(t, m): call(t, m) for t in range(threads) for m in range(calls)}

    diffs = {}
    for key, reference in sequential.items():
        if key not in concurrent:
            continue  # its thread failed: reported in errors
        for name, expected in reference.items():
            got = concurrent[key][name].astype(np.float64)
            expected = expected.astype(np.float64)
            scale = float(np.max(np.abs(expected))) or 1.0
            entry = diffs.setdefault(
                name, {"max_abs_diff": 0.0, "max_rel_diff": 0.0, "mismatched_calls": 0}
            )
            diff = float(np.max(np.abs(got - expected))) if expected.size else 0.0
            entry["max_abs_diff"] = max(entry["max_abs_diff"], diff)
            entry["max_rel_diff"] = max(entry["max_rel_diff"], diff / scale)
            entry["mismatched_calls"] += int(diff != 0.0)
    # Distinct inputs must give distinct results, or the comparison proves little.
    outputs = [sequential[(t, 0)]["output"] for t in range(threads)]
    distinct = all(not np.array_equal(outputs[0], o) for o in outputs[1:])
    return diffs, errors, seconds, distinct


# ----------------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf

    import tensorflow_dcn as tfdcn

    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    device = args.device or ("GPU:0" if has_gpu else "CPU:0")
    on_gpu = device.upper().startswith("GPU")
    if on_gpu and not has_gpu:
        raise SystemExit(f"--device {device}: no GPU visible")
    dims = parse_config(args.config or ("8x64x64x128" if on_gpu else "2x16x16x16"))
    thread_dims = parse_config(args.thread_config) if args.thread_config else dims
    steps = args.steps if args.steps is not None else (10000 if on_gpu else 1000)
    sample_every = args.sample_every or max(1, steps // 100)
    rtol = args.thread_rtol if args.thread_rtol is not None else ATOMIC_RTOL[args.dtype]
    exact_everything = args.deterministic or not on_gpu
    print(
        f"TensorFlow {tf.__version__}; device {device}; dtype {args.dtype}; config "
        f"{'x'.join(map(str, dims))}, {args.filters or dims[3]} filters, "
        f"{args.kernel_size}x{args.kernel_size}, deformable groups {args.deformable_groups}; "
        f"deterministic={args.deterministic}; jit_compile={args.jit_compile}"
    )

    failures = []
    summary = {
        "script": "long_run",
        "args": vars(args),
        "tensorflow": tf.__version__,
        "device": device,
        "gpus": [],
        "config": list(dims),
        "dtype": args.dtype,
        "steps": steps,
        "sample_every": sample_every,
        "rss_source": "psutil" if _has_psutil() else "/proc/self/status VmRSS",
    }
    for gpu in tf.config.list_physical_devices("GPU"):
        summary["gpus"].append(tf.config.experimental.get_device_details(gpu).get("device_name"))

    with tf.device(device):
        problem = Problem(
            tf,
            tfdcn,
            dims,
            args.filters,
            args.kernel_size,
            args.deformable_groups,
            args.dtype,
            args.seed,
        )
    if steps:
        samples, seconds = long_run(
            tf, problem, steps, sample_every, device, on_gpu, args.jit_compile, args.learning_rate
        )
        checks = {"rss_mib": flatness(samples, steps, "rss_mib", args.rss_tol_mib)}
        if on_gpu:
            checks["gpu_current_mib"] = flatness(
                samples, steps, "gpu_current_mib", args.gpu_tol_mib
            )
            checks["gpu_peak_mib"] = flatness(samples, steps, "gpu_peak_mib", args.gpu_tol_mib)
        finite = all(s["finite"] for s in samples)
        steady = steadiness(samples, steps, args.steady_tol)
        summary.update(
            seconds=seconds,
            ms_per_step=1e3 * seconds / steps,
            samples=samples,
            flatness=checks,
            all_finite=finite,
            steadiness=steady,
        )
        print(f"finite: {finite}; steadiness: {steady}")
        if not finite:
            failures.append("a training step gave a NaN or Inf checksum")
        if steady["steady"] is False:
            failures.append(
                f"throughput not steady: slowest window {steady['slowest_ms_per_step']:.3f} "
                f"ms/step vs median {steady['median_ms_per_step']:.3f}"
            )
        for key, check in checks.items():
            print(f"{key}: {check}")
            if check["flat"] is False:
                failures.append(
                    f"{key} grew by {check['growth_mib']:.2f} MiB between the second "
                    f"and the last quarter (tolerance {check['tolerance_mib']} MiB)"
                )
            elif check["flat"] is None:
                failures.append(f"{key}: {check['reason']}")
        print(f"{steps} steps in {seconds:.1f}s ({1e3 * seconds / steps:.2f} ms/step)")

    if args.threads:
        with tf.device(device):
            thread_problem = (
                problem
                if thread_dims == dims
                else Problem(
                    tf,
                    tfdcn,
                    thread_dims,
                    args.filters,
                    args.kernel_size,
                    args.deformable_groups,
                    args.dtype,
                    args.seed,
                )
            )
        diffs, errors, seconds, distinct = thread_test(
            tf, thread_problem, args.threads, args.calls_per_thread, device
        )
        verdicts = {}
        for name, entry in diffs.items():
            exact = exact_everything or name in EXACT_ALWAYS
            entry["required"] = "exact" if exact else f"max_rel_diff <= {rtol:g}"
            entry["ok"] = entry["max_abs_diff"] == 0.0 if exact else entry["max_rel_diff"] <= rtol
            verdicts[name] = entry["ok"]
        match = not errors and distinct and all(verdicts.values()) and len(diffs) == 6
        summary["threads"] = {
            "threads": args.threads,
            "calls_per_thread": args.calls_per_thread,
            "config": list(thread_dims),
            "seconds": seconds,
            "errors": errors,
            "distinct_inputs_give_distinct_outputs": distinct,
            "tensors": diffs,
            "match": match,
        }
        for name, entry in diffs.items():
            print(f"threads {name}: {entry}")
        print(
            f"thread test: {args.threads} threads x {args.calls_per_thread} calls in "
            f"{seconds:.1f}s: {'match' if match else 'MISMATCH'}"
        )
        failures += errors
        if not distinct:
            failures.append("thread test: different inputs gave identical outputs")
        failures += [
            f"thread test: {n} differs from the sequential run ({diffs[n]})"
            for n, ok in verdicts.items()
            if not ok
        ]

    summary["failures"] = failures
    summary["ok"] = not failures
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(summary, f, indent=2)
        print(f"wrote {args.json_out}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    print("OK" if not failures else "FAILED")
    return 0 if not failures else 1


def _has_psutil():
    try:
        import psutil  # noqa: F401

        return True
    except ImportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
