"""The benchmark's operands, as float32 NHWC numpy arrays, the same for every implementation."""

import numpy as np

# Typical trained offsets are a few pixels; this spread also sends samples past the border.
OFFSET_STD_PIXELS = 2.0


def make_data(config, seed=0, offset_std=OFFSET_STD_PIXELS):
    """Inputs, op-level offset/mask, weights of the layers and an upstream gradient.

    Deterministic per (config, seed, offset_std). The offsets are independent per pixel with
    standard deviation `offset_std` (pixels); the offset conv's weights are scaled so that the
    offsets it predicts spread about as much and the mask logits are of order one.
    """
    rng = np.random.default_rng(
        [
            seed,
            config.batch,
            config.height,
            config.width,
            config.channels,
            config.kernel,
            config.stride,
            config.pad,
            config.deformable_groups,
        ]
    )
    n, c, k = config.batch, config.channels, config.kernel
    out_shape = (n, config.out_height, config.out_width)
    taps_per_group = config.deformable_groups * config.taps
    fan_in = config.taps * c

    def normal(shape, std=1.0):
        return (std * rng.standard_normal(shape)).astype(np.float32)

    return {
        "x": normal((n, config.height, config.width, c)),
        "offset": normal(out_shape + (2 * taps_per_group,), offset_std),
        "mask": rng.random(out_shape + (taps_per_group,), dtype=np.float32),
        "kernel": normal((k, k, c, c), fan_in**-0.5),
        "bias": normal((c,), 0.1),
        "offset_kernel": normal((k, k, c, 3 * taps_per_group), offset_std * fan_in**-0.5),
        "offset_bias": normal((3 * taps_per_group,), 0.1),
        "grad_y": normal(out_shape + (c,)),
    }
