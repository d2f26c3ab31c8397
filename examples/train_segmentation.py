#!/usr/bin/env python
"""Train a small segmentation network with DCNv2 feature alignment (FaPN-style) on synthetic shapes.

The network is an FPN: a strided conv encoder (1/2, 1/4, 1/8) and a top-down decoder. At each
decoder level the coarse features are upsampled and *aligned* to the fine ones by a DCNv2 whose
offsets and mask are predicted from concat(fine, upsampled coarse), as in FaPN:

    up = UpSampling2D(2, interpolation="bilinear")(coarse)
    aligned = tfdcn.DCNv2(C, 3, padding="same", use_custom_offset=True)(
        [up, Concatenate()([fine, up])])
    fused = fine + aligned

The task, generated deterministically from --seed by the model-level benchmark's
`tensorflow_dcn.benchmark.segmentation_model.make_shapes`: images with random circles, rectangles
and triangles (random colours, so the class is the shape), labelled per pixel 0 = background,
1 = circle, 2 = rectangle, 3 = triangle.

    # CPU, a few seconds:
    PYTHONPATH=. python examples/train_segmentation.py --epochs 2 --steps-per-epoch 5
    # one GPU (sizes for an H200), with the pure-TF layer for comparison, JSON summary:
    python examples/train_segmentation.py --epochs 4 --steps-per-epoch 100 --batch-size 32 \
        --image-size 256 --channels 64 --layer both --json-out seg_1gpu.json
    # all visible GPUs, same global batch; compares the first step losses with the 1-GPU run:
    python examples/train_segmentation.py ... --distribute mirrored --compare-losses seg_1gpu.json

What it checks (exit status 1 and the reason on stderr when one fails): the loss went down (first
vs last epoch), no NaN loss (keras.callbacks.TerminateOnNaN), the weights saved with
save_weights and the whole model saved as .keras restore to identical predictions, with
--layer both the two layers give the same first-step loss, with --compare-float32 the
mixed-precision model stays close to the same weights run in float32, and with --compare-losses
the first step losses match another run's, and training resumed from the .keras file gives the
same next-step loss as the model that kept training.

Throughput (images/s) is timed after a warm-up: the first epoch, or with --epochs 1 its first
fifth of the steps. Keras syncs the host with the device after every step here (TerminateOnNaN
and the step-loss recorder read the loss each step).

Step losses: Keras reports in `logs["loss"]` the running mean of the epoch so far; the JSON keeps
that ("first_step_running_means") and the per-step losses derived from it
(l_k = k * m_k - (k - 1) * m_{k-1}, exact up to float rounding since every batch has the same
size) as "first_step_losses".
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np

from tensorflow_dcn.benchmark.segmentation_model import CLASS_NAMES, NUM_CLASSES, make_shapes

LAYERS = ("tfdcn", "pure_tf")
RECORDED_STEPS = 5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps-per-epoch", type=int, default=10)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="global batch size (split over the replicas with --distribute)",
    )
    parser.add_argument("--image-size", type=int, default=64, help="a multiple of 8")
    parser.add_argument(
        "--channels",
        type=int,
        default=16,
        help="network width: the decoder's channels (the encoder has 1x, 2x, 4x)",
    )
    parser.add_argument(
        "--num-images",
        type=int,
        default=0,
        help="distinct images generated (cycled); 0: steps-per-epoch * batch-size, at most 1024",
    )
    parser.add_argument(
        "--layer",
        choices=("tfdcn", "pure_tf", "both"),
        default="tfdcn",
        help="tfdcn.DCNv2, tensorflow_dcn.reference.PureTFDCNv2, or both (same "
        "initial weights, trained one after the other)",
    )
    parser.add_argument(
        "--norm",
        choices=("group", "batch"),
        default="group",
        help="GroupNormalization (per image: the same numbers for any number "
        "of replicas) or BatchNormalization (synchronized=True with "
        "--distribute)",
    )
    parser.add_argument(
        "--mixed-precision", choices=("none", "mixed_float16", "mixed_bfloat16"), default="none"
    )
    parser.add_argument(
        "--jit-compile",
        choices=("auto", "true", "false"),
        default="auto",
        help="passed to model.compile",
    )
    parser.add_argument(
        "--distribute",
        choices=("none", "mirrored"),
        default="none",
        help="mirrored: tf.distribute.MirroredStrategy over all visible GPUs",
    )
    parser.add_argument(
        "--cpu-replicas",
        type=int,
        default=0,
        help="with --distribute mirrored and no GPU: split the CPU into this many "
        "logical devices (to try the multi-replica path without GPUs)",
    )
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="tf.config.experimental.enable_op_determinism() (Keras then leaves "
        "XLA off under jit_compile='auto')",
    )
    parser.add_argument(
        "--compare-float32",
        action="store_true",
        help="after mixed-precision training, compare the outputs with the same "
        "weights run in float32",
    )
    parser.add_argument(
        "--float32-tol",
        type=float,
        default=0.1,
        help="largest allowed softmax probability difference for --compare-float32",
    )
    parser.add_argument(
        "--compare-losses",
        metavar="JSON",
        help="the --json-out of another run (e.g. one GPU): compare the first "
        f"{RECORDED_STEPS} step losses with it",
    )
    parser.add_argument(
        "--loss-rtol",
        type=float,
        default=None,
        help="relative tolerance for --compare-losses and the tfdcn vs pure_tf "
        "first-step loss (default 2e-3 in float32, 3e-2 mixed)",
    )
    parser.add_argument(
        "--checkpoint-dir", help="where the checkpoints go (default: a temporary folder, removed)"
    )
    parser.add_argument("--json-out", help="write a JSON summary here")
    parser.add_argument("--verbose", default="auto", help="model.fit verbosity: auto, 0, 1, 2")
    args = parser.parse_args(argv)
    if args.image_size % 8 or args.image_size < 8:
        parser.error("--image-size must be a positive multiple of 8")
    for name in ("epochs", "steps_per_epoch", "batch_size", "channels"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.distribute == "mirrored" and args.jit_compile == "true":
        # Any Keras model, ours or not: one XLA program would hold the replicas' variables on
        # several devices (tensorflow.org/xla/known_issues#tfvariable_on_a_different_device).
        parser.error(
            "--jit-compile true with --distribute mirrored: TensorFlow 2.21 cannot XLA-compile a "
            "MirroredStrategy training step; leave --jit-compile auto (Keras then runs it without "
            "XLA)"
        )
    if args.verbose != "auto":
        args.verbose = int(args.verbose)
    if args.loss_rtol is None:
        args.loss_rtol = 2e-3 if args.mixed_precision == "none" else 3e-2
    return args


# ----------------------------------------------------------------------------------------------
# Data: the shapes task of the model-level benchmark (tensorflow_dcn.benchmark.segmentation_model),
# images with random circles, rectangles and triangles labelled per pixel.


def make_dataset(tf, images, labels, global_batch):
    """Fixed global batches in a fixed order, whatever the number of replicas: no shuffling (the
    images are independent draws already), batches of exactly global_batch, cycled."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, tf.cast(y, tf.int32)))
    dataset = dataset.batch(global_batch, drop_remainder=True).repeat()
    return dataset.prefetch(tf.data.AUTOTUNE)


