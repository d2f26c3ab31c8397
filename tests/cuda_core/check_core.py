"""Checks and times the CUDA core without TensorFlow, against torchvision, on a GPU machine.

    bash tests/cuda_core/build.sh            # here: nvcc -> .devbuild/libdcn_core.so
    python3 tests/cuda_core/check_core.py [--quick] [--sanitize] [--bench] [--hopper]
    python3 tests/cuda_core/compare_bench.py A=a.txt B=b.txt ...   # builds side by side

The core is called through ctypes (tests/cuda_core/core_capi.cu.cc) on PyTorch tensors; every run
plans as a binding does (cuda::MakePlan) and reports which implementation the plan names.
References: torchvision.ops.deform_conv2d in float64 (forward and autograd gradients) and
torch.matmul in float64 for the GEMM engine. Sample positions are kept off integers so that
torchvision's one-sided derivatives agree with ours (they differ only at p = -1 exactly).
--hopper checks the sm_90a kernels (cuda_wgmma_sm90a: the forward, the backward input and the
backward weight) against float64 over varied shapes, and their fallback, and times the forward
against cuda_fused_sm80 and torchvision (table last).
"""

import argparse
import ctypes
import os
import subprocess
import sys
import time

import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = ctypes.CDLL(
    os.environ.get("DCN_CORE_LIB", os.path.join(HERE, "../../.devbuild/libdcn_core.so"))
)
LIB.dcn_workspace_bytes.restype = ctypes.c_size_t
LIB.dcn_error_string.restype = ctypes.c_char_p
LIB.dcn_implementation.restype = ctypes.c_char_p
_LL, _P = ctypes.c_longlong, ctypes.c_void_p
LIB.dcn_gemm.argtypes = [ctypes.c_int] * 3 + [_LL] * 3 + [_P, _LL, _P, _LL, _P, _LL, _P]
LIB.dcn_run.argtypes = [ctypes.c_int, ctypes.c_int, _P, _P, _P, ctypes.c_int, _P]
LIB.dcn_workspace_bytes.argtypes = [ctypes.c_int, ctypes.c_int, _P, ctypes.c_int]
LIB.dcn_implementation.argtypes = [ctypes.c_int, ctypes.c_int, _P, ctypes.c_int]
LIB.dcn_sm90a_available.restype = ctypes.c_int
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


CHOICES = {"auto": 0, "im2col": 1, "portable": 2}  # cuda::Options::choice (plan.h KernelChoice)


def flags(tf32, det, choice):
    return int(tf32) | 2 * int(det) | 4 * CHOICES[choice]


def workspace_bytes(op, dtype, dim, tf32=True, det=False, choice="auto"):
    return LIB.dcn_workspace_bytes(DTYPES[dtype], op, dim, flags(tf32, det, choice))


def implementation(op, dtype, dim, tf32=True, det=False, choice="auto"):
    """The implementation the planner picks, e.g. 'cuda_wgmma_sm90a'."""
    return LIB.dcn_implementation(DTYPES[dtype], op, dim, flags(tf32, det, choice)).decode()


def run(op, dtype, dim, tensors, tf32=True, det=False, choice="auto"):
    ws = torch.empty(
        max(workspace_bytes(op, dtype, dim, tf32, det, choice), 1), dtype=torch.uint8, device="cuda"
    )
    ptrs = (ctypes.c_void_p * len(tensors))(
        *[t.data_ptr() if t is not None else None for t in tensors]
    )
    check(
        LIB.dcn_run(
            DTYPES[dtype],
            op,
            dim,
            ptrs,
            ctypes.c_void_p(ws.data_ptr()),
            flags(tf32, det, choice),
            ctypes.c_void_p(torch.cuda.current_stream().cuda_stream),
        )
    )


