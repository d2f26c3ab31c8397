"""Timing and error bookkeeping shared by the TensorFlow runner and the torchvision worker.

Standard library only: the torchvision worker imports this file by path in a process that has
no TensorFlow.
"""

import re
import statistics
import time

# Calls per device sync are capped so that one repeat of a microsecond kernel stays bounded.
MAX_CALLS_PER_SYNC = 1000


def time_per_call(run_once, sync, *, warmup, repeats, target_seconds, run_many=None):
    """Median seconds per call of `run_once`, and the calls per sync it used.

    Every implementation is timed the same way: `warmup` calls, then `repeats` rounds of K calls
    followed by one device sync, where K is chosen from one synced call so that a round lasts
    about `target_seconds`; launch overhead is amortised over K calls for everyone alike.
    `run_many(K)`, when given, makes the K calls in one go (TensorFlow: a loop inside one graph,
    so that the per-call cost of entering a tf.function from Python is amortised as well).
    """
    for _ in range(warmup):
        run_once()
    sync()
    start = time.perf_counter()
    run_once()
    sync()
    single = time.perf_counter() - start
    calls = max(1, min(MAX_CALLS_PER_SYNC, round(target_seconds / max(single, 1e-7))))
    if run_many is None:

        def run_many(k):
            for _ in range(k):
                run_once()

    run_many(calls)  # warm-up of the batched form (tracing, autotuning)
    sync()
    per_call = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_many(calls)
        sync()
        per_call.append((time.perf_counter() - start) / calls)
    return statistics.median(per_call), calls


def failure_status(error):
    """'oom', 'unsupported' or 'error' for an exception raised by an implementation."""
    text = f"{type(error).__name__}: {error}"
    lowered = text.lower()
    if any(s in lowered for s in ("outofmemory", "out of memory", "resourceexhausted", " oom")):
        return "oom"
    if any(
        s in lowered
        for s in (
            "not implemented for",
            "no registered",
            "no xla kernel",
            "not supported",
            "unsupported",
        )
    ):
        return "unsupported"
    return "error"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Lines of a traced function's traceback (TensorFlow's "in user code:" part: `File ...` and the
# source line under it) and Keras' wrapper around a layer's error.
_NOISE = re.compile(
    r'^(in user code:|File ".*", line \d+, in .*|(\w+: )?Exception encountered '
    r"when calling .*)$"
)


def _essential(text):
    """The error message without tracebacks, Keras' call wrapper and terminal colours."""
    lines = [line.strip() for line in _ANSI.sub("", text).splitlines()]
    kept, skip_source_line = [], False
    for line in lines:
        if line.startswith("Arguments received by "):
            break
        if skip_source_line:
            skip_source_line = False
            continue
        if _NOISE.match(line):
            skip_source_line = line.startswith("File ")
            continue
        kept.append(line)
    return " ".join(" ".join(kept).split())


def short_error(error, limit=300):
    """An exception on one line, without tracebacks, shortened for a table footnote."""
    text = f"{type(error).__name__}: {_essential(str(error))}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
