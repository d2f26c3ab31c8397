"""Checks and times the CUDA core without TensorFlow, against torchvision, on a GPU machine.

    bash tests/cuda_core/build.sh            # here: nvcc -> .devbuild/libdcn_core.so
    python3 tests/cuda_core/check_core.py [--quick] [--sanitize] [--bench]

The core is called through ctypes (tests/cuda_core/core_capi.cu.cc) on PyTorch tensors.
References: torchvision.ops.deform_conv2d in float64 (forward and autograd gradients) and
torch.matmul in float64 for the GEMM engine. Sample positions are kept off integers so that
torchvision's one-sided derivatives agree with ours (they differ only at p = -1 exactly).
"""

import argparse
import ctypes
import os
import sys
import time

import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = ctypes.CDLL(os.environ.get("DCN_CORE_LIB", os.path.join(HERE, "../../.devbuild/libdcn_core.so")))
LIB.dcn_workspace_bytes.restype = ctypes.c_size_t
LIB.dcn_error_string.restype = ctypes.c_char_p
_LL, _P = ctypes.c_longlong, ctypes.c_void_p
LIB.dcn_gemm.argtypes = [ctypes.c_int] * 3 + [_LL] * 3 + [_P, _LL, _P, _LL, _P, _LL, _P]
LIB.dcn_run.argtypes = [ctypes.c_int, ctypes.c_int, _P, _P, _P, ctypes.c_int, _P]
LIB.dcn_workspace_bytes.argtypes = [ctypes.c_int, ctypes.c_int, _P, ctypes.c_int]
DTYPES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2, torch.float64: 3}
FAILURES = []


def check(err):
    if err != 0:
        raise RuntimeError(LIB.dcn_error_string(err).decode())


def dims(cfg, has_mask=True, has_bias=True):
    n, h, w, c, cout, k, s, p, d, g, dg = cfg
    ho = (h + 2 * p - (d * (k - 1) + 1)) // s + 1
    wo = (w + 2 * p - (d * (k - 1) + 1)) // s + 1
    vals = [n, h, w, c, ho, wo, cout, k, k, s, s, p, p, d, d, g, dg, int(has_mask), int(has_bias)]
    return (ctypes.c_longlong * len(vals))(*vals), ho, wo


def flags(tf32, det, im2col):
    return int(tf32) | 2 * int(det) | 4 * int(im2col)


def workspace_bytes(op, dtype, dim, tf32=True, det=False, im2col=False):
    return LIB.dcn_workspace_bytes(DTYPES[dtype], op, dim, flags(tf32, det, im2col))


def run(op, dtype, dim, tensors, tf32=True, det=False, im2col=False):
    ws = torch.empty(max(workspace_bytes(op, dtype, dim, tf32, det, im2col), 1), dtype=torch.uint8, device="cuda")
    ptrs = (ctypes.c_void_p * len(tensors))(*[t.data_ptr() if t is not None else None for t in tensors])
    check(LIB.dcn_run(DTYPES[dtype], op, dim, ptrs, ctypes.c_void_p(ws.data_ptr()),
                      flags(tf32, det, im2col), ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)))