def make_problem(cfg, dtype, offset_range=2.5, seed=0):
    n, h, w, c, cout, k, s, p, d, g, dg = cfg
    dim, ho, wo = dims(cfg)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=gen, device="cuda", dtype=torch.float64)
    x = r(n, h, w, c)
    # Offsets with fractional parts in [0.2, 0.8]: every sample away from integer positions.
    whole = torch.randint(
        -int(offset_range),
        int(offset_range) + 1,
        (n, ho, wo, 2 * dg * k * k),
        generator=gen,
        device="cuda",
    )
    frac = 0.2 + 0.6 * torch.rand(
        n, ho, wo, 2 * dg * k * k, generator=gen, device="cuda", dtype=torch.float64
    )
    off = whole + frac
    mask = torch.rand(n, ho, wo, dg * k * k, generator=gen, device="cuda", dtype=torch.float64)
    wt = r(k, k, c // g, cout) / (k * k * c // g) ** 0.5
    b = r(cout)
    gout = r(n, ho, wo, cout)
    # Round to the tested dtype first so that the float64 reference sees the same inputs.
    return dim, [t.to(dtype).to(torch.float64) for t in (x, off, mask, wt, b, gout)]


def reference(cfg, x, off, mask, wt, b, gout):
    n, h, w, c, cout, k, s, p, d, g, dg = cfg
    xt, ot, mt, wt_, bt = [
        t.clone().requires_grad_(True)
        for t in (
            x.permute(0, 3, 1, 2),
            off.permute(0, 3, 1, 2),
            mask.permute(0, 3, 1, 2),
            wt.permute(3, 2, 0, 1),
            b,
        )
    ]
    y = torchvision.ops.deform_conv2d(xt, ot, wt_, bt, stride=s, padding=p, dilation=d, mask=mt)
    y.backward(gout.permute(0, 3, 1, 2))
    nhwc = lambda t: t.permute(0, 2, 3, 1)
    return (
        nhwc(y).detach(),
        nhwc(xt.grad),
        nhwc(ot.grad),
        nhwc(mt.grad),
        wt_.grad.permute(2, 3, 1, 0),
        bt.grad,
    )


def ours(cfg, dtype, dim, x, off, mask, wt, b, gout, tf32=True, det=False, choice="auto"):
    x, off, mask, wt, b, gout = [t.to(dtype).contiguous() for t in (x, off, mask, wt, b, gout)]
    # Poisoned outputs: every element must be written.
    y = torch.full(gout.shape, float("nan"), dtype=dtype, device="cuda")
    run(0, dtype, dim, [x, off, mask, wt, b, y], tf32, det, choice)
    gx, goff, gm = (torch.full_like(t, float("nan")) for t in (x, off, mask))
    run(1, dtype, dim, [gout, x, off, mask, wt, gx, goff, gm], tf32, det, choice)
    gw, gb = torch.full_like(wt, float("nan")), torch.full_like(b, float("nan"))
    run(2, dtype, dim, [gout, x, off, mask, gw, gb], tf32, det, choice)
    return y, gx, goff, gm, gw, gb


TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    "tf32": 5e-3,
    torch.float16: 5e-3,
    torch.bfloat16: 3e-2,
}
NAMES = ("output", "grad_input", "grad_offset", "grad_mask", "grad_weight", "grad_bias")


def strict_fp32_tolerance(cfg):
    """Float32 (3xTF32) sums of K products: the relative error grows about as sqrt(K) times the
    unit roundoff. The longest sums: the forward's over taps x channels per group, the weight
    gradient's over pixels. H200: 2.09e-5 for the forward with K = 9216, ours and im2col alike."""
    n, h, w, c, cout, k, s, p, d, g, dg = cfg
    _, ho, wo = dims(cfg)
    longest = max(k * k * c // g, cout // g, n * ho * wo)
    return max(TOLERANCE[torch.float32], 3e-7 * longest**0.5)


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
    # The fused backward input in fp16/bf16 takes one image per pass here (its float buffers are
    # bounded): two passes.
    (2, 48, 48, 1024, 32, 3, 1, 1, 1, 1, 1),
]


def check_parity(quick):
    configs = CONFIGS[:3] if quick else CONFIGS
    for cfg in configs:
        dim, data = make_problem(cfg, torch.float64)
        want = reference(cfg, *data)
        for dtype, tf32, det, choice in [
            (torch.float64, True, False, "auto"),
            (torch.float32, False, False, "auto"),
            (torch.float32, True, False, "auto"),
            (torch.float16, True, False, "auto"),
            (torch.bfloat16, True, False, "auto"),
            (torch.float32, False, True, "auto"),
            (torch.float16, True, True, "auto"),
            (torch.float32, False, False, "im2col"),
            (torch.float16, True, False, "im2col"),
            (torch.bfloat16, True, False, "im2col"),
            (torch.float16, True, False, "portable"),
            (torch.float32, True, False, "portable"),
        ]:
            dim, data = make_problem(cfg, dtype)
            want = reference(cfg, *data)
            got = ours(cfg, dtype, dim, *data, tf32=tf32, det=det, choice=choice)
            tol = TOLERANCE["tf32" if (dtype == torch.float32 and tf32) else dtype]
            if dtype == torch.float32 and not tf32:
                tol = strict_fp32_tolerance(cfg)
            label = f"{cfg} {str(dtype):14s} tf32={tf32:d} det={det:d} {choice:8s}"
            worst = compare(label, got, want, tol)
            ran = "/".join(implementation(op, dtype, dim, tf32, det, choice) for op in range(3))
            print(f"parity {label} worst rel {worst:.2e}  ran {ran}", flush=True)


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
                        A, lda, B, ldb, out = (
                            a.contiguous(),
                            k,
                            b.contiguous(),
                            n,
                            torch.empty(m, n, dtype=dtype, device="cuda"),
                        )
                    elif variant == 1:
                        A, lda, B, ldb, out = (
                            a.contiguous(),
                            k,
                            b.t().contiguous(),
                            k,
                            torch.empty(m, n, dtype=acc, device="cuda"),
                        )
                    else:
                        A, lda, B, ldb, out = (
                            a.t().contiguous(),
                            m,
                            b.contiguous(),
                            n,
                            torch.empty(m, n, dtype=acc, device="cuda"),
                        )
                    out.fill_(float("nan"))
                    check(
                        LIB.dcn_gemm(
                            DTYPES[dtype],
                            variant,
                            mode,
                            m,
                            n,
                            k,
                            ctypes.c_void_p(A.data_ptr()),
                            lda,
                            ctypes.c_void_p(B.data_ptr()),
                            ldb,
                            ctypes.c_void_p(out.data_ptr()),
                            n,
                            ctypes.c_void_p(torch.cuda.current_stream().cuda_stream),
                        )
                    )
                    rel = ((out.double() - want).norm() / want.norm()).item()
                    tol = {torch.float16: 2e-3, torch.bfloat16: 1e-2, torch.float64: 1e-12}.get(
                        dtype, 1e-5 if mode != 0 else 2e-3
                    )
                    status = "ok" if rel <= tol else "FAIL"
                    if status == "FAIL":
                        FAILURES.append(
                            f"gemm {dtype} variant {variant} mode {mode} {m}x{n}x{k}: {rel:.2e}"
                        )
                    print(
                        f"gemm {str(dtype):14s} v{variant} mode{mode} {m}x{n}x{k} "
                        f"rel {rel:.2e} {status}",
                        flush=True,
                    )


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