# ----------------------------------------------------------------------------------------------
# Model


def layer_class(name):
    if name == "tfdcn":
        import tensorflow_dcn as tfdcn

        return tfdcn.DCNv2
    from tensorflow_dcn.reference import PureTFDCNv2

    return PureTFDCNv2


def build_model(keras, dcn_class, image_size, channels, norm="group", synchronized=False):
    """FPN encoder/decoder; each decoder level aligns the upsampled coarse features to the fine
    ones with a DCNv2 whose offsets come from concat(fine, upsampled coarse)."""
    layers = keras.layers

    def normalization(name):
        if norm == "batch":
            return layers.BatchNormalization(synchronized=synchronized, name=name)
        return layers.GroupNormalization(groups=4, name=name)

    def conv_block(x, filters, strides, name):
        x = layers.Conv2D(
            filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
        )(x)
        x = normalization(f"{name}_norm")(x)
        return layers.ReLU(name=f"{name}_relu")(x)

    def align_and_fuse(coarse, fine, name):
        # In float32 under mixed precision: TensorFlow 2.21's XLA gradient of a half-precision
        # bilinear resize is float32 and breaks the compilation (keras-team/keras#20931;
        # docs/notes/2026-11-30-xla-cpu-mixed-precision-bilinear-upsampling.md).
        up = layers.UpSampling2D(2, interpolation="bilinear", dtype="float32", name=f"{name}_up")(
            coarse
        )
        offset_source = layers.Concatenate(name=f"{name}_offset_source")([fine, up])
        aligned = dcn_class(
            channels, 3, padding="same", use_custom_offset=True, name=f"{name}_dcn"
        )([up, offset_source])
        fused = layers.Add(name=f"{name}_add")([fine, aligned])
        fused = normalization(f"{name}_norm")(fused)
        return layers.ReLU(name=f"{name}_relu")(fused)

    inputs = keras.Input((image_size, image_size, 3), name="image")
    c1 = conv_block(inputs, channels, 2, "stem")  # 1/2
    c1 = conv_block(c1, channels, 1, "enc1")
    c2 = conv_block(c1, 2 * channels, 2, "enc2a")  # 1/4
    c2 = conv_block(c2, 2 * channels, 1, "enc2b")
    c3 = conv_block(c2, 4 * channels, 2, "enc3a")  # 1/8
    c3 = conv_block(c3, 4 * channels, 1, "enc3b")
    p3 = layers.Conv2D(channels, 1, name="lateral3")(c3)
    p2 = align_and_fuse(p3, layers.Conv2D(channels, 1, name="lateral2")(c2), "align2")
    p1 = align_and_fuse(p2, layers.Conv2D(channels, 1, name="lateral1")(c1), "align1")
    x = conv_block(p1, channels, 1, "head")
    # Logits in float32 under mixed precision, for a stable softmax cross-entropy.
    logits = layers.Conv2D(NUM_CLASSES, 1, dtype="float32", name="logits")(x)
    logits = layers.UpSampling2D(2, interpolation="bilinear", dtype="float32", name="logits_up")(
        logits
    )
    return keras.Model(inputs, logits, name="fapn_shapes")


