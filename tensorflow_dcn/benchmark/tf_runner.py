"""The TensorFlow implementations: building each one's forward and forward+backward steps on one
device, timing them, and the float64 results they are checked against."""

import functools
import gc
import sys

import keras
import numpy as np
import tensorflow as tf

import tensorflow_dcn as tfdcn
from tensorflow_dcn.benchmark.configs import BASELINE_IMPLS, TF_OP_IMPLS, XLA_IMPLS
from tensorflow_dcn.benchmark.environment import constructor_arguments
from tensorflow_dcn.benchmark.timing import failure_status, short_error, time_per_call
from tensorflow_dcn.reference import PureTFDCNv2

LAYER_WEIGHTS = ("kernel", "bias", "offset_kernel", "offset_bias")


class Unsupported(Exception):
    """An implementation cannot run a config (its failure status is 'unsupported')."""


def _traced(function, args):
    """`function`'s concrete function for `args`: traced once, here, and called as such.

    Every measurement builds its steps anew from the same Python code (the step of config A,
    dtype B, impl C), so calling them through `tf.function` would count each new step as a
    retrace of that code and log TensorFlow's "triggered tf.function retracing" warning;
    concrete functions are what the benchmark means: one trace per step."""
    return function.get_concrete_function(*args)


def _repeated(step, args, jit_compile):
    """run_many for time_per_call: K calls of `step(*args)` inside one graph (a tf.while_loop
    carrying the step's outputs, so that no call can be pruned), traced once per K.

    Call k gets args[0] + k * zero, `zero` a run-time 0: without that every call would compute
    the same thing from the same tensors, and XLA (jit_compile) hoists such a loop-invariant
    computation out of the loop and runs it once."""

    @functools.lru_cache(maxsize=None)
    def graph(calls):
        def outputs(i, zero):  # conv2d has no gradient for offset and mask: None is no output
            first = args[0] + tf.cast(i, args[0].dtype) * zero
            return tuple(t for t in tf.nest.flatten(step(first, *args[1:])) if t is not None)

        def run(zero):
            def body(i, *_):
                return (i + 1,) + outputs(i, zero)

            start = (tf.constant(1),) + outputs(tf.constant(0), zero)
            return tf.while_loop(lambda i, *_: i < calls, body, start)

        zero_spec = tf.TensorSpec([], args[0].dtype)
        return _traced(tf.function(run, jit_compile=jit_compile), (zero_spec,))

    def run_many(calls):
        return graph(calls)(tf.zeros([], args[0].dtype))

    return run_many


def _explicit_padding(pad):
    return [[0, 0], [pad, pad], [pad, pad], [0, 0]]


def _policy(variant):
    """Keras dtype policy: half types as users train them, float32 variables (mixed precision)."""
    return "float32" if variant.dtype == "float32" else f"mixed_{variant.dtype}"


def _op_steps(operator, jit_compile):
    """Forward and forward+backward of an op-level implementation `operator(x, offset, mask,
    kernel, bias)`; the backward differentiates with respect to all five operands. Both are
    tf.functions (with XLA when `jit_compile`), traced by the caller (`_traced`)."""

    def forward_backward(x, offset, mask, kernel, bias, grad_y):
        operands = [x, offset, mask, kernel, bias]
        with tf.GradientTape() as tape:
            tape.watch(operands)
            y = operator(*operands)
        return y, tape.gradient(y, operands, output_gradients=grad_y)

    return (
        tf.function(operator, jit_compile=jit_compile),
        tf.function(forward_backward, jit_compile=jit_compile),
    )