BENCH_CONFIGS = [
    (8, 64, 64, 128),
    (8, 32, 32, 256),
    (4, 64, 64, 256),
    (4, 32, 32, 512),
    (2, 128, 128, 256),
]
PROFILE_CONFIGS = [(8, 64, 64, 128), (4, 32, 32, 512)]


def parse_configs(text):
    """'16x64x64x64,8x32x32x256' -> [(16, 64, 64, 64), (8, 32, 32, 256)]: N, H, W, C (Cout = C)."""
    configs = []
    for spec in text.split(","):
        parts = spec.strip().split("x")
        if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise argparse.ArgumentTypeError(f"config {spec!r} is not NxHxWxC")
        configs.append(tuple(int(p) for p in parts))
    return configs


def bench(configs=BENCH_CONFIGS):
    print(
        "bench: ms per call (CUDA events, 20 calls per timing, median of 7); ours | torchvision",
        flush=True,
    )
    for n, h, w, c in configs:
        cfg = (n, h, w, c, c, 3, 1, 1, 1, 1, 1)
        for dtype, tf32 in [
            (torch.float32, False),
            (torch.float32, True),
            (torch.float16, True),
            (torch.bfloat16, True),
        ]:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
            dim, data = make_problem(cfg, dtype)
            x, off, mask, wt, b, gout = [t.to(dtype).contiguous() for t in data]
            y = torch.empty_like(gout)
            gx, goff, gm, gw, gb = (torch.empty_like(t) for t in (x, off, mask, wt, b))
            fwd = lambda choice="auto": run(
                0, dtype, dim, [x, off, mask, wt, b, y], tf32, choice=choice
            )

            def bwd_input(choice="auto"):
                run(1, dtype, dim, [gout, x, off, mask, wt, gx, goff, gm], tf32, choice=choice)

            def bwd_weight(choice="auto"):
                run(2, dtype, dim, [gout, x, off, mask, gw, gb], tf32, choice=choice)

            def fwd_bwd(choice="auto"):
                fwd(choice)
                bwd_input(choice)
                bwd_weight(choice)

            xt, ot, mt = (
                t.permute(0, 3, 1, 2).contiguous().requires_grad_(True) for t in (x, off, mask)
            )
            wt_t = wt.permute(3, 2, 0, 1).contiguous().requires_grad_(True)
            bt = b.clone().requires_grad_(True)
            go_t = gout.permute(0, 3, 1, 2).contiguous()
            tv = lambda: torchvision.ops.deform_conv2d(xt, ot, wt_t, bt, padding=1, mask=mt)

            def tv_fb():
                tv().backward(go_t)

            row = []
            fns = (fwd, fwd_bwd, tv, tv_fb, lambda: fwd("im2col"), lambda: fwd_bwd("im2col"))
            fns += (bwd_input, bwd_weight, lambda: bwd_weight("im2col"))
            # The portable backward input: cuda_fused_sm80 where auto plans the sm_90a kernel.
            fns += (lambda: bwd_input("portable"),)
            for fn in fns:
                try:
                    row.append(timeit(fn))
                except RuntimeError:
                    row.append(float("nan"))
            mib = max(workspace_bytes(op, dtype, dim, tf32) for op in range(3)) / 2**20
            print(
                f"bench {n}x{h}x{w}x{c} {str(dtype):14s} tf32={tf32:d} fwd {row[0]:.3f} | "
                f"tv {row[2]:.3f} | im2col {row[4]:.3f}   fwd+bwd {row[1]:.3f} | "
                f"tv {row[3]:.3f} | im2col {row[5]:.3f}   ratio vs tv fwd {row[2] / row[0]:.2f}x "
                f"fwd+bwd {row[3] / row[1]:.2f}x   bwd input {row[6]:.3f} weight {row[7]:.3f} "
                f"(im2col {row[8]:.3f})   bwd input portable {row[9]:.3f}   "
                f"workspace {mib:.1f} MiB",
                flush=True,
            )