# ----------------------------------------------------------------------------------------------
# Callbacks


def make_callbacks(keras):
    class StepLossRecorder(keras.callbacks.Callback):
        """logs["loss"] after each of the first steps of the first epoch (Keras' running mean)."""

        def __init__(self, steps):
            super().__init__()
            self.steps = steps
            self.running_means = []
            self._epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if self._epoch == 0 and len(self.running_means) < self.steps and logs:
                self.running_means.append(float(logs["loss"]))

        def step_losses(self):
            """Per-step losses from the running means of equal-sized batches."""
            means = self.running_means
            return (
                [means[0]] + [(k + 1) * means[k] - k * means[k - 1] for k in range(1, len(means))]
                if means
                else []
            )

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch_seconds = []
            self.batch_ends = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()
            if epoch == 0:
                self.batch_ends = [self._start]

        def on_train_batch_end(self, batch, logs=None):
            if len(self.epoch_seconds) == 0:
                self.batch_ends.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_seconds.append(time.perf_counter() - self._start)

        def images_per_second(self, global_batch, steps_per_epoch):
            """After a warm-up: the first epoch, or with one epoch its first fifth."""
            if len(self.epoch_seconds) >= 2:
                timed = self.epoch_seconds[1:]
                return len(timed) * steps_per_epoch * global_batch / sum(timed), "first epoch"
            warmup = max(1, steps_per_epoch // 5)
            ends = self.batch_ends
            if len(ends) <= warmup + 1:
                return None, "too few steps to time"
            steps = len(ends) - 1 - warmup
            return steps * global_batch / (ends[-1] - ends[warmup]), f"first {warmup} step(s)"

    return StepLossRecorder, Timer


# ----------------------------------------------------------------------------------------------
# Environment


def configure_devices(tf, args):
    """Logical CPU devices for --cpu-replicas; must run before TensorFlow initialises them."""
    if (
        args.distribute == "mirrored"
        and args.cpu_replicas > 1
        and not tf.config.list_physical_devices("GPU")
    ):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_replicas
        )


