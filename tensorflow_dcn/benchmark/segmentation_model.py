"""A FaPN-style segmentation network and a synthetic task for it: the model of the model-level
benchmark (`python -m tensorflow_dcn.benchmark model`), importable by examples.

The network: a small ResNet encoder (a two-conv stem to 1/4, then one basic residual block per
stage at 1/4, 1/8, 1/16, 1/32 with `channels` x 1, 2, 4, 8 filters) and a top-down decoder of
`channels` filters. At strides 16, 8 and 4 the coarser decoder features are upsampled and
*aligned* to the encoder's lateral features by a DCNv2 whose offsets and mask are predicted from
concat(lateral, upsampled), as in FaPN:

    up = UpSampling2D(2, interpolation="bilinear", dtype="float32")(coarse)
    aligned = DCN(channels, (3, 3), padding="same", use_custom_offset=True)(
        [up, Concatenate()([lateral, up])])
    fused = ReLU(Norm(lateral + aligned))

With `dcn_class=None` a plain Conv2D(channels, 3) on `up` takes the DCN's place (no offset
branch): the floor the DCN's cost is measured against. The logits (float32 under mixed
precision) are upsampled to the input size.

The task (from the example examples/train_segmentation.py): images with random circles,
rectangles and triangles, labelled per pixel 0 = background, 1 = circle, 2 = rectangle,
3 = triangle, deterministic per seed.
"""

import numpy as np

NUM_CLASSES = 4
CLASS_NAMES = ("background", "circle", "rectangle", "triangle")
# Image sides must be multiples of the encoder's last stride.
OUTPUT_STRIDE = 32
# The decoder levels whose features a DCN aligns.
ALIGNED_STRIDES = (16, 8, 4)


# ----------------------------------------------------------------------------------------------
# Data


def _triangle_mask(yy, xx, cy, cx, radius, angle):
    """Pixels inside the triangle with vertices at `radius` around (cy, cx), first at `angle`."""
    angles = angle + np.array([0.0, 2.0, 4.0]) * np.pi / 3.0
    vy, vx = cy + radius * np.sin(angles), cx + radius * np.cos(angles)
    signs = []
    for i in range(3):
        j = (i + 1) % 3
        signs.append((vx[j] - vx[i]) * (yy - vy[i]) - (vy[j] - vy[i]) * (xx - vx[i]))
    signs = np.stack(signs)
    return np.all(signs >= 0, axis=0) | np.all(signs <= 0, axis=0)


