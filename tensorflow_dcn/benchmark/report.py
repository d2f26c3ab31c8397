"""benchmark.json, benchmark.md and benchmark.png from the run's records."""

import json
import math
import os

from tensorflow_dcn.benchmark.configs import COMPARISONS, DTYPES, IMPLS, parse_config

MATPLOTLIB_PIN = "matplotlib==3.11.2"


def write_json(path, header, records):
    with open(path, "w") as f:
        json.dump([header] + records, f, indent=1)


def _ms(value):
    if value is None:
        return "—"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.3f}"


def _mib(value):
    return "—" if value is None else f"{value:.1f}"


def _err(value):
    return "—" if value is None else f"{value:.1e}"


def speedups(records):
    """{(config, dtype_key, ours, other): (fwd, fwd_bwd)}, each other's ms / ours (or None)."""
    by_key = {(r["config"], r["dtype_key"], r["impl"]): r for r in records}
    result = {}
    for (config, dtype_key, impl), ours in by_key.items():
        for mine, other in COMPARISONS:
            theirs = by_key.get((config, dtype_key, other))
            if impl != mine or theirs is None:
                continue
            result[(config, dtype_key, mine, other)] = tuple(
                theirs[f] / ours[f] if ours.get(f) and theirs.get(f) else None
                for f in ("fwd_ms", "fwd_bwd_ms")
            )
    return result


def _header_lines(header):
    lines = [f"- Date: {header['date']}"]
    if header["device"] == "gpu":
        lines.append(
            f"- Device: {header['device_name']} (compute capability "
            f"{header.get('compute_capability')}), driver {header.get('driver') or '?'}"
        )
    else:
        lines.append(f"- Device: CPU, {header['device_name']} ({header['cpu_count']} cores)")
    lines.append(
        f"- TensorFlow {header['tensorflow']} (built with CUDA {header['tf_cuda']}, cuDNN "
        f"{header['tf_cudnn']}), Keras {header['keras']}, tensorflow_dcn "
        f"{header['tensorflow_dcn']}, Python {header['python']}"
    )
    if header.get("torch"):
        lines.append(
            f"- torch {header['torch']} (CUDA {header.get('torch_cuda')}), torchvision "
            f"{header['torchvision']}"
        )
    if header.get("baseline"):
        lines.append(f"- baseline: `{header['baseline']}`")
    for impl, reason in header.get("skipped", {}).items():
        lines.append(f"- {impl} skipped: {reason}")
    timing = header["timing"]
    lines += [
        f"- Timing: warm-up calls: {timing['warmup']}; then the median over {timing['repeats']} "
        f"rounds of (K back-to-back calls, one device sync) / K, K chosen per measurement from one "
        f"synced call so that a round lasts about {timing['target_ms']:g} ms (at most "
        f"{timing['max_calls_per_sync']}): launch overhead is amortised alike for every "
        "implementation. TensorFlow: the K calls run inside one `tf.function` (a `tf.while_loop` "
        "carrying the step's outputs; the `_xla` impls: jit_compile=True), so that entering a "
        "graph from Python is paid once per round; torch: K calls from Python.",
        "- Command: `" + " ".join(header["command"]) + "`",
    ]
    return lines


LEGEND = """\
Implementations. Op level (offsets and mask given): `tfdcn` = `tfdcn.deform_conv2d`;
`torchvision` = `torchvision.ops.deform_conv2d` (NCHW, separate process, eager); `conv2d` =
`tf.nn.conv2d` + bias of the same shape, the floor. Layer level (an internal conv predicts
offsets and mask): `tfdcn_layer` = `tfdcn.DCNv2`;
`pure_tf` = `tensorflow_dcn.reference.PureTFDCNv2`;
`baseline` = the `--baseline` layer. The TensorFlow ones run under `tf.function`, and as
`tfdcn_xla`, `conv2d_xla`, `tfdcn_layer_xla`, `pure_tf_xla`, `baseline_xla` under
`tf.function(jit_compile=True)` (XLA, as Keras' default compile runs a model on a GPU; a graph
without XLA pays TensorFlow's per-op cost on the host, which short kernels do not hide). All
layers get the same weights. float16 / bfloat16 layers run under Keras' mixed_float16 /
mixed_bfloat16 policies (float32 weights); op-level operands are all in the dtype.

Columns. fwd / fwd+bwd: milliseconds per call; fwd+bwd computes the gradients of every operand
(op level: input, offset, mask, kernel, bias; layers: input and all weights) for a fixed upstream
gradient. peak MiB: the allocator's peak during one synced call minus what was allocated before
it (TensorFlow: `tf.config.experimental.get_memory_info`; torch: `max_memory_allocated`);
"—" on the CPU. max abs err: largest |y − y64| of the forward output against float64 on the same
rounded inputs (op level: our op in float64 on operands rounded to the dtype; layers: float64
with the float32 weights; conv2d: `tf.nn.conv2d` in float64); max rel err: that divided by the
largest |y64|."""