def _layer_steps(layer, jit_compile):
    """Forward and forward+backward (input and all weights) of a built Keras layer, as
    tf.functions (with XLA when `jit_compile`), traced by the caller (`_traced`)."""

    def forward(x):
        return layer(x)

    def forward_backward(x, grad_y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
        sources = [x] + list(layer.trainable_variables)
        return y, tape.gradient(y, sources, output_gradients=tf.cast(grad_y, y.dtype))

    return (
        tf.function(forward, jit_compile=jit_compile),
        tf.function(forward_backward, jit_compile=jit_compile),
    )


def _baseline_kwargs(layer_class, config):
    """Constructor arguments for a user's layer: only those its signature names, and an error
    when the config needs one it lacks (e.g. iSeg's DCNv2 is fixed at stride 1, 'same', dg 1)."""
    accepted = constructor_arguments(layer_class)
    default_geometry = config.stride == 1 and config.pad == (config.kernel - 1) // 2
    options = (
        (("strides", "stride"), (config.stride, config.stride), config.stride == 1),
        (("padding",), "same" if default_geometry else config.pad, default_geometry),
        (("deformable_groups",), config.deformable_groups, config.deformable_groups == 1),
        (("use_bias",), True, True),
    )
    kwargs = {}
    for names, value, fine_without in options:
        name = next((n for n in names if n in accepted), None)
        if name is not None:
            kwargs[name] = value
        elif not fine_without:
            raise Unsupported(
                f"{layer_class.__name__} takes no {names[0]} argument, which {config.name} needs"
            )
    return kwargs


def _load_weights(layer, data):
    for name in LAYER_WEIGHTS:
        variable = getattr(layer, name, None)
        if variable is None:
            raise Unsupported(f"{type(layer).__name__} has no `{name}` weight")
        if tuple(variable.shape) != data[name].shape:
            raise Unsupported(
                f"{type(layer).__name__}.{name} has shape {tuple(variable.shape)}, "
                f"expected {data[name].shape}"
            )
        variable.assign(data[name])


class TensorFlowRunner:
    """Runs the TensorFlow implementations of one problem at a time on one device."""

    def __init__(self, device, *, warmup, repeats, target_seconds, baseline_class=None):
        self.device = device  # "GPU:0" or "CPU:0"
        self.on_gpu = device.startswith("GPU")
        self.timing = dict(warmup=warmup, repeats=repeats, target_seconds=target_seconds)
        self.baseline_class = baseline_class

    def _tensor(self, array, dtype):
        with tf.device(self.device):
            return tf.identity(tf.cast(array, dtype))

    def _peak_extra_mib(self, run_once):
        """Peak allocator growth during one synced call; None where TF keeps no stats (CPU)."""
        if not self.on_gpu:
            return None
        tf.test.experimental.sync_devices()
        tf.config.experimental.reset_memory_stats(self.device)
        before = tf.config.experimental.get_memory_info(self.device)["current"]
        run_once()
        tf.test.experimental.sync_devices()
        return (tf.config.experimental.get_memory_info(self.device)["peak"] - before) / 2**20

    def _steps(self, impl, config, variant, data):
        """(forward, forward_backward, forward args, forward_backward args) of one impl."""
        dtype = tf.as_dtype(variant.dtype)
        x, grad_y = self._tensor(data["x"], dtype), self._tensor(data["grad_y"], dtype)
        if impl in TF_OP_IMPLS:
            operands = [self._tensor(data[k], dtype) for k in ("offset", "mask", "kernel", "bias")]
            if impl.startswith("tfdcn"):

                def operator(x, offset, mask, kernel, bias):
                    return tfdcn.deform_conv2d(x, offset, kernel, bias, mask, **config.geometry())
            else:

                def operator(x, offset, mask, kernel, bias):
                    del offset, mask  # the DCN ops' signature; their gradients come out None
                    y = tf.nn.conv2d(x, kernel, config.stride, _explicit_padding(config.pad))
                    return tf.nn.bias_add(y, bias)

            forward, forward_backward = _op_steps(operator, jit_compile=impl in XLA_IMPLS)
            return forward, forward_backward, [x] + operands, [x] + operands + [grad_y]

        if impl in BASELINE_IMPLS:
            layer_class = self.baseline_class
            kwargs = _baseline_kwargs(layer_class, config)
        else:
            layer_class = tfdcn.DCNv2 if impl.startswith("tfdcn_layer") else PureTFDCNv2
            kwargs = config.geometry()
        with tf.device(self.device):
            layer = layer_class(
                config.channels, (config.kernel, config.kernel), dtype=_policy(variant), **kwargs
            )
            layer(x)  # builds the weights
            _load_weights(layer, data)
        forward, forward_backward = _layer_steps(layer, jit_compile=impl in XLA_IMPLS)
        return forward, forward_backward, [x], [x, grad_y]

    def measure(self, impl, config, variant, data):
        """A record (times, memory, status) and the forward output as numpy (None on failure)."""
        record = {"status": "ok", "error": None}
        try:
            with tf.device(self.device):
                forward, forward_backward, fwd_args, fwd_bwd_args = self._steps(
                    impl, config, variant, data
                )
                output = _traced(forward, fwd_args)(*fwd_args).numpy()
        except Exception as e:  # noqa: BLE001 - recorded, and the run goes on
            return dict(status=failure_status(e), error=short_error(e)), None
        jit_compile = impl in XLA_IMPLS
        for name, function, args in (
            ("fwd", forward, fwd_args),
            ("fwd_bwd", forward_backward, fwd_bwd_args),
        ):
            try:
                with tf.device(self.device):
                    step = _traced(function, args)  # the forward's: traced above, cached

                    def run_once(step=step, args=args):
                        return step(*args)

                    seconds, calls = time_per_call(
                        run_once,
                        tf.test.experimental.sync_devices,
                        run_many=_repeated(step, args, jit_compile),
                        **self.timing,
                    )
                    peak = self._peak_extra_mib(run_once)
                record.update(
                    {
                        f"{name}_ms": seconds * 1e3,
                        f"{name}_calls_per_sync": calls,
                        "fwd_peak_extra_mib" if name == "fwd" else "peak_extra_mib": peak,
                    }
                )
            except Exception as e:  # noqa: BLE001 - e.g. fwd fits but fwd+bwd runs out of memory
                record.update(
                    status=failure_status(e), error=f"{name.replace('_', '+')}: {short_error(e)}"
                )
                break
        gc.collect()
        return record, output

    def reference_outputs(self, config, variant, data):
        """float64 results for this dtype's (rounded) operands: {'op', 'layer', 'conv2d'}, or None.

        Op level rounds every operand to the dtype first; layer level rounds the input only, the
        layers keep float32 weights (mixed precision casts them down inside). Runs on the
        benchmark device, or on the CPU where that fails.
        """
        dtype = tf.as_dtype(variant.dtype)

        def compute():
            def rounded(name):
                return tf.cast(tf.cast(data[name], dtype), tf.float64)

            def exact(name):
                return tf.constant(data[name], tf.float64)

            geometry = config.geometry()
            x = rounded("x")
            op = tfdcn.deform_conv2d(
                x,
                rounded("offset"),
                rounded("kernel"),
                rounded("bias"),
                rounded("mask"),
                **geometry,
            )
            conv = tf.nn.bias_add(
                tf.nn.conv2d(x, rounded("kernel"), config.stride, _explicit_padding(config.pad)),
                rounded("bias"),
            )
            predicted = tf.nn.bias_add(
                tf.nn.conv2d(
                    x, exact("offset_kernel"), config.stride, _explicit_padding(config.pad)
                ),
                exact("offset_bias"),
            )
            split = 2 * config.deformable_groups * config.taps
            layer = tfdcn.deform_conv2d(
                x,
                predicted[..., :split],
                exact("kernel"),
                exact("bias"),
                tf.sigmoid(predicted[..., split:]),
                **geometry,
            )
            return {"op": op.numpy(), "layer": layer.numpy(), "conv2d": conv.numpy()}

        for device in dict.fromkeys((self.device, "CPU:0")):
            try:
                with tf.device(device):
                    return compute()
            except tf.errors.OpError as e:  # e.g. out of memory: try the host, then give up
                print(
                    f"float64 reference of {config.name} {variant.key} failed on {device}: "
                    f"{short_error(e)}",
                    file=sys.stderr,
                    flush=True,
                )
        return None


def output_errors(output, reference):
    """Largest |y - y64| and that divided by the largest |y64| (a scale-free relative error)."""
    if output is None or reference is None:
        return None, None
    if output.shape != reference.shape:
        raise ValueError(f"output shape {output.shape} != reference shape {reference.shape}")
    max_abs = float(np.max(np.abs(output.astype(np.float64) - reference)))
    scale = float(np.max(np.abs(reference)))
    return max_abs, (max_abs / scale if scale else None)


def reset_between_configs():
    keras.backend.clear_session()
    gc.collect()