def make_shapes(num_images, size, seed):
    """uint8 images [n, size, size, 3] and uint8 labels [n, size, size], a function of the seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    images = np.empty((num_images, size, size, 3), np.uint8)
    labels = np.zeros((num_images, size, size), np.uint8)
    for i in range(num_images):
        # Background: a random colour with a gentle gradient; shapes in random colours on top.
        base = rng.uniform(0.0, 0.5, 3).astype(np.float32)
        tilt = rng.uniform(-0.2, 0.2, 2).astype(np.float32)
        image = base + (tilt[0] * yy / size + tilt[1] * xx / size)[..., None]
        label = labels[i]
        for _ in range(rng.integers(1, 4)):
            cls = int(rng.integers(1, NUM_CLASSES))
            cy, cx = rng.uniform(0.15, 0.85, 2) * size
            radius = rng.uniform(0.1, 0.25) * size
            if cls == 1:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            elif cls == 2:
                half_h, half_w = radius * rng.uniform(0.5, 1.0, 2)
                mask = (np.abs(yy - cy) <= half_h) & (np.abs(xx - cx) <= half_w)
            else:
                mask = _triangle_mask(yy, xx, cy, cx, radius, rng.uniform(0, 2 * np.pi))
            image[mask] = rng.uniform(0.3, 1.0, 3)
            label[mask] = cls
        image += rng.normal(0.0, 0.04, image.shape)
        images[i] = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return images, labels


# ----------------------------------------------------------------------------------------------
# Model


def dcn_arguments(dcn_class):
    """Constructor arguments of an alignment DCN besides filters and name: a 3x3 kernel, offsets
    and mask predicted from a second input, 'same' padding where the class takes it (layers
    without the argument, like iSeg's DCNv2, are 'same' already). ValueError when the class cannot
    take [x, offset_source]."""
    from tensorflow_dcn.benchmark.environment import constructor_arguments

    accepted = constructor_arguments(dcn_class)
    if "use_custom_offset" not in accepted:
        raise ValueError(
            f"{dcn_class.__module__}.{dcn_class.__name__} takes no use_custom_offset "
            "argument: the model needs a DCN called on [x, offset_source]"
        )
    kwargs = {"kernel_size": (3, 3), "use_custom_offset": True}
    if "padding" in accepted:
        kwargs["padding"] = "same"
    return kwargs


def build_model(
    dcn_class, image_size, channels=64, num_classes=NUM_CLASSES, norm="batch", synchronized=False
):
    """The network described in the module docstring, as a Keras functional model.

    dcn_class: a DCNv2 layer class called on [x, offset_source] (tfdcn.DCNv2,
      tensorflow_dcn.reference.PureTFDCNv2, a user's layer), or None for plain Conv2D alignment.
    image_size: side of the square RGB input, a multiple of OUTPUT_STRIDE.
    norm: "batch" (BatchNormalization, synchronized across replicas with `synchronized`) or
      "group" (GroupNormalization, 4 groups: per image, the same for any number of replicas).
    Layers take the global Keras dtype policy, except the float32 logits.
    """
    import keras

    if image_size % OUTPUT_STRIDE or image_size < OUTPUT_STRIDE:
        raise ValueError(
            f"image_size must be a positive multiple of {OUTPUT_STRIDE}, got {image_size}"
        )
    if norm not in ("batch", "group"):
        raise ValueError(f"norm must be 'batch' or 'group', got {norm!r}")
    layers = keras.layers
    dcn_kwargs = dcn_arguments(dcn_class) if dcn_class is not None else None

    def normalization(name):
        if norm == "batch":
            return layers.BatchNormalization(synchronized=synchronized, name=name)
        return layers.GroupNormalization(groups=4, name=name)

    def conv_norm(x, filters, strides, name, relu=True, kernel=3):
        x = layers.Conv2D(
            filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv"
        )(x)
        x = normalization(f"{name}_norm")(x)
        return layers.ReLU(name=f"{name}_relu")(x) if relu else x

    def basic_block(x, filters, strides, name):
        shortcut = x
        if strides != 1 or x.shape[-1] != filters:
            shortcut = conv_norm(x, filters, strides, f"{name}_proj", relu=False, kernel=1)
        x = conv_norm(x, filters, strides, f"{name}_a")
        x = conv_norm(x, filters, 1, f"{name}_b", relu=False)
        x = layers.Add(name=f"{name}_add")([shortcut, x])
        return layers.ReLU(name=f"{name}_relu")(x)

    def align_and_fuse(coarse, lateral, name):
        # float32: under XLA, TensorFlow's gradient of a bilinear resize of half-precision
        # features comes out float32 and the ReLU gradient before it fails to compile ("Seen
        # floating point types of different precisions", keras-team/keras#20931). The layers
        # after it cast its output back to the policy's compute dtype.
        up = layers.UpSampling2D(2, interpolation="bilinear", dtype="float32", name=f"{name}_up")(
            coarse
        )
        if dcn_class is None:
            aligned = layers.Conv2D(channels, 3, padding="same", name=f"{name}_conv")(up)
        else:
            offset_source = layers.Concatenate(name=f"{name}_offset_source")([lateral, up])
            aligned = dcn_class(channels, name=f"{name}_dcn", **dcn_kwargs)([up, offset_source])
        fused = layers.Add(name=f"{name}_add")([lateral, aligned])
        fused = normalization(f"{name}_norm")(fused)
        return layers.ReLU(name=f"{name}_relu")(fused)

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = conv_norm(inputs, max(channels // 2, 1), 2, "stem1")  # 1/2
    x = conv_norm(x, channels, 2, "stem2")  # 1/4
    features = []
    for stage, multiple in enumerate((1, 2, 4, 8)):  # 1/4 .. 1/32
        x = basic_block(x, multiple * channels, 1 if stage == 0 else 2, f"stage{stage + 1}")
        features.append(x)
    laterals = [
        layers.Conv2D(channels, 1, name=f"lateral{i + 1}")(f) for i, f in enumerate(features)
    ]
    decoded = laterals[-1]
    for level in (3, 2, 1):  # strides 16, 8, 4
        decoded = align_and_fuse(decoded, laterals[level - 1], f"align{level}")
    x = conv_norm(decoded, channels, 1, "head")
    # Logits in float32 under mixed precision, for a stable softmax cross-entropy.
    logits = layers.Conv2D(num_classes, 1, dtype="float32", name="logits")(x)
    logits = layers.UpSampling2D(4, interpolation="bilinear", dtype="float32", name="logits_up")(
        logits
    )
    return keras.Model(inputs, logits, name="fapn_segmentation")