def make_problem(cfg, dtype, offset_range=2.5, seed=0):
    n, h, w, c, cout, k, s, p, d, g, dg = cfg
    dim, ho, wo = dims(cfg)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=gen, device="cuda", dtype=torch.float64)
    x = r(n, h, w, c)
    # Offsets with fractional parts in [0.2, 0.8]: every sample away from integer positions.
    whole = torch.randint(-int(offset_range), int(offset_range) + 1, (n, ho, wo, 2 * dg * k * k), generator=gen, device="cuda")
    frac = 0.2 + 0.6 * torch.rand(n, ho, wo, 2 * dg * k * k, generator=gen, device="cuda", dtype=torch.float64)
    off = whole + frac
    mask = torch.rand(n, ho, wo, dg * k * k, generator=gen, device="cuda", dtype=torch.float64)
    wt = r(k, k, c // g, cout) / (k * k * c // g) ** 0.5
    b = r(cout)
    gout = r(n, ho, wo, cout)
    # Round to the tested dtype first so that the float64 reference sees the same inputs.
    return dim, [t.to(dtype).to(torch.float64) for t in (x, off, mask, wt, b, gout)]


def reference(cfg, x, off, mask, wt, b, gout):
    n, h, w, c, cout, k, s, p, d, g, dg = cfg
    xt, ot, mt, wt_, bt = [t.clone().requires_grad_(True) for t in (
        x.permute(0, 3, 1, 2), off.permute(0, 3, 1, 2), mask.permute(0, 3, 1, 2), wt.permute(3, 2, 0, 1), b)]
    y = torchvision.ops.deform_conv2d(xt, ot, wt_, bt, stride=s, padding=p, dilation=d, mask=mt)
    y.backward(gout.permute(0, 3, 1, 2))
    nhwc = lambda t: t.permute(0, 2, 3, 1)
    return (nhwc(y).detach(), nhwc(xt.grad), nhwc(ot.grad), nhwc(mt.grad), wt_.grad.permute(2, 3, 1, 0), bt.grad)


def ours(cfg, dtype, dim, x, off, mask, wt, b, gout, tf32=True, det=False, im2col=False):
    x, off, mask, wt, b, gout = [t.to(dtype).contiguous() for t in (x, off, mask, wt, b, gout)]
    # Poisoned outputs: every element must be written.
    y = torch.full(gout.shape, float("nan"), dtype=dtype, device="cuda")
    run(0, dtype, dim, [x, off, mask, wt, b, y], tf32, det, im2col)
    gx, goff, gm = (torch.full_like(t, float("nan")) for t in (x, off, mask))
    run(1, dtype, dim, [gout, x, off, mask, wt, gx, goff, gm], tf32, det, im2col)
    gw, gb = torch.full_like(wt, float("nan")), torch.full_like(b, float("nan"))
    run(2, dtype, dim, [gout, x, off, mask, gw, gb], tf32, det, im2col)
    return y, gx, goff, gm, gw, gb


TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, "tf32": 5e-3, torch.float16: 5e-3, torch.bfloat16: 3e-2}
NAMES = ("output", "grad_input", "grad_offset", "grad_mask", "grad_weight", "grad_bias")


def compare(label, got, want, tol):
    worst = 0.0
    for name, a, e in zip(NAMES, got, want):
        a = a.to(torch.float64)
        rel = ((a - e).norm() / e.norm().clamp_min(1e-30)).item()
        worst = max(worst, rel)
        if not rel <= tol:  # NaN fails too
            FAILURES.append(f"{label} {name}: rel err {rel:.2e} > {tol:.0e}")
    return worst


CONFIGS = [
    # n, h, w, c, cout, k, stride, pad, dil, groups, dg
    (2, 9, 11, 8, 6, 3, 1, 1, 1, 1, 1),
    (1, 13, 7, 16, 8, 3, 2, 2, 2, 2, 4),
    (3, 6, 6, 4, 4, 1, 1, 0, 1, 1, 2),
    (2, 10, 9, 12, 10, 5, 1, 2, 1, 1, 3),
    (2, 16, 16, 64, 64, 3, 1, 1, 1, 1, 1),
    (1, 20, 24, 40, 24, 3, 1, 1, 1, 2, 2),
    (2, 33, 31, 128, 96, 3, 2, 1, 1, 1, 4),
    # Shapes the fused kernels take (channels per group and deformable group multiples of 32):
    (2, 12, 10, 64, 32, 3, 1, 1, 1, 2, 2),
    (1, 9, 14, 96, 48, 3, 2, 1, 1, 1, 1),
    (2, 17, 13, 32, 200, 3, 1, 2, 2, 1, 1),
    (1, 11, 12, 64, 6, 5, 1, 2, 1, 1, 2),
    (3, 20, 18, 256, 130, 1, 1, 0, 1, 1, 1),
]