def make_strategy(tf, args):
    if args.distribute == "none":
        return None
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.distribute.MirroredStrategy()  # every visible GPU
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=cpus)


def device_report(tf):
    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append(
            {
                "name": gpu.name,
                "device_name": details.get("device_name"),
                "compute_capability": details.get("compute_capability"),
            }
        )
    return {"logical_devices": [d.name for d in tf.config.list_logical_devices()], "gpus": gpus}


def reset_gpu_peaks(tf):
    for index, _ in enumerate(tf.config.list_logical_devices("GPU")):
        try:
            tf.config.experimental.reset_memory_stats(f"GPU:{index}")
        except (ValueError, tf.errors.OpError):
            pass


def gpu_peaks_mib(tf):
    """Peak allocator memory per GPU since the last reset, in MiB; None without GPUs."""
    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        return None
    peaks = {}
    for index, _ in enumerate(gpus):
        try:
            info = tf.config.experimental.get_memory_info(f"GPU:{index}")
            peaks[f"GPU:{index}"] = round(info["peak"] / 2**20, 1)
        except (ValueError, tf.errors.OpError) as e:
            peaks[f"GPU:{index}"] = f"unavailable: {e}"
    return peaks


# ----------------------------------------------------------------------------------------------
# Training and checks


def relative_difference(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-12)


def compile_model(keras, model, args):
    optimizer = keras.optimizers.Adam(args.learning_rate)
    if args.mixed_precision == "mixed_float16":
        # Keras 3 would wrap it by itself (compile(auto_scale_loss=True) when the model's dtype
        # policy is mixed_float16); wrapping here makes it explicit and independent of that.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=jit,
        )
    compile_warnings = [str(w.message) for w in caught]
    for message in compile_warnings:
        print(f"[compile] warning: {message}")
    return compile_warnings


def check_checkpoint(tf, keras, model, rebuild, eval_images, next_batch, directory, name):
    """save_weights -> load_weights into a freshly initialised model, and model.save (.keras) ->
    keras.models.load_model; both must predict exactly what the trained model predicts. Then
    training resumes: one more step on the next batch gives the same loss in the trained model
    and in the one loaded from the .keras file (weights and optimizer state restored)."""
    expected = model(eval_images, training=False).numpy()

    def same(a, b):
        return bool(np.array_equal(a, b, equal_nan=True))

    weights_path = os.path.join(directory, f"{name}.weights.h5")
    model.save_weights(weights_path)
    fresh = rebuild()
    before = fresh(eval_images, training=False).numpy()
    fresh.load_weights(weights_path)
    restored = fresh(eval_images, training=False).numpy()
    model_path = os.path.join(directory, f"{name}.keras")
    model.save(model_path)
    loaded = keras.models.load_model(model_path)  # tensorflow_dcn is imported: DCNv2 resolves
    from_file = loaded(eval_images, training=False).numpy()
    resumed_loss = float(loaded.train_on_batch(*next_batch, return_dict=True)["loss"])
    continued_loss = float(model.train_on_batch(*next_batch, return_dict=True)["loss"])
    return {
        "weights_path": weights_path,
        "model_path": model_path,
        "fresh_model_differed": not same(before, expected),
        "weights_restored_identical": same(restored, expected),
        "keras_model_restored_identical": same(from_file, expected),
        "resumed_jit_compile": bool(loaded.jit_compile),
        "resumed_next_step_loss": resumed_loss,
        "continued_next_step_loss": continued_loss,
        "resume_identical": resumed_loss == continued_loss,
        "max_abs_diff_weights": float(np.max(np.abs(restored - expected))),
        "max_abs_diff_keras_model": float(np.max(np.abs(from_file - expected))),
    }


