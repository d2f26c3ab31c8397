"""benchmark.json, benchmark.md and benchmark.png of the model-level benchmark, the targets of
issue 10 (per dtype: our step <= 1.15x the plain-conv step; the cost our DCN adds over plain
convolution <= 1/3 of what the pure-TF DCN or a baseline adds; peak memory <= the pure-TF
model's), and the summary printed at the end of a run."""

import json
import math
import os

from tensorflow_dcn.benchmark.report import MATPLOTLIB_PIN

DTYPE_LABELS = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
MODEL_LABELS = {
    "conv": "Conv2D (no DCN)",
    "pure_tf": "PureTFDCNv2",
    "tfdcn": "tfdcn.DCNv2",
    "baseline": "baseline",
}
TARGET_VS_CONV = 1.15
TARGET_COST = 1 / 3


def ratios(records):
    """{dtype_key: derived numbers} for every dtype with an ok tfdcn step (None where undefined):
    vs_conv = tfdcn / conv step; cost_vs_<other> = (tfdcn - conv) / (other - conv);
    speedup_vs_<other> = other / tfdcn step; peak_vs_pure_tf = tfdcn / pure_tf peak memory
    (GPU allocator peaks only)."""
    steps, peaks, kinds = {}, {}, {}
    for r in records:
        if r["status"] == "ok":
            steps[(r["dtype_key"], r["model"])] = r["step_ms"]
            peaks[(r["dtype_key"], r["model"])] = r["peak_mib"]
            kinds[(r["dtype_key"], r["model"])] = r["memory_kind"]
    result = {}
    for dtype_key in dict.fromkeys(r["dtype_key"] for r in records):
        ours = steps.get((dtype_key, "tfdcn"))
        if ours is None:
            continue
        conv = steps.get((dtype_key, "conv"))
        derived = {"vs_conv": ours / conv if conv else None}
        for other in ("pure_tf", "baseline"):
            theirs = steps.get((dtype_key, other))
            added = theirs - conv if theirs is not None and conv is not None else None
            derived[f"cost_vs_{other}"] = (ours - conv) / added if added and added > 0 else None
            derived[f"speedup_vs_{other}"] = theirs / ours if theirs else None
        on_gpu = (
            kinds.get((dtype_key, "tfdcn"))
            == kinds.get((dtype_key, "pure_tf"))
            == "gpu_allocator_peak"
        )
        derived["peak_vs_pure_tf"] = (
            peaks[(dtype_key, "tfdcn")] / peaks[(dtype_key, "pure_tf")] if on_gpu else None
        )
        result[dtype_key] = derived
    return result


def write_json(path, header, records):
    derived = ratios(records)
    with open(path, "w") as f:
        json.dump(
            [header]
            + [
                dict(r, **derived.get(r["dtype_key"], {})) if r["model"] == "tfdcn" else r
                for r in records
            ],
            f,
            indent=1,
        )


def _dtype_labels(header, records):
    """{dtype_key: label}; float32 reads "float32+TF32" where a GPU ran it with TF32 on (the
    default of TensorFlow, which the benchmark keeps)."""
    tf32 = header["device"] == "gpu" and any(
        r.get("tf32") for r in records if r["dtype_key"] == "fp32" and r["status"] == "ok"
    )
    return dict(DTYPE_LABELS, **({"fp32": "float32+TF32"} if tf32 else {}))


def _number(value, digits=2, suffix=""):
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def _check(value, target):
    if value is None:
        return "—"
    return f"{value:.2f} {'✓' if value <= target else '✗'}"


def _header_lines(header):
    model, training = header["model"], header["training"]
    if header["device"] == "gpu":
        device = (
            f"{header['device_name']} (compute capability {header.get('compute_capability')})"
            f", driver {header.get('driver') or '?'}"
        )
    else:
        device = f"CPU, {header['device_name']} ({header['cpu_count']} cores)"
    lines = [
        f"- Date: {header['date']}",
        f"- Device: {device}",
        f"- TensorFlow {header['tensorflow']} (built with CUDA {header['tf_cuda']}, cuDNN "
        f"{header['tf_cudnn']}), Keras {header['keras']}, tensorflow_dcn "
        f"{header['tensorflow_dcn']}, Python {header['python']}",
        f"- Model: FaPN-style segmentation network "
        f"(`tensorflow_dcn/benchmark/segmentation_model.py`"
        f"): ResNet encoder of {model['channels']}/{2 * model['channels']}/"
        f"{4 * model['channels']}/{8 * model['channels']} channels at strides 4-32, decoder of "
        f"{model['channels']} channels whose upsampled features are aligned at strides "
        f"{', '.join(map(str, model['aligned_strides']))} by the model's layer in [x, "
        f"offset_source] mode (`conv`: a Conv2D on x); {model['norm']} normalization; batch "
        f"{model['batch']}, {model['image_size']}x{model['image_size']} RGB, "
        f"{model['distinct_batches']} distinct batches of synthetic shapes cycled.",
        f"- Training: `model.compile(Adam({model['learning_rate']:g}), "
        f"SparseCategoricalCrossentropy(from_logits=True), jit_compile={training['jit_compile']})` "
        "(`auto`: Keras' default, XLA on a GPU when every layer has supports_jit, off on a CPU; "
        "the XLA column shows what Keras resolved), mixed_float16 rows with the LossScaleOptimizer "
        "Keras adds, steps_per_execution 1, `model.fit(verbose=0)` on a tf.data pipeline"
        + (", TF32 off" if training.get("tf32") == "off" else "")
        + (", op determinism on" if training.get("deterministic") else "")
        + ".",
        f"- Timing: one process per row; a first fit of {training['warmup_steps']} steps "
        f"(tracing, compilation) untimed, then {training['epochs']} epochs of "
        f"{training['steps']} steps, each ended by a device sync; ms/step is the median over the "
        f"epochs of epoch time / {training['steps']}.",
    ]
    if header.get("baseline"):
        lines.append(f"- baseline: `{header['baseline']}`")
    lines.append("- Command: `" + " ".join(header["command"]) + "`")
    for command in header.get("merged_commands", ()):
        lines.append("  - merged from: `" + " ".join(command) + "`")
    return lines


