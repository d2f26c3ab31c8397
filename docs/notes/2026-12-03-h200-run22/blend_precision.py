"""The blend's rounding and the forward's output error: float blend (the kernels today) against a
packed fp16/bf16 blend (next-packed-blend.patch), emulated in numpy against a float64 reference.

A tile of output pixels x (9 taps x C) columns: each element blends four corner values (the
input, rounded to the dtype) with bilinear weights times a mask (fractions of N(0, 2) offsets,
mask U(0, 1)), as the benchmark's data. The output is A x W with W ~ N(0, 1/sqrt(K)) in the dtype,
summed in float64 (the tensor cores' float accumulation is not what differs here).

  python3 blend_precision.py
"""

import numpy as np


def round_bf16(x):
    b = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    return b.astype(np.uint32).view(np.float32).astype(np.float64)


ROUND = {
    "fp16": lambda x: np.asarray(x, np.float64).astype(np.float16).astype(np.float64),
    "bf16": round_bf16,
}


def fma32(a, b, c):  # float32 fused multiply-add: one rounding
    return (a * b + c).astype(np.float32).astype(np.float64)


def main(rows=4096, channels=128, taps=9, seed=0):
    rng = np.random.default_rng(seed)
    k = taps * channels
    for dtype, rnd in ROUND.items():
        x = rnd(rng.standard_normal((4, rows, k)))  # the four corners' values
        pos = rng.standard_normal((2, rows, taps)) * 2.0
        fy, fx = pos - np.floor(pos)
        mask = rnd(rng.random((rows, taps)))
        w = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx])
        w = (w.astype(np.float32) * mask.astype(np.float32)).astype(np.float64)  # float32 weights
        w = np.repeat(w, channels, axis=2)  # per column: its tap's weights
        exact = (w * x).sum(axis=0)
        v = np.zeros((rows, k))
        for c in range(4):  # today: float FMAs, one rounding to the dtype at the end
            v = fma32(w[c], x[c], v)
        today = rnd(v)
        wq = rnd(w)  # packed: the weights in the dtype, each FMA rounded to it
        v = rnd(wq[0] * x[0])
        for c in range(1, 4):
            v = rnd(wq[c] * x[c] + v)
        packed = v
        weights = rnd(rng.standard_normal((k, 128)) / np.sqrt(k))
        ref = exact @ weights
        for name, a in (("float blend", today), ("packed blend", packed)):
            a_err = np.sqrt(np.mean((a - exact) ** 2)) / np.sqrt(np.mean(exact**2))
            out = a @ weights
            o_err = np.max(np.abs(out - ref)) / np.max(np.abs(ref))
            o_rms = np.sqrt(np.mean((out - ref) ** 2)) / np.sqrt(np.mean(ref**2))
            print(
                f"{dtype} {name:13s} A rms rel {a_err:.2e}   output max rel {o_err:.2e}"
                f"   rms rel {o_rms:.2e}"
            )


if __name__ == "__main__":
    main()