def profile_once(configs=PROFILE_CONFIGS):
    """One forward + backward of benchmark shapes, default and im2col kernels, for ncu."""
    for n, h, w, c in configs:
        cfg = (n, h, w, c, c, 3, 1, 1, 1, 1, 1)
        for dtype, tf32 in [(torch.float32, False), (torch.float32, True), (torch.float16, True)]:
            dim, data = make_problem(cfg, dtype)
            for choice in ("auto", "im2col"):
                ran = "/".join(
                    implementation(op, dtype, dim, tf32, choice=choice) for op in (0, 1, 2)
                )
                print(f"profile {cfg} {dtype} tf32={tf32:d} {choice} ran {ran}", flush=True)
                ours(cfg, dtype, dim, *data, tf32=tf32, choice=choice)
                torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------
# The sm_90a kernels (cuda_wgmma_sm90a): accuracy, plan choice, fallback, timing.
# ---------------------------------------------------------------------------------------------

HOPPER_TOLERANCE = {"fp16": 1e-3, "bf16": 8e-3, "tf32": 1e-3}  # fwd, vs float64
# dtype, name, TF32 allowed; "fp32" (TF32 off) runs as 3xTF32 and meets strict_fp32_tolerance.
HOPPER_DTYPES = (
    (torch.float16, "fp16", True),
    (torch.bfloat16, "bf16", True),
    (torch.float32, "tf32", True),
    (torch.float32, "fp32", False),
)