def _memory_label(records):
    kinds = {r["memory_kind"] for r in records if r.get("memory_kind")}
    if kinds == {"gpu_allocator_peak"}:
        return "peak MiB"
    if kinds == {"process_peak_rss"}:
        return "peak RSS MiB"
    return "peak MiB"


LEGEND = """\
Columns. XLA: the jit_compile Keras resolved for the model (`model.jit_compile` after fit).
ms/step, images/s: one training step (forward, backward, Adam update) of the batch. peak MiB (GPU):
the TensorFlow allocator's peak (`tf.config.experimental.get_memory_info`) during the timed
epochs: weights, optimizer state, activations, gradients, workspace; peak RSS MiB (CPU): the
worker process' peak resident memory (`ru_maxrss`, TensorFlow's own ~0.5-1 GiB included).
loss: the first step's loss → the mean loss of the last epoch, after the given number of steps
(same data for all; the DCN models start from the same weights)."""


def write_markdown(path, header, records):
    memory = _memory_label(records)
    labels = _dtype_labels(header, records)
    lines = ["# tensorflow-dcn model-level benchmark: a FaPN-style segmentation training step", ""]
    lines += _header_lines(header) + ["", LEGEND, ""]
    lines += [
        "## Training step",
        "",
        f"| dtype | model | XLA | ms/step | images/s | {memory} | loss (steps) | warm-up s |",
        "|---|---|---|--:|--:|--:|---|--:|",
    ]
    failures = []
    for r in records:
        label = (
            MODEL_LABELS[r["model"]]
            if r["model"] != "baseline"
            else f"baseline (`{header.get('baseline')}`)"
        )
        if r["status"] != "ok":
            failures.append(r)
            lines.append(
                f"| {labels[r['dtype_key']]} | {label} | — | {r['status']} "
                f"[{len(failures)}] | — | — | — | — |"
            )
            continue
        lines.append(
            f"| {labels[r['dtype_key']]} | {label} | {'on' if r['jit_compile'] else 'off'} "
            f"| {r['step_ms']:.2f} | {r['images_per_s']:.1f} | {r['peak_mib']:.0f} "
            f"| {r['loss_first']:.3f} → {r['loss_last']:.3f} ({r['steps']}) "
            f"| {r['warmup_s']:.1f} |"
        )
    derived = ratios(records)
    if derived:
        lines += [
            "",
            "## Against the targets",
            "",
            f"Per dtype: ours / conv step (target ≤ {TARGET_VS_CONV:.2f}); the step time our "
            "DCN adds over plain convolution as a fraction of what the other layer adds, "
            f"(ours − conv) / (other − conv) (target ≤ {TARGET_COST:.2f}); speed-up = other "
            "ms / ours; peak memory ours / pure_tf (target ≤ 1, GPU only). ✓ / ✗: target "
            "met or not.",
            "",
            "| dtype | ours / conv | cost vs pure_tf | cost vs baseline | speed-up vs pure_tf "
            "| speed-up vs baseline | peak vs pure_tf |",
            "|---|--:|--:|--:|--:|--:|--:|",
        ]
        for dtype_key, d in derived.items():
            lines.append(
                f"| {labels[dtype_key]} | {_check(d['vs_conv'], TARGET_VS_CONV)} "
                f"| {_check(d['cost_vs_pure_tf'], TARGET_COST)} "
                f"| {_check(d['cost_vs_baseline'], TARGET_COST)} "
                f"| {_number(d['speedup_vs_pure_tf'], suffix='×')} "
                f"| {_number(d['speedup_vs_baseline'], suffix='×')} "
                f"| {_check(d['peak_vs_pure_tf'], 1.0)} |"
            )
    if failures:
        lines += ["", "## Failures", ""]
        for i, r in enumerate(failures, 1):
            lines.append(
                f"{i}. {labels[r['dtype_key']]} {r['model']}: {r['status']} — {r['error']}"
            )
            if r.get("log_tail"):
                lines += ["", "   ```"] + [f"   {line}" for line in r["log_tail"][-8:]] + ["   ```"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def write_plot(path, header, records):
    """ms/step and peak memory per model and dtype, and the ratios against their targets.

    Returns None, or why the figure was skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return f"matplotlib is not installed (optional: pip install {MATPLOTLIB_PIN})"
    ok = [r for r in records if r["status"] == "ok"]
    if not ok:
        return "no successful measurement to plot"
    dtypes = list(dict.fromkeys(r["dtype_key"] for r in records))
    models = list(dict.fromkeys(r["model"] for r in records))
    by_key = {(r["dtype_key"], r["model"]): r for r in ok}
    derived = ratios(records)
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))

    def grouped(axis, groups, series, title, ylabel):
        width = 0.8 / max(1, len(series))
        for i, (label, values) in enumerate(series):
            x = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
            drawn = axis.bar(x, [math.nan if v is None else v for v in values], width, label=label)
            axis.bar_label(
                drawn, labels=["" if v is None else f"{v:.3g}" for v in values], fontsize=6
            )
        axis.set_xticks(range(len(groups)), groups, fontsize=8)
        axis.set_title(title, fontsize=10)
        axis.set_ylabel(ylabel)
        axis.legend(fontsize=7)

    labels = [_dtype_labels(header, records)[d] for d in dtypes]
    for axis, field, title, ylabel in (
        (axes[0], "step_ms", "training step", "ms / step"),
        (axes[1], "peak_mib", _memory_label(records), "MiB"),
    ):
        grouped(
            axis,
            labels,
            [
                (m, [by_key[(d, m)][field] if (d, m) in by_key else None for d in dtypes])
                for m in models
            ],
            title,
            ylabel,
        )
    measures = [
        ("vs_conv", "ours / conv", TARGET_VS_CONV),
        ("cost_vs_pure_tf", "cost vs pure_tf", TARGET_COST),
        ("cost_vs_baseline", "cost vs baseline", TARGET_COST),
    ]
    measures = [
        m for m in measures if any(derived.get(d, {}).get(m[0]) is not None for d in dtypes)
    ]
    if measures:
        grouped(
            axes[2],
            labels,
            [(label, [derived.get(d, {}).get(key) for d in dtypes]) for key, label, _ in measures],
            "ours against the targets (lower is better)",
            "ratio",
        )
        for target in sorted({target for _, _, target in measures}):
            axes[2].axhline(target, linestyle="--", linewidth=0.8, color="gray")
            axes[2].annotate(
                f"target {target:.2f}",
                (1.0, target),
                xycoords=("axes fraction", "data"),
                ha="right",
                va="bottom",
                fontsize=7,
                color="gray",
            )
    else:
        axes[2].set_axis_off()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return None


def write_all(out_dir, header, records):
    """Writes the three files; returns a note when the png was skipped, else None."""
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "benchmark.json"), header, records)
    write_markdown(os.path.join(out_dir, "benchmark.md"), header, records)
    return write_plot(os.path.join(out_dir, "benchmark.png"), header, records)


def summary_lines(header, records):
    """A few lines for the terminal: per dtype each model's ms/step and ours against the targets."""
    model = header["model"]
    lines = [
        f"Model-level: FaPN-style training step, batch {model['batch']}, "
        f"{model['image_size']}x{model['image_size']}, model.fit, jit_compile="
        f"{header['training']['jit_compile']}:"
    ]
    derived = ratios(records)
    labels = _dtype_labels(header, records)
    for dtype_key in dict.fromkeys(r["dtype_key"] for r in records):
        parts = []
        for r in records:
            if r["dtype_key"] != dtype_key:
                continue
            if r["status"] == "ok":
                parts.append(
                    f"{r['model']} {r['step_ms']:.1f} ms" + (" (XLA)" if r["jit_compile"] else "")
                )
            else:
                parts.append(f"{r['model']} {r['status']}")
        line = f"  {labels[dtype_key]}: " + ", ".join(parts)
        d = derived.get(dtype_key)
        if d:
            checks = [f"ours/conv {_check(d['vs_conv'], TARGET_VS_CONV)} (≤ {TARGET_VS_CONV})"]
            for other in ("pure_tf", "baseline"):
                if d[f"cost_vs_{other}"] is not None:
                    checks.append(
                        f"cost vs {other} {_check(d[f'cost_vs_{other}'], TARGET_COST)} (≤ 0.33)"
                    )
            line += "; " + ", ".join(checks)
        lines.append(line)
    return lines