def write_markdown(path, header, records, dtype_keys, configs):
    lines = ["# tensorflow-dcn DCNv2 benchmark", ""] + _header_lines(header) + ["", LEGEND, ""]
    lines += [
        "## Times, memory and accuracy",
        "",
        "| config | dtype | impl | fwd ms | fwd+bwd ms | peak MiB fwd | peak MiB fwd+bwd "
        "| max abs err | max rel err |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    failures = []
    for r in records:
        fwd, fwd_bwd = _ms(r.get("fwd_ms")), _ms(r.get("fwd_bwd_ms"))
        if r["status"] != "ok":
            failures.append(r)
            mark = f"{r['status']} [{len(failures)}]"
            if r.get("fwd_ms") is None:
                fwd = mark
            else:
                fwd_bwd = mark
        lines.append(
            f"| {r['config']} | {DTYPES[r['dtype_key']].label} | {r['impl']} | {fwd} | {fwd_bwd} "
            f"| {_mib(r.get('fwd_peak_extra_mib'))} | {_mib(r.get('peak_extra_mib'))} "
            f"| {_err(r.get('max_abs_err'))} | {_err(r.get('max_rel_err'))} |"
        )

    ratios = speedups(records)
    pairs = [pair for pair in COMPARISONS if any(k[2:] == pair for k in ratios)]
    if pairs:
        lines += [
            "",
            "## Speed-ups",
            "",
            "Other implementation's ms / ours (> 1: ours is faster); `tfdcn` is compared at "
            "op level, `tfdcn_layer` at layer level; against `conv2d` it is the fraction "
            "of plain convolution speed reached (`tfdcn_xla` against `conv2d_xla`).",
            "",
            "| config | dtype | "
            + " | ".join(
                f"{mine} vs {other} {part}" for mine, other in pairs for part in ("fwd", "fwd+bwd")
            )
            + " |",
            "|---|---|" + "--:|" * (2 * len(pairs)),
        ]
        for config in configs:
            for key in dtype_keys:
                values = [
                    ratios.get((config, key, mine, other), (None, None)) for mine, other in pairs
                ]
                lines.append(
                    f"| {config} | {DTYPES[key].label} | "
                    + " | ".join("—" if v is None else f"{v:.2f}×" for pair in values for v in pair)
                    + " |"
                )
    lines += _workspace_lines(records, dtype_keys, configs)
    if failures:
        lines += ["", "## Failures", ""]
        lines += [
            f"{i}. {r['config']} {DTYPES[r['dtype_key']].label} {r['impl']}: {r['status']} — "
            f"{r['error']}"
            for i, r in enumerate(failures, 1)
        ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


WORKSPACE_IMPLS = ("tfdcn", "torchvision")


def _returned_mib(config, dtype_key):
    """MiB an op-level forward+backward returns: the output and the five gradients."""
    return parse_config(config).op_result_elements() * DTYPES[dtype_key].itemsize / 2**20


def op_workspace_mib(record):
    """An op-level record's temporaries: its fwd+bwd peak minus the bytes the step returns; None
    without a peak (the CPU) or at layer level."""
    if record.get("impl") not in WORKSPACE_IMPLS or record.get("peak_extra_mib") is None:
        return None
    return record["peak_extra_mib"] - _returned_mib(record["config"], record["dtype_key"])


def _workspace_lines(records, dtype_keys, configs):
    by_key = {(r["config"], r["dtype_key"], r["impl"]): r for r in records}
    rows = []
    for config in configs:
        for key in dtype_keys:
            values = [
                op_workspace_mib(by_key.get((config, key, impl), {})) for impl in WORKSPACE_IMPLS
            ]
            if any(v is not None for v in values):
                rows.append(
                    f"| {config} | {DTYPES[key].label} | {_mib(_returned_mib(config, key))} | "
                    + " | ".join(_mib(v) for v in values)
                    + " |"
                )
    if not rows:
        return []
    return [
        "",
        "## Workspace (op level)",
        "",
        "The temporaries of one forward+backward: its peak extra memory minus the bytes it "
        "returns (the output and the gradients of input, offset, mask, kernel and bias).",
        "",
        "| config | dtype | returned MiB | "
        + " | ".join(f"{i} MiB" for i in WORKSPACE_IMPLS)
        + " |",
        "|---|---|--:|" + "--:|" * len(WORKSPACE_IMPLS),
    ] + rows


def write_plot(path, records, dtype_keys, configs):
    """Speed-up over each other implementation per config and dtype, and peak memory.

    Returns None, or why the figure was skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        return f"matplotlib is not installed (optional: pip install {MATPLOTLIB_PIN})"
    ratios = speedups(records)
    pairs = [
        pair
        for pair in COMPARISONS
        if any(k[2:] == pair and any(v for v in vs) for k, vs in ratios.items())
    ]
    memory_dtype = dtype_keys[0]
    memory = {
        (r["config"], r["impl"]): (r.get("fwd_peak_extra_mib"), r.get("peak_extra_mib"))
        for r in records
        if r["dtype_key"] == memory_dtype
    }
    has_memory = any(v is not None for pair in memory.values() for v in pair)
    rows = len(pairs) + has_memory
    if not rows:
        return "no successful comparison or memory figure to plot"
    figure, axes = plt.subplots(
        rows, 2, figsize=(max(8, 1.3 * len(configs) + 4), 3.2 * rows), squeeze=False
    )
    positions = range(len(configs))

    def bars(axis, series, title, ylabel, speedup):
        width = 0.8 / max(1, len(series))
        for i, (label, values) in enumerate(series):
            heights = [math.nan if v is None else v for v in values]
            x = [p + (i - (len(series) - 1) / 2) * width for p in positions]
            if speedup:  # bars grow from 1x, up when ours is faster, down when slower
                drawn = axis.bar(x, [h - 1 for h in heights], width, bottom=1, label=label)
                axis.bar_label(
                    drawn, labels=["" if math.isnan(h) else f"{h:.2g}" for h in heights], fontsize=6
                )
            else:
                axis.bar(x, heights, width, label=label)
        axis.set_xticks(list(positions), configs, rotation=30, ha="right", fontsize=8)
        axis.set_title(title, fontsize=10)
        axis.set_ylabel(ylabel)
        if speedup:
            axis.set_yscale("log")
            axis.axhline(1.0, color="black", linewidth=0.8)
            axis.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
            axis.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g×"))
            axis.yaxis.set_minor_formatter(ticker.NullFormatter())
        axis.legend(fontsize=7)

    for row, (mine, other) in enumerate(pairs):
        for col, part in enumerate(("fwd", "fwd+bwd")):
            series = [
                (
                    DTYPES[key].label,
                    [ratios.get((c, key, mine, other), (None, None))[col] for c in configs],
                )
                for key in dtype_keys
            ]
            bars(
                axes[row][col],
                series,
                f"{mine} vs {other}, {part}",
                "speed-up (other ms / ours)",
                speedup=True,
            )
    if has_memory:
        impls = [impl for impl in IMPLS if any((c, impl) in memory for c in configs)]
        for col, part in enumerate(("fwd", "fwd+bwd")):
            series = [
                (impl, [memory.get((c, impl), (None, None))[col] for c in configs])
                for impl in impls
            ]
            bars(
                axes[-1][col],
                series,
                f"peak extra memory, {part}, {DTYPES[memory_dtype].label}",
                "MiB",
                speedup=False,
            )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None


def _range(values):
    """'1.9× (1.2×–3.1×)': the geometric mean of positive ratios and their range."""
    if not values:
        return "—"
    mean = math.exp(sum(math.log(v) for v in values) / len(values))
    if len(values) == 1:
        return f"{mean:.2f}×"
    return f"{mean:.2f}× ({min(values):.2f}×–{max(values):.2f}×)"


def summary_lines(records):
    """A few lines for the terminal: each comparison's speed-ups over all configs and dtypes
    (geometric mean and range), and which measurements failed."""
    ratios = speedups(records)
    lines = [
        "Speed-ups, other's ms / ours (> 1: ours is faster); geometric mean (min–max) over "
        "the configs and dtypes:"
    ]
    width = max(len(f"{mine} vs {other}") for mine, other in COMPARISONS)
    for mine, other in COMPARISONS:
        values = [v for k, v in ratios.items() if k[2:] == (mine, other)]
        if not values:
            continue
        fwd, fwd_bwd = ([v[i] for v in values if v[i]] for i in (0, 1))
        lines.append(
            f"  {f'{mine} vs {other}':<{width}}  fwd {_range(fwd)}, fwd+bwd {_range(fwd_bwd)}"
        )
    failed = {}
    for r in records:
        if r["status"] != "ok":
            failed.setdefault((r["impl"], r["status"]), []).append(r)
    for (impl, status), rs in failed.items():
        lines.append(
            f"  {impl}: {status} in {len(rs)} of "
            f"{sum(r['impl'] == impl for r in records)} measurements, e.g. {rs[0]['error']}"
        )
    return lines


def write_all(out_dir, header, records, dtype_keys, configs):
    """Writes the three files; returns a note when the png was skipped, else None."""
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "benchmark.json"), header, records)
    write_markdown(os.path.join(out_dir, "benchmark.md"), header, records, dtype_keys, configs)
    return write_plot(os.path.join(out_dir, "benchmark.png"), records, dtype_keys, configs)
