"""Times torchvision.ops.deform_conv2d for the benchmark, in a process of its own.

Run by `python -m tensorflow_dcn.benchmark` as `<python> torchvision_worker.py JOB.json`: importing
torchvision next to TensorFlow in one process crashes, and the benchmark may point at another
Python (--torch-python). Needs only numpy, torch and torchvision. The job names the problems
(NHWC float32 .npz files written by the benchmark), dtypes and timing settings; the worker
writes `results.json` and each output (NHWC) into the job's out_dir, and one progress line per
measurement to stderr.
"""

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # even under PYTHONSAFEPATH
from timing import failure_status, short_error, time_per_call  # noqa: E402


def _versions(torch, torchvision, device):
    versions = {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "torch_cuda": torch.version.cuda,
    }
    if device == "cuda":
        versions["torch_device_name"] = torch.cuda.get_device_name(0)
        versions["torch_cudnn"] = torch.backends.cudnn.version()
    return versions


def _nchw_problem(torch, data, dtype, device):
    """The benchmark's NHWC arrays as torchvision's NCHW tensors (channel order unchanged)."""
    to = dict(dtype=dtype, device=device)
    return {
        "input": torch.from_numpy(data["x"]).permute(0, 3, 1, 2).contiguous().to(**to),
        "offset": torch.from_numpy(data["offset"]).permute(0, 3, 1, 2).contiguous().to(**to),
        "mask": torch.from_numpy(data["mask"]).permute(0, 3, 1, 2).contiguous().to(**to),
        "weight": torch.from_numpy(data["kernel"]).permute(3, 2, 0, 1).contiguous().to(**to),
        "bias": torch.from_numpy(data["bias"]).to(**to),
        "grad_output": torch.from_numpy(data["grad_y"]).permute(0, 3, 1, 2).contiguous().to(**to),
    }


def _measure(torch, deform_conv2d, problem, params, job, device):
    """fwd/fwd+bwd median ms, peak extra MiB for each, and the forward output (NHWC numpy)."""
    stride, pad = (params["stride"],) * 2, (params["pad"],) * 2
    operands = [problem[k] for k in ("input", "offset", "mask", "weight", "bias")]

    def forward():
        with torch.no_grad():
            return deform_conv2d(
                problem["input"],
                problem["offset"],
                problem["weight"],
                problem["bias"],
                stride=stride,
                padding=pad,
                mask=problem["mask"],
            )

    def forward_backward():
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_() for t in operands]
            x, offset, mask, weight, bias = leaves
            y = deform_conv2d(x, offset, weight, bias, stride=stride, padding=pad, mask=mask)
            return y, torch.autograd.grad(y, leaves, problem["grad_output"])

    if device == "cuda":
        sync = torch.cuda.synchronize
    else:

        def sync():
            pass

    def peak_extra_mib(step):
        if device != "cuda":
            return None
        sync()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        sync()
        return (torch.cuda.max_memory_allocated() - before) / 2**20

    result = {}
    output = forward()
    for name, step in (("fwd", forward), ("fwd_bwd", forward_backward)):
        seconds, calls = time_per_call(
            step,
            sync,
            warmup=job["warmup"],
            repeats=job["repeats"],
            target_seconds=job["target_seconds"],
        )
        result[f"{name}_ms"] = seconds * 1e3
        result[f"{name}_calls_per_sync"] = calls
    result["fwd_peak_extra_mib"] = peak_extra_mib(forward)
    result["peak_extra_mib"] = peak_extra_mib(forward_backward)
    return result, output.permute(0, 2, 3, 1).float().cpu().numpy()


def main(job_path):
    with open(job_path) as f:
        job = json.load(f)
    out_dir = job["out_dir"]
    try:
        import torch
        import torchvision
        from torchvision.ops import deform_conv2d
    except ImportError as e:
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump({"unavailable": short_error(e)}, f)
        return
    device = job["device"]
    if device == "cuda" and not torch.cuda.is_available():
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump({"unavailable": "torch sees no CUDA device"}, f)
        return
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    records = []
    total = sum(len(case["variants"]) for case in job["cases"])
    started = time.perf_counter()
    for case in job["cases"]:
        data = dict(np.load(case["data"]))
        for variant in case["variants"]:
            tf32 = variant["tf32"] is not False  # half types run with TF32 left on, as in TF
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            record = {"config": case["config"], "dtype_key": variant["key"]}
            try:
                problem = _nchw_problem(torch, data, dtypes[variant["dtype"]], device)
                result, output = _measure(
                    torch, deform_conv2d, problem, case["params"], job, device
                )
                output_file = os.path.join(out_dir, f"{case['config']}-{variant['key']}.npy")
                np.save(output_file, output)
                record.update(result, status="ok", output_file=output_file)
            except Exception as e:  # noqa: BLE001 - recorded, and the run goes on
                record.update(status=failure_status(e), error=short_error(e))
            finally:
                problem = None
                if device == "cuda":
                    torch.cuda.empty_cache()
            records.append(record)
            summary = (
                f"fwd {record['fwd_ms']:.3f} ms, fwd+bwd {record['fwd_bwd_ms']:.3f} ms"
                if record["status"] == "ok"
                else f"{record['status']}: {record['error']}"
            )
            print(
                f"[torchvision {len(records)}/{total}, {time.perf_counter() - started:.0f}s] "
                f"{case['config']} {variant['key']}: {summary}",
                file=sys.stderr,
                flush=True,
            )
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump({"versions": _versions(torch, torchvision, device), "records": records}, f)


if __name__ == "__main__":
    main(sys.argv[1])
