"""One measurement of the model-level benchmark, in a process of its own.

Run by `python -m tensorflow_dcn.benchmark model` as
`python -m tensorflow_dcn.benchmark.model_worker JOB.json RESULT.json`, once per (model, dtype):
every measurement starts from a fresh TensorFlow and Keras (dtype policy, TF32 default, XLA and
autotuning caches, allocator statistics), and a crash or an out-of-memory takes down only its
own measurement. The job names the model, the dtype policy, the sizes and the step counts; the
worker writes a record (see model_cli.RECORD_FIELDS) to RESULT.json.

What it times is what a user runs: `model.compile(optimizer, loss)` with Keras' default
jit_compile ("auto": XLA on a GPU when every layer says supports_jit, never on a CPU) unless the
job asks otherwise, steps_per_execution=1, then `model.fit` on a tf.data pipeline. A first fit of
`warmup_steps` (tracing, XLA compilation, autotuning) is left out; then `epochs` epochs of
`steps` steps, each epoch ended by a device sync, and the step time is the median over epochs of
epoch time / steps.
"""

import json
import math
import resource
import statistics
import sys
import time


def _policy(dtype_key):
    return {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[dtype_key]


def _layer_class(job):
    if job["model"] == "conv":
        return None
    if job["model"] == "tfdcn":
        import tensorflow_dcn as tfdcn

        return tfdcn.DCNv2
    if job["model"] == "pure_tf":
        from tensorflow_dcn.reference import PureTFDCNv2

        return PureTFDCNv2
    from tensorflow_dcn.benchmark.environment import load_class

    return load_class(job["baseline"])


def _dataset(tf, job):
    """`distinct_batches` fixed batches of the shapes task, cycled, as float32 images in [0, 1]
    and int32 labels; batched once, so each step only slices tensors already in memory."""
    from tensorflow_dcn.benchmark.segmentation_model import make_shapes

    images, labels = make_shapes(
        job["batch"] * job["distinct_batches"], job["image_size"], job["seed"]
    )
    dataset = tf.data.Dataset.from_tensor_slices(
        (images.astype("float32") / 255.0, labels.astype("int32"))
    )
    return (
        dataset.batch(job["batch"], drop_remainder=True).cache().repeat().prefetch(tf.data.AUTOTUNE)
    )


def build(job):
    """(model, dataset) of a job: TensorFlow set up as the job says (GPU memory growth or no GPU,
    TF32, determinism, seed, dtype policy), the model built and compiled as a user would."""
    import keras
    import tensorflow as tf

    import tensorflow_dcn  # noqa: F401  registers the ops and the DCNv2 layer
    from tensorflow_dcn.benchmark.segmentation_model import NUM_CLASSES, build_model

    if job["device"] == "gpu":
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    else:
        tf.config.set_visible_devices([], "GPU")
    tf.config.experimental.enable_tensor_float_32_execution(job["tf32"] == "on")
    if job["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(job["seed"])
    keras.mixed_precision.set_global_policy(_policy(job["dtype_key"]))
    model = build_model(
        _layer_class(job), job["image_size"], job["channels"], NUM_CLASSES, norm=job["norm"]
    )
    jit_requested = {"auto": "auto", "true": True, "false": False}[job["jit_compile"]]
    # Keras wraps the optimizer in a LossScaleOptimizer itself under mixed_float16.
    model.compile(
        optimizer=keras.optimizers.Adam(job["learning_rate"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_requested,
    )
    return model, _dataset(tf, job)


def measure(job):
    """The record of one (model, dtype) training run; raises on failure."""
    import keras
    import tensorflow as tf

    on_gpu = job["device"] == "gpu"
    model, dataset = build(job)

    class FirstLoss(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                self.loss = float(logs["loss"])

    class EpochTimer(keras.callbacks.Callback):
        """Epoch times, each epoch ended by a device sync (no per-step hook: Keras keeps
        dispatching its per-step callbacks asynchronously, as in a user's fit)."""

        def __init__(self):
            super().__init__()
            self.seconds, self.losses = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            tf.test.experimental.sync_devices()
            self.seconds.append(time.perf_counter() - self.start)
            self.losses.append(float(logs["loss"]))

    first_loss = FirstLoss()
    start = time.perf_counter()
    # shuffle=False: the dataset is cycled as it is (Keras would only warn that it cannot shuffle).
    model.fit(
        dataset,
        epochs=1,
        steps_per_epoch=job["warmup_steps"],
        verbose=0,
        shuffle=False,
        callbacks=[first_loss],
    )
    tf.test.experimental.sync_devices()
    warmup_seconds = time.perf_counter() - start
    if on_gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
    timer = EpochTimer()
    model.fit(
        dataset,
        epochs=job["epochs"],
        steps_per_epoch=job["steps"],
        verbose=0,
        shuffle=False,
        callbacks=[timer],
    )
    if on_gpu:
        peak_mib = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
    step_seconds = [seconds / job["steps"] for seconds in timer.seconds]
    step_ms = statistics.median(step_seconds) * 1e3
    return {
        "status": "ok",
        "error": None,
        "policy": model.dtype_policy.name,
        "jit_compile": bool(model.jit_compile),
        "optimizer": type(model.optimizer).__name__,
        "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
        "parameters": int(model.count_params()),
        "step_ms": step_ms,
        "epoch_step_ms": [s * 1e3 for s in step_seconds],
        "images_per_s": job["batch"] / (step_ms / 1e3),
        "peak_mib": peak_mib,
        "memory_kind": "gpu_allocator_peak" if on_gpu else "process_peak_rss",
        "loss_first": first_loss.loss,
        "loss_last": timer.losses[-1],
        "epoch_losses": timer.losses,
        "trained": bool(math.isfinite(timer.losses[-1]) and timer.losses[-1] < first_loss.loss),
        "steps": job["warmup_steps"] + job["epochs"] * job["steps"],
        "warmup_s": warmup_seconds,
    }


def main(job_path, result_path):
    with open(job_path) as f:
        job = json.load(f)
    try:
        record = measure(job)
    except Exception as e:  # noqa: BLE001 - recorded, and the benchmark goes on
        from tensorflow_dcn.benchmark.timing import failure_status, short_error

        record = {"status": failure_status(e), "error": short_error(e)}
    with open(result_path, "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