def hopper_takes(cfg, name):
    """Whether the sm_90a kernels take the problem: every case here but 3xTF32's forward on the
    128 x 128 tile with more than 24 taps (two parts per operand and the sample table exceed the
    227 KB of shared memory)."""
    n, h, w, c, cout, k, s, p, d, g, dg = cfg
    return not (name == "fp32" and cout // g <= 128 and k * k > 24)


def hopper_takes_input(cfg, name):
    """Whether the auto plan runs the sm_90a backward input (outside deterministic mode): fp32
    (TF32 or 3xTF32), fp16/bf16 with more than 128 output channels per group (below, the fused
    kernel is faster); input channels per group and per deformable group multiples of 4; the
    output channels a multiple of 16 bytes; one group, or output channels per group a multiple
    of 128 bytes (64 fp16/bf16 or 32 fp32)."""
    n, h, w, c, cout, k, s, p, d, g, dg = cfg
    size = 4 if name in ("tf32", "fp32") else 2
    return (
        (size == 4 or cout // g > 128)
        and (c // g) % 4 == 0
        and (c // dg) % 4 == 0
        and cout * size % 16 == 0
        and (g == 1 or (cout // g) % (128 // size) == 0)
    )


HOPPER_CONFIGS = [
    # n, h, w, c, cout, k, stride, pad, dil, groups, dg
    (2, 16, 16, 64, 64, 3, 1, 1, 1, 1, 1),  # 128 x 128 tile, 512 pixels
    (2, 13, 11, 256, 200, 3, 2, 1, 1, 1, 4),  # 64 x 256 tile, stride 2, dg 4, Cout off the tile
    (1, 20, 24, 128, 96, 3, 1, 1, 1, 2, 2),  # groups 2 (64 channels each), dg 2
    (2, 9, 14, 512, 130, 3, 1, 1, 1, 1, 1),  # 512 channels, 252 pixels
    (1, 11, 12, 192, 320, 3, 1, 2, 2, 1, 3),  # dilation 2, dg 3, two channel tiles
    (3, 20, 18, 256, 130, 1, 1, 0, 1, 1, 1),  # 1x1 kernel
    (1, 8, 8, 64, 8, 3, 1, 1, 1, 1, 1),  # 8 output channels
    (4, 32, 32, 256, 256, 3, 1, 1, 1, 1, 1),  # a benchmark-sized problem
    (1, 9, 9, 512, 520, 3, 1, 1, 1, 4, 1),  # groups 4, 130 outputs each (wide tile)
    (2, 11, 13, 128, 256, 2, 1, 0, 1, 1, 2),  # 2x2 kernel: an even number of taps
    (1, 12, 12, 64, 96, 5, 1, 2, 1, 1, 1),  # 5x5 kernel: a 25-tap sample table
    (1, 10, 9, 512, 512, 3, 1, 1, 1, 1, 4),  # fp32 forward in K chunks (3xTF32 2), dg 4
    (1, 6, 7, 768, 768, 3, 1, 1, 1, 1, 2),  # fp32 forward in K chunks (TF32 2, 3xTF32 4)
    (2, 11, 13, 128, 1000, 3, 1, 1, 1, 1, 2),  # clusters share A: 4 channel tiles, Cout off
    (1, 9, 10, 256, 1024, 3, 1, 1, 1, 2, 1),  # clusters share A in each of 2 groups
]


def reference_forward(cfg, x, off, mask, wt, b):
    n, h, w, c, cout, k, s, p, d, g, dg = cfg
    y = torchvision.ops.deform_conv2d(
        x.permute(0, 3, 1, 2),
        off.permute(0, 3, 1, 2),
        wt.permute(3, 2, 0, 1),
        b,
        stride=s,
        padding=p,
        dilation=d,
        mask=mask.permute(0, 3, 1, 2),
    )
    return y.permute(0, 2, 3, 1)


def forward_ours(dtype, dim, x, off, mask, wt, b, tf32=True, choice="auto"):
    x, off, mask, wt, b = [t.to(dtype).contiguous() for t in (x, off, mask, wt, b)]
    n, ho, wo, cout = x.shape[0], dim[4], dim[5], wt.shape[3]
    y = torch.full((n, ho, wo, cout), float("nan"), dtype=dtype, device="cuda")  # poisoned
    run(0, dtype, dim, [x, off, mask, wt, b, y], tf32, choice=choice)
    torch.cuda.synchronize()
    return y


def error_pattern(got, want, tile_m=64, tile_n=128):
    """Where a wrong result is wrong: NaN count, and the relative error by output row within a
    64-row tile (8-row blocks) and by output column within a 128-column tile (8-column blocks)."""
    got, want = got.reshape(-1, got.shape[-1]).double(), want.reshape(-1, want.shape[-1])
    err = (got - want).nan_to_num(1e30).pow(2)
    rows = torch.arange(err.shape[0], device=err.device) % tile_m // 8
    cols = torch.arange(err.shape[1], device=err.device) % tile_n // 8
    by_row = [
        (err[rows == r].sum() / want[rows == r].pow(2).sum()).sqrt().item()
        for r in range(tile_m // 8)
    ]
    by_col = [
        (err[:, cols == c].sum() / want[:, cols == c].pow(2).sum()).sqrt().item()
        for c in range(min(tile_n // 8, int(cols.max()) + 1))
    ]
    return (
        f"nan {int(torch.isnan(got).sum())}/{got.numel()}; by row block "
        + " ".join(f"{v:.0e}" for v in by_row)
        + "; by column block "
        + " ".join(f"{v:.0e}" for v in by_col)
    )


def backward_weight_ours(dtype, dim, x, off, mask, gout, wt, b, tf32=True, choice="auto"):
    x, off, mask, gout = [t.to(dtype).contiguous() for t in (x, off, mask, gout)]
    gw = torch.full(wt.shape, float("nan"), dtype=dtype, device="cuda")  # poisoned
    gb = torch.full(b.shape, float("nan"), dtype=dtype, device="cuda")
    run(2, dtype, dim, [gout, x, off, mask, gw, gb], tf32, choice=choice)
    torch.cuda.synchronize()
    return gw, gb


def backward_input_ours(dtype, dim, x, off, mask, wt, gout, tf32=True, choice="auto"):
    x, off, mask, wt, gout = [t.to(dtype).contiguous() for t in (x, off, mask, wt, gout)]
    gx, goff, gm = (torch.full_like(t, float("nan")) for t in (x, off, mask))  # poisoned
    run(1, dtype, dim, [gout, x, off, mask, wt, gx, goff, gm], tf32, choice=choice)
    torch.cuda.synchronize()
    return gx, goff, gm


def hopper_problem(cfg, seed, offsets="random"):
    dim, data = make_problem(cfg, torch.float64, seed=seed)
    x, off, mask, wt, b, gout = data
    if offsets == "zero":  # a plain GEMM through the gather: samples at pixels, mask 1
        off, mask = torch.zeros_like(off), torch.ones_like(mask)
    elif offsets == "wild":  # far outside the image, NaN and infinities: those samples read zero
        off = off * 12
        flat = off.view(-1)
        flat[0::7] = float("nan")
        flat[1::11] = float("inf")
        flat[2::13] = -float("inf")
        flat[3::17] = 1e30
    return dim, x, off, mask, wt, b, gout


def check_hopper_case(cfg, offsets, problem, dtype, name, tf32):
    """The forward, the backward input and the backward weight of the auto plan
    (cuda_wgmma_sm90a where it takes the problem) and the portable plan against float64."""
    dim, x, off, mask, wt, b, gout = problem
    x_, off_, mask_, wt_, b_, gout_ = [
        t.to(dtype).to(torch.float64) for t in (x, off, mask, wt, b, gout)
    ]
    # The reference reads NaN/Inf/huge offsets as what they mean: a sample far outside. Its
    # offset and mask gradients there are zero, as ours are for a sample that touches no pixel.
    off_ref = torch.where(
        torch.isfinite(off_) & (off_.abs() < 1e6), off_, torch.full_like(off_, 1e6)
    )
    want, gx_want, goff_want, gm_want, gw_want, gb_want = reference(
        cfg, x_, off_ref, mask_, wt_, b_, gout_
    )
    impl = implementation(0, dtype, dim, tf32)
    input_impl = implementation(1, dtype, dim, tf32)
    weight_impl = implementation(2, dtype, dim, tf32)
    strict = strict_fp32_tolerance(cfg)
    row = []
    for choice in ("auto", "portable"):
        got = forward_ours(dtype, dim, x_, off_, mask_, wt_, b_, tf32=tf32, choice=choice)
        rel = ((got.double() - want).norm() / want.norm()).item()
        row.append(rel)
        label = f"hopper {cfg} {offsets:6s} {name} {choice}"
        if not rel <= HOPPER_TOLERANCE.get(name, strict):
            FAILURES.append(
                f"{label} ({implementation(0, dtype, dim, tf32, choice=choice)}): rel err {rel:.2e}"
            )
            print(f"  {label}: {error_pattern(got, want)}", flush=True)
    gradient_tolerance = {"fp32": strict, "tf32": TOLERANCE["tf32"]}.get(name, TOLERANCE[dtype])
    input_rels = {}
    for choice in ("auto", "portable"):
        got = backward_input_ours(dtype, dim, x_, off_, mask_, wt_, gout_, tf32=tf32, choice=choice)
        input_rels[choice] = []
        for what, g, e in zip(NAMES[1:4], got, (gx_want, goff_want, gm_want)):
            rel = ((g.double() - e).norm() / e.norm()).item()
            input_rels[choice].append(rel)
            label = f"hopper {cfg} {offsets:6s} {name} {choice} {what}"
            if not rel <= gradient_tolerance:
                FAILURES.append(
                    f"{label} ({implementation(1, dtype, dim, tf32, choice=choice)}): "
                    f"rel err {rel:.2e}"
                )
                print(f"  {label}: {error_pattern(g, e)}", flush=True)
    for choice in ("auto", "portable"):
        got = backward_weight_ours(
            dtype, dim, x_, off_, mask_, gout_, wt_, b_, tf32=tf32, choice=choice
        )
        rel = max(
            ((g.double() - e).norm() / e.norm()).item() for g, e in zip(got, (gw_want, gb_want))
        )
        row.append(rel)
        label = f"hopper {cfg} {offsets:6s} {name} {choice} grad_weight"
        if not rel <= gradient_tolerance:
            FAILURES.append(
                f"{label} ({implementation(2, dtype, dim, tf32, choice=choice)}): rel err {rel:.2e}"
            )
            print(f"  {label}: {error_pattern(got[0], gw_want)}", flush=True)
    taken = {
        "forward": hopper_takes(cfg, name),
        "backward input": hopper_takes_input(cfg, name),
        "backward weight": True,
    }
    for op_impl, what in (
        (impl, "forward"),
        (input_impl, "backward input"),
        (weight_impl, "backward weight"),
    ):
        if (op_impl == "cuda_wgmma_sm90a") != taken[what]:
            FAILURES.append(f"hopper {cfg} {name}: auto planned {op_impl} for the {what}")
    rels = lambda choice: "/".join(f"{rel:.2e}" for rel in input_rels[choice])
    print(
        f"hopper {cfg} {offsets:6s} {name}: forward {impl} rel {row[0]:.2e} | "
        f"{implementation(0, dtype, dim, tf32, choice='portable')} rel {row[1]:.2e}; "
        f"grad_input/offset/mask {input_impl} rel {rels('auto')} | "
        f"{implementation(1, dtype, dim, tf32, choice='portable')} rel {rels('portable')}; "
        f"grad_weight {weight_impl} rel {row[2]:.2e} | "
        f"{implementation(2, dtype, dim, tf32, choice='portable')} rel {row[3]:.2e}",
        flush=True,
    )


def check_hopper():
    available = bool(LIB.dcn_sm90a_available())
    print(f"hopper: sm_90a kernels available: {available}", flush=True)
    if not available:
        FAILURES.append("hopper: sm_90a kernels not available on this device")
        return
    cases = [(cfg, "random") for cfg in HOPPER_CONFIGS]
    cases += [
        ((2, 16, 16, 128, 128, 1, 1, 0, 1, 1, 1), "zero"),
        ((2, 12, 10, 128, 144, 3, 1, 1, 1, 1, 2), "wild"),
    ]
    for seed, (cfg, offsets) in enumerate(cases):
        problem = hopper_problem(cfg, seed, offsets)
        for dtype, name, tf32 in HOPPER_DTYPES:
            try:
                check_hopper_case(cfg, offsets, problem, dtype, name, tf32)
            except (
                RuntimeError
            ) as e:  # a CUDA error: record it, go on (a sticky one fails the rest)
                FAILURES.append(f"hopper {cfg} {offsets} {name}: {e}")
                print(f"hopper {cfg} {offsets:6s} {name}: ERROR {e}", flush=True)
    # Problems the kernel does not take stay on the portable kernels.
    for cfg, dtype, tf32, ops, why in [
        ((1, 8, 8, 32, 32, 3, 1, 1, 1, 1, 1), torch.float16, True, (0, 2), "32 fp16 channels"),
        ((1, 8, 8, 128, 64, 3, 1, 1, 1, 1, 4), torch.float16, True, (0, 2), "dg 4 of 128 fp16"),
        ((1, 12, 12, 64, 96, 5, 1, 2, 1, 1, 1), torch.float32, False, (0,), "3xTF32 5x5 forward"),
        ((1, 8, 8, 64, 64, 3, 1, 1, 1, 1, 1), torch.float64, True, (0, 1, 2), "float64"),
        ((1, 8, 8, 64, 130, 3, 1, 1, 1, 1, 1), torch.float32, True, (1,), "520 B of fp32 outputs"),
        ((1, 8, 8, 128, 96, 3, 1, 1, 1, 2, 1), torch.float16, True, (1,), "2 groups of 48 fp16"),
        ((1, 8, 8, 64, 128, 3, 1, 1, 1, 1, 1), torch.bfloat16, True, (1,), "128 bf16 outputs"),
    ]:
        dim, _, _ = dims(cfg)
        impl = "/".join(implementation(op, dtype, dim, tf32) for op in ops)
        ok = "cuda_wgmma_sm90a" not in impl
        print(f"hopper not taken ({why}): {impl} {'ok' if ok else 'FAIL'}", flush=True)
        if not ok:
            FAILURES.append(f"hopper: {why} planned {impl}")
    dim, _, _ = dims(HOPPER_CONFIGS[0])
    for choice in ("portable", "im2col"):
        impl = "/".join(implementation(op, torch.float16, dim, choice=choice) for op in range(3))
        print(f"hopper choice {choice}: {impl}", flush=True)
        if "cuda_wgmma_sm90a" in impl:
            FAILURES.append(f"hopper: choice {choice} planned {impl}")
    for op, what in ((1, "backward input"), (2, "backward weight")):
        impl = implementation(op, torch.float16, dim, det=True)
        print(f"hopper deterministic {what}: {impl}", flush=True)
        if impl == "cuda_wgmma_sm90a":
            FAILURES.append(f"hopper: the deterministic {what} planned cuda_wgmma_sm90a")
    # The fallback when the module does not load, simulated in a fresh process.
    env = dict(os.environ, TFDCN_SIMULATE_SM90A_UNAVAILABLE="1")
    result = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--fallback-probe"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(result.stdout.strip(), flush=True)
    if result.returncode != 0 or "fallback ok" not in result.stdout:
        FAILURES.append("hopper fallback: " + (result.stdout + result.stderr)[-2000:])


def fallback_probe():
    """Run with TFDCN_SIMULATE_SM90A_UNAVAILABLE=1: the planner must fall back, correctly."""
    cfg = HOPPER_CONFIGS[0]
    dim, x, off, mask, wt, b, _ = hopper_problem(cfg, 0)
    dtype = torch.float16
    x_, off_, mask_, wt_, b_ = [t.to(dtype).to(torch.float64) for t in (x, off, mask, wt, b)]
    want = reference_forward(cfg, x_, off_, mask_, wt_, b_)
    got = forward_ours(dtype, dim, x_, off_, mask_, wt_, b_)
    rel = ((got.double() - want).norm() / want.norm()).item()
    impl = "/".join(implementation(op, dtype, dim) for op in range(3))
    available = bool(LIB.dcn_sm90a_available())
    ok = (
        not available
        and impl == "cuda_fused_sm80/cuda_fused_sm80/cuda_fused_sm80"
        and rel <= HOPPER_TOLERANCE["fp16"]
    )
    print(
        f"fallback probe: available {available}, planned {impl}, rel {rel:.2e}: "
        f"{'fallback ok' if ok else 'FAIL'}"
    )
    sys.exit(0 if ok else 1)


def time_graph(fn, calls=20, repeats=7):
    """Median ms per call of fn replayed from a CUDA graph of `calls` calls (no launch gaps), or
    None when the capture fails."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                fn()
        graph.replay()
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 - report and time eagerly instead
        print(f"  (graph capture failed: {str(e)[:200]})", flush=True)
        torch.cuda.synchronize()
        return None
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return sorted(times)[len(times) // 2]


def bench_hopper():
    """Forward ms of cuda_wgmma_sm90a (auto), cuda_fused_sm80 (portable) and torchvision (fp16 for
    bf16) in one run; graph replays, eager in brackets. 3x3, pad 1, Cin = Cout."""
    lines = []
    for n, h, w, c in [(8, 64, 64, 128), (8, 32, 32, 256), (4, 64, 64, 256), (4, 32, 32, 512)]:
        cfg = (n, h, w, c, c, 3, 1, 1, 1, 1, 1)
        for dtype, name, tf32 in HOPPER_DTYPES:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = name == "tf32"
            dim, data = make_problem(cfg, dtype)
            x, off, mask, wt, b, gout = [t.to(dtype).contiguous() for t in data]
            y = torch.empty_like(gout)
            ws = {
                choice: torch.empty(
                    max(workspace_bytes(0, dtype, dim, tf32, choice=choice), 1),
                    dtype=torch.uint8,
                    device="cuda",
                )
                for choice in ("auto", "portable")
            }
            ptrs = (ctypes.c_void_p * 6)(*[t.data_ptr() for t in (x, off, mask, wt, b, y)])

            def ours_fn(choice):
                f = flags(tf32, False, choice)

                def fn():
                    check(
                        LIB.dcn_run(
                            DTYPES[dtype],
                            0,
                            dim,
                            ptrs,
                            ctypes.c_void_p(ws[choice].data_ptr()),
                            f,
                            ctypes.c_void_p(torch.cuda.current_stream().cuda_stream),
                        )
                    )

                return fn

            tv_dtype = torch.float16 if dtype == torch.bfloat16 else dtype
            xt, ot, mt = (t.to(tv_dtype).permute(0, 3, 1, 2).contiguous() for t in (x, off, mask))
            wt_t, bt = wt.to(tv_dtype).permute(3, 2, 0, 1).contiguous(), b.to(tv_dtype)
            tv = lambda: torchvision.ops.deform_conv2d(xt, ot, wt_t, bt, padding=1, mask=mt)
            times = {}
            try:
                for label, fn in (
                    ("wgmma", ours_fn("auto")),
                    ("fused", ours_fn("portable")),
                    ("tv", tv),
                ):
                    times[label] = (time_graph(fn), timeit(fn))
            except RuntimeError as e:
                print(f"bench {n}x{h}x{w}x{c} {name}: ERROR {e}", flush=True)
                continue
            impl = implementation(0, dtype, dim, tf32)
            fmt = lambda t: f"{t[0]:.3f} ({t[1]:.3f})" if t[0] is not None else f"- ({t[1]:.3f})"
            best = lambda t: t[0] if t[0] is not None else t[1]
            flop = 2.0 * n * h * w * c * 9 * c
            line = (
                f"{n}x{h}x{w}x{c:<4d} {name}  {fmt(times['wgmma']):>15s}  "
                f"{fmt(times['fused']):>15s}  {fmt(times['tv']):>15s}  "
                f"{best(times['fused']) / best(times['wgmma']):5.2f}x  "
                f"{best(times['tv']) / best(times['wgmma']):5.2f}x  "
                f"{flop / best(times['wgmma']) / 1e9:6.0f}  {impl}"
            )
            print("bench " + line, flush=True)
            lines.append(line)
    print(
        "\nforward ms, graph replay (eager): cuda_wgmma_sm90a | cuda_fused_sm80 | torchvision; "
        "speedups of wgmma; wgmma TFLOP/s; planned"
    )
    print(
        f"{'config':18s} {'':4s}  {'wgmma':>15s}  {'fused_sm80':>15s}  {'torchvision':>15s}  "
        f"{'/fused':>6s}  {'/tv':>6s}  {'TFLOPs':>6s}"
    )
    for line in lines:
        print(line)


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
    parser.add_argument(
        "--sanitize", action="store_true", help="small cases only (compute-sanitizer)"
    )
    parser.add_argument("--bench", action="store_true")
    parser.add_argument(
        "--bench-only", action="store_true", help="the timings without the checks (comparisons)"
    )
    parser.add_argument("--profile", action="store_true", help="one fwd+bwd per dtype (for ncu)")
    parser.add_argument(
        "--hopper", action="store_true", help="the sm_90a kernels: checks, then forward timings"
    )
    parser.add_argument(
        "--only-hopper", action="store_true", help="--hopper without the other checks"
    )
    parser.add_argument(
        "--configs",
        type=parse_configs,
        help="NxHxWxC,... for --bench, --bench-only and --profile (3x3, Cout = C)",
    )
    parser.add_argument("--fallback-probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile:
        profile_once(args.configs or PROFILE_CONFIGS)
        return
    if args.bench_only:
        bench(args.configs or BENCH_CONFIGS)
        return
    if args.fallback_probe:
        fallback_probe()
    print(
        torch.cuda.get_device_name(),
        "torch",
        torch.__version__,
        "torchvision",
        torchvision.__version__,
        flush=True,
    )
    t0 = time.time()
    if args.sanitize:
        check_parity(quick=True)
        check_nonfinite()
        check_determinism()
    elif args.only_hopper:
        check_hopper()
    else:
        check_gemm()
        check_parity(args.quick)
        check_nonfinite()
        check_determinism()
        if args.hopper:
            check_hopper()
        if args.bench:
            bench(args.configs or BENCH_CONFIGS)
    print(f"checks done in {time.time() - t0:.1f}s; failures: {len(FAILURES)}")
    for f in FAILURES:
        print("FAIL", f)
    if args.hopper or args.only_hopper:
        bench_hopper()
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