def check_parity(quick):
    configs = CONFIGS[:3] if quick else CONFIGS
    for cfg in configs:
        dim, data = make_problem(cfg, torch.float64)
        want = reference(cfg, *data)
        for dtype, tf32, det, im2col in [
                (torch.float64, True, False, False), (torch.float32, False, False, False),
                (torch.float32, True, False, False), (torch.float16, True, False, False),
                (torch.bfloat16, True, False, False), (torch.float32, False, True, False),
                (torch.float16, True, True, False), (torch.float32, False, False, True),
                (torch.float16, True, False, True), (torch.bfloat16, True, False, True)]:
            dim, data = make_problem(cfg, dtype)
            want = reference(cfg, *data)
            got = ours(cfg, dtype, dim, *data, tf32=tf32, det=det, im2col=im2col)
            tol = TOLERANCE["tf32" if (dtype == torch.float32 and tf32) else dtype]
            label = f"{cfg} {str(dtype):14s} tf32={tf32:d} det={det:d} im2col={im2col:d}"
            worst = compare(label, got, want, tol)
            print(f"parity {label} worst rel {worst:.2e}", flush=True)


def check_gemm():
    gen = torch.Generator(device="cuda").manual_seed(1)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        modes = {torch.float32: (0, 1, 2)}.get(dtype, (0, 2) if dtype != torch.float64 else (2,))
        for m, n, k in [(256, 128, 128), (300, 72, 200), (37, 5, 19), (1000, 130, 576)]:
            a = torch.randn(m, k, generator=gen, device="cuda", dtype=torch.float64).to(dtype)
            b = torch.randn(k, n, generator=gen, device="cuda", dtype=torch.float64).to(dtype)
            want = a.double() @ b.double()
            acc = torch.float64 if dtype == torch.float64 else torch.float32
            for variant in range(3):
                for mode in modes:
                    if variant == 0:
                        A, lda, B, ldb, out = a.contiguous(), k, b.contiguous(), n, torch.empty(m, n, dtype=dtype, device="cuda")
                    elif variant == 1:
                        A, lda, B, ldb, out = a.contiguous(), k, b.t().contiguous(), k, torch.empty(m, n, dtype=acc, device="cuda")
                    else:
                        A, lda, B, ldb, out = a.t().contiguous(), m, b.contiguous(), n, torch.empty(m, n, dtype=acc, device="cuda")
                    out.fill_(float("nan"))
                    check(LIB.dcn_gemm(DTYPES[dtype], variant, mode, m, n, k, ctypes.c_void_p(A.data_ptr()), lda,
                                       ctypes.c_void_p(B.data_ptr()), ldb, ctypes.c_void_p(out.data_ptr()), n,
                                       ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)))
                    rel = ((out.double() - want).norm() / want.norm()).item()
                    tol = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float64: 1e-12}.get(dtype, 1e-5 if mode != 0 else 2e-3)
                    status = "ok" if rel <= tol else "FAIL"
                    if status == "FAIL":
                        FAILURES.append(f"gemm {dtype} variant {variant} mode {mode} {m}x{n}x{k}: {rel:.2e}")
                    print(f"gemm {str(dtype):14s} v{variant} mode{mode} {m}x{n}x{k} rel {rel:.2e} {status}", flush=True)


def check_determinism():
    cfg = (2, 16, 16, 32, 32, 3, 1, 1, 1, 1, 2)
    for dtype in (torch.float32, torch.float16):
        dim, data = make_problem(cfg, dtype, offset_range=1)
        runs = [ours(cfg, dtype, dim, *data, det=True) for _ in range(3)]
        same = all(torch.equal(a, b) for r in runs[1:] for a, b in zip(runs[0], r))
        print(f"determinism {dtype}: bit-identical over 3 runs: {same}", flush=True)
        if not same:
            FAILURES.append(f"determinism {dtype}")


def check_nonfinite():
    """NaN/Inf/huge offsets: samples read zero, nothing is read out of bounds (run under
    compute-sanitizer), outputs stay finite."""
    cfg = (2, 7, 9, 8, 8, 3, 1, 1, 1, 1, 2)
    for dtype in (torch.float32, torch.float16):
        dim, data = make_problem(cfg, dtype, offset_range=6)
        off = data[1].clone()
        off.view(-1)[0::7] = float("nan")
        off.view(-1)[1::11] = float("inf")
        off.view(-1)[2::13] = -float("inf")
        off.view(-1)[3::17] = 1e30
        data[1] = off
        got = ours(cfg, dtype, dim, *data)
        finite = all(torch.isfinite(t).all().item() for t in got)
        print(f"non-finite offsets {dtype}: all results finite: {finite}", flush=True)
        if not finite:
            FAILURES.append(f"non-finite offsets {dtype}")