def compare_with_float32(keras, model, build_float32, eval_images, policy):
    """The trained mixed-precision model vs its weights in a float32 copy of the network."""
    keras.mixed_precision.set_global_policy("float32")
    try:
        reference = build_float32()
    finally:
        keras.mixed_precision.set_global_policy(policy)
    reference.set_weights(model.get_weights())
    mixed = model(eval_images, training=False).numpy().astype(np.float64)
    exact = reference(eval_images, training=False).numpy().astype(np.float64)

    def softmax(z):
        z = np.exp(z - z.max(-1, keepdims=True))
        return z / z.sum(-1, keepdims=True)

    prob_diff = np.abs(softmax(mixed) - softmax(exact))
    return {
        "finite": bool(np.all(np.isfinite(mixed))),
        "max_abs_logit_diff": float(np.max(np.abs(mixed - exact))),
        "max_abs_logit": float(np.max(np.abs(exact))),
        "max_prob_diff": float(np.max(prob_diff)),
        "mean_prob_diff": float(np.mean(prob_diff)),
        "argmax_agreement": float(np.mean(mixed.argmax(-1) == exact.argmax(-1))),
    }


def train_one(tf, keras, args, name, model, strategy, dataset, global_batch):
    StepLossRecorder, Timer = make_callbacks(keras)
    recorder, timer = StepLossRecorder(RECORDED_STEPS), Timer()
    nan_guard = keras.callbacks.TerminateOnNaN()
    scope = strategy.scope() if strategy else _null_scope()
    with scope:
        compile_warnings = compile_model(keras, model, args)
    print(
        f"\n=== {name}: {model.count_params()} parameters, jit_compile={model.jit_compile}, "
        f"optimizer {type(model.optimizer).__name__}"
    )
    reset_gpu_peaks(tf)
    history = model.fit(
        dataset,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        callbacks=[recorder, timer, nan_guard],
        verbose=args.verbose,
        shuffle=False,
    )
    losses = [float(v) for v in history.history.get("loss", [])]
    accuracy = [float(v) for v in history.history.get("accuracy", [])]
    nan = (
        any(not math.isfinite(v) for v in losses)
        or any(not math.isfinite(v) for v in recorder.running_means)
        or len(losses) < args.epochs
    )
    images_per_second, warmup = timer.images_per_second(global_batch, args.steps_per_epoch)
    if len(losses) >= 2:
        first, last, basis = losses[0], losses[-1], "epoch mean loss, first vs last epoch"
    else:
        steps = recorder.step_losses()
        first, last, basis = (
            (steps[0], steps[-1], "first vs last recorded step loss")
            if steps
            else (math.nan, math.nan, "no losses")
        )
    return {
        "jit_compile": bool(model.jit_compile),
        "compile_warnings": compile_warnings,
        "optimizer": type(model.optimizer).__name__,
        "dtype_policy": model.dtype_policy.name,
        "parameters": int(model.count_params()),
        "epoch_losses": losses,
        "epoch_accuracy": accuracy,
        "first_step_running_means": recorder.running_means,
        "first_step_losses": recorder.step_losses(),
        "loss_first": first,
        "loss_last": last,
        "loss_basis": basis,
        "loss_decreased": bool(math.isfinite(last) and last < first),
        "nan_terminated": bool(nan),
        "epoch_seconds": timer.epoch_seconds,
        "images_per_sec": images_per_second,
        "timing_warmup": warmup,
        "gpu_peak_memory_mib": gpu_peaks_mib(tf),
    }


