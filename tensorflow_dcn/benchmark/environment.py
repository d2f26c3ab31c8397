"""What both benchmarks record about the machine and load from the command line: the device,
the software versions, a `--baseline module:Class`."""

import datetime
import importlib
import inspect
import os
import platform
import shutil
import subprocess

import keras
import tensorflow as tf

import tensorflow_dcn


def resolve_device(requested, configure=True):
    """'gpu' or 'cpu' (None: gpu when TensorFlow sees one). With `configure`, hides the GPUs for
    'cpu' and turns on memory growth for 'gpu': call it before TensorFlow touches a GPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if requested == "gpu" and not gpus:
        raise ValueError("--device gpu: TensorFlow sees no GPU")
    device = requested or ("gpu" if gpus else "cpu")
    if configure:
        if device == "cpu":
            tf.config.set_visible_devices([], "GPU")
        else:
            for gpu in gpus:
                # Without growth TensorFlow would hold the whole GPU; peaks are measured either way.
                tf.config.experimental.set_memory_growth(gpu, True)
    return device


def load_class(spec):
    """The class `module:Class` names; ValueError saying why when it cannot be loaded."""
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"--baseline {spec}: expected MODULE:CLASS")
    try:
        return getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--baseline {spec}: cannot load it ({type(e).__name__}: {e})") from e


def constructor_arguments(layer_class):
    """The named arguments a Keras layer class' constructor takes, following `*args, **kwargs`
    pass-throughs up its base classes (e.g. tfdcn.DCNv2 -> its base layer), short of Keras'
    own Layer arguments."""
    names = set()
    for cls in layer_class.__mro__:
        if cls in keras.layers.Layer.__mro__:
            break
        if "__init__" not in vars(cls):
            continue
        parameters = inspect.signature(cls.__init__).parameters.values()
        names.update(
            p.name
            for p in parameters
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
        )
        if not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters):
            break
    return names


def _command_output(command):
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = result.stdout.strip().splitlines()
    return lines[0] if result.returncode == 0 and lines else None


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device):
    """The header fields that describe the run's machine and software."""
    build = tf.sysconfig.get_build_info()
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "tf_cuda": build.get("cuda_version"),
        "tf_cudnn": build.get("cudnn_version"),
        "keras": keras.__version__,
        "tensorflow_dcn": tensorflow_dcn.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if device == "gpu":
        details = tf.config.experimental.get_device_details(
            tf.config.list_physical_devices("GPU")[0]
        )
        capability = details.get("compute_capability")
        info.update(
            device_name=details.get("device_name"),
            compute_capability=".".join(map(str, capability)) if capability else None,
            driver=_command_output(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            )
            if shutil.which("nvidia-smi")
            else None,
        )
    else:
        info["device_name"] = _cpu_name()
    return info