def bench():
    configs = [(8, 64, 64, 128), (8, 32, 32, 256), (4, 64, 64, 256), (4, 32, 32, 512), (2, 128, 128, 256)]
    print("bench: ms per call (CUDA events, 20 calls per timing, median of 7); ours | torchvision", flush=True)
    for n, h, w, c in configs:
        cfg = (n, h, w, c, c, 3, 1, 1, 1, 1, 1)
        for dtype, tf32 in [(torch.float32, False), (torch.float32, True), (torch.float16, True), (torch.bfloat16, True)]:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            dim, data = make_problem(cfg, dtype)
            x, off, mask, wt, b, gout = [t.to(dtype).contiguous() for t in data]
            y = torch.empty_like(gout)
            gx, goff, gm, gw, gb = (torch.empty_like(t) for t in (x, off, mask, wt, b))
            fwd = lambda im2col=False: run(0, dtype, dim, [x, off, mask, wt, b, y], tf32, im2col=im2col)
            def fwd_bwd(im2col=False):
                fwd(im2col)
                run(1, dtype, dim, [gout, x, off, mask, wt, gx, goff, gm], tf32, im2col=im2col)
                run(2, dtype, dim, [gout, x, off, mask, gw, gb], tf32, im2col=im2col)
            xt, ot, mt = (t.permute(0, 3, 1, 2).contiguous().requires_grad_(True) for t in (x, off, mask))
            wt_t = wt.permute(3, 2, 0, 1).contiguous().requires_grad_(True)
            bt = b.clone().requires_grad_(True)
            go_t = gout.permute(0, 3, 1, 2).contiguous()
            tv = lambda: torchvision.ops.deform_conv2d(xt, ot, wt_t, bt, padding=1, mask=mt)
            def tv_fb():
                tv().backward(go_t)
            row = []
            for fn in (fwd, fwd_bwd, tv, tv_fb, lambda: fwd(True), lambda: fwd_bwd(True)):
                try:
                    row.append(timeit(fn))
                except RuntimeError as e:
                    row.append(float("nan"))
            mib = max(workspace_bytes(op, dtype, dim, tf32) for op in range(3)) / 2**20
            print(f"bench {n}x{h}x{w}x{c} {str(dtype):14s} tf32={tf32:d} fwd {row[0]:.3f} | tv {row[2]:.3f} | im2col {row[4]:.3f}   "
                  f"fwd+bwd {row[1]:.3f} | tv {row[3]:.3f} | im2col {row[5]:.3f}   ratio vs tv fwd {row[2]/row[0]:.2f}x "
                  f"fwd+bwd {row[3]/row[1]:.2f}x   workspace {mib:.1f} MiB", flush=True)


def profile_once():
    """One forward + backward per path (fused, im2col) of two benchmark shapes, for ncu."""
    for cfg in [(8, 64, 64, 128, 128, 3, 1, 1, 1, 1, 1), (4, 32, 32, 512, 512, 3, 1, 1, 1, 1, 1)]:
        for dtype, tf32 in [(torch.float32, False), (torch.float16, True)]:
            dim, data = make_problem(cfg, dtype)
            for im2col in (False, True):
                print("profile", cfg, dtype, "im2col" if im2col else "fused", flush=True)
                ours(cfg, dtype, dim, *data, tf32=tf32, im2col=im2col)
                torch.cuda.synchronize()


def timeit(fn, calls=20, repeats=7):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sanitize", action="store_true", help="small cases only (compute-sanitizer)")
    parser.add_argument("--bench", action="store_true")
    parser.add_argument("--profile", action="store_true", help="one fwd+bwd per dtype (for ncu)")
    args = parser.parse_args()
    if args.profile:
        profile_once()
        return
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "torchvision", torchvision.__version__, flush=True)
    t0 = time.time()
    if args.sanitize:
        check_parity(quick=True)
        check_nonfinite()
        check_determinism()
    else:
        check_gemm()
        check_parity(args.quick)
        check_nonfinite()
        check_determinism()
        if args.bench:
            bench()
    print(f"done in {time.time() - t0:.1f}s; failures: {len(FAILURES)}")
    for f in FAILURES:
        print("FAIL", f)
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