class _null_scope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(argv=None):
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    import tensorflow_dcn  # noqa: F401  registers the op, its gradient and the DCNv2 layer

    configure_devices(tf, args)
    keras.utils.set_random_seed(args.seed)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    policy = "float32" if args.mixed_precision == "none" else args.mixed_precision
    keras.mixed_precision.set_global_policy(policy)
    strategy = make_strategy(tf, args)
    replicas = strategy.num_replicas_in_sync if strategy else 1
    if args.batch_size % replicas:
        print(
            f"--batch-size {args.batch_size} is not divisible by the {replicas} replicas",
            file=sys.stderr,
        )
        return 2
    devices = device_report(tf)
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}; devices "
        f"{devices['logical_devices']}; strategy {args.distribute} ({replicas} replica(s)); "
        f"policy {policy}; jit_compile={args.jit_compile}; deterministic={args.deterministic}"
    )

    num_images = args.num_images or min(args.steps_per_epoch * args.batch_size, 1024)
    num_images = max(num_images, args.batch_size)
    start = time.perf_counter()
    images, labels = make_shapes(num_images, args.image_size, args.seed)
    print(
        f"generated {num_images} {args.image_size}x{args.image_size} images in "
        f"{time.perf_counter() - start:.1f}s; pixel classes "
        + ", ".join(f"{n} {np.mean(labels == i):.1%}" for i, n in enumerate(CLASS_NAMES))
    )
    dataset = make_dataset(tf, images, labels, args.batch_size)
    eval_images = tf.constant(images[: min(4, num_images)].astype(np.float32) / 255.0)
    next_batch = next(iter(dataset))  # for the resume check: one more training step

    names = list(LAYERS) if args.layer == "both" else [args.layer]
    synchronized = strategy is not None

    def builder(name):
        return lambda: build_model(
            keras, layer_class(name), args.image_size, args.channels, args.norm, synchronized
        )

    def in_scope(fn):
        if strategy is None:
            return fn()
        with strategy.scope():
            return fn()

    models = {}
    for name in names:
        models[name] = in_scope(builder(name))
    if len(names) == 2:  # the same starting point for both layers
        models["pure_tf"].set_weights(models["tfdcn"].get_weights())

    checkpoint_dir = args.checkpoint_dir or tempfile.mkdtemp(prefix="train_segmentation_")
    os.makedirs(checkpoint_dir, exist_ok=True)
    failures, runs = [], {}
    try:
        for name in names:
            run = train_one(tf, keras, args, name, models[name], strategy, dataset, args.batch_size)
            runs[name] = run
            if run["nan_terminated"]:
                failures.append(f"{name}: NaN loss, training terminated (TerminateOnNaN)")
            elif not run["loss_decreased"]:
                failures.append(
                    f"{name}: the loss did not decrease ({run['loss_basis']}: "
                    f"{run['loss_first']:.4f} -> {run['loss_last']:.4f})"
                )
            run["checkpoint"] = in_scope(
                lambda: check_checkpoint(
                    tf,
                    keras,
                    models[name],
                    builder(name),
                    eval_images,
                    next_batch,
                    checkpoint_dir,
                    name,
                )
            )
            if not (
                run["checkpoint"]["weights_restored_identical"]
                and run["checkpoint"]["keras_model_restored_identical"]
            ):
                failures.append(
                    f"{name}: restored checkpoint predicts differently ({run['checkpoint']})"
                )
            if not run["checkpoint"]["resume_identical"]:
                failures.append(
                    f"{name}: training resumed from the .keras file gives another "
                    f"next-step loss ({run['checkpoint']})"
                )
            if args.compare_float32 and policy != "float32":
                run["float32_comparison"] = compare_with_float32(
                    keras, models[name], builder(name), eval_images, policy
                )
                comparison = run["float32_comparison"]
                if not comparison["finite"] or comparison["max_prob_diff"] > args.float32_tol:
                    failures.append(
                        f"{name}: {policy} outputs differ from float32 beyond "
                        f"--float32-tol {args.float32_tol}: {comparison}"
                    )
            print(
                f"{name}: loss {run['loss_first']:.4f} -> {run['loss_last']:.4f} "
                f"({run['loss_basis']}); "
                + (
                    f"{run['images_per_sec']:.1f} images/s (warm-up: {run['timing_warmup']})"
                    if run["images_per_sec"]
                    else "images/s: " + run["timing_warmup"]
                )
                + f"; GPU peak MiB {run['gpu_peak_memory_mib']}"
            )
            print(f"{name}: first step losses {[round(v, 6) for v in run['first_step_losses']]}")
            print(
                f"{name}: checkpoint restored identical: weights "
                f"{run['checkpoint']['weights_restored_identical']}, .keras "
                f"{run['checkpoint']['keras_model_restored_identical']}; resumed next-step "
                f"loss identical {run['checkpoint']['resume_identical']}"
            )
            if "float32_comparison" in run:
                print(f"{name}: vs float32 {run['float32_comparison']}")
    finally:
        if not args.checkpoint_dir:
            shutil.rmtree(checkpoint_dir, ignore_errors=True)

    summary = {
        "script": "train_segmentation",
        "args": vars(args),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "devices": devices,
        "strategy": args.distribute,
        "num_replicas": replicas,
        "global_batch_size": args.batch_size,
        "per_replica_batch_size": args.batch_size // replicas,
        "mixed_precision": policy,
        "jit_compile_flag": args.jit_compile,
        "deterministic": args.deterministic,
        "num_images": num_images,
        "runs": runs,
    }

    if len(runs) == 2 and all(r["first_step_losses"] for r in runs.values()):
        a, b = runs["tfdcn"], runs["pure_tf"]
        step_one = relative_difference(a["first_step_losses"][0], b["first_step_losses"][0])
        summary["layers_comparison"] = {
            "first_step_loss_rel_diff": step_one,
            "step_losses_max_rel_diff": max(
                relative_difference(x, y)
                for x, y in zip(a["first_step_losses"], b["first_step_losses"])
            ),
            "speedup_tfdcn_over_pure_tf": (
                a["images_per_sec"] / b["images_per_sec"]
                if a["images_per_sec"] and b["images_per_sec"]
                else None
            ),
        }
        print(f"tfdcn vs pure_tf: {summary['layers_comparison']}")
        if step_one > args.loss_rtol:
            failures.append(
                f"tfdcn and pure_tf first-step losses differ by {step_one:.2e} "
                f"(relative) > --loss-rtol {args.loss_rtol}"
            )

    if args.compare_losses:
        with open(args.compare_losses) as f:
            other = json.load(f)
        comparison = {
            "other": args.compare_losses,
            "other_num_replicas": other.get("num_replicas"),
            "rtol": args.loss_rtol,
            "layers": {},
        }
        for name, run in runs.items():
            theirs = other.get("runs", {}).get(name, {}).get("first_step_losses")
            if not theirs:
                continue
            diffs = [relative_difference(x, y) for x, y in zip(run["first_step_losses"], theirs)]
            comparison["layers"][name] = {
                "ours": run["first_step_losses"],
                "theirs": theirs,
                "rel_diffs": diffs,
                "max_rel_diff": max(diffs),
            }
            if max(diffs) > args.loss_rtol:
                failures.append(
                    f"{name}: first step losses differ from {args.compare_losses} by "
                    f"{max(diffs):.2e} (relative) > --loss-rtol {args.loss_rtol}"
                )
        if not comparison["layers"]:
            failures.append(f"--compare-losses: no common layer runs in {args.compare_losses}")
        summary["loss_comparison"] = comparison
        print(
            f"step losses vs {args.compare_losses}: "
            + ", ".join(
                f"{n}: max rel diff {c['max_rel_diff']:.2e}"
                for n, c in comparison["layers"].items()
            )
        )

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


if __name__ == "__main__":
    sys.exit(main())
