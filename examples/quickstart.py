#!/usr/bin/env python
"""Train a model with `tfdcn.DCNv2` the way Keras users do: build it, `compile()` with the
defaults, `fit()`, save and load.

    python examples/quickstart.py                      # add --mixed-precision mixed_bfloat16

On a GPU, Keras' default `compile()` XLA-compiles the whole model, DCNv2 included
(`model.jit_compile` says so); on a CPU it runs without XLA unless you pass jit_compile=True.
The task: segment the bright squares of noisy images. (examples/train_segmentation.py is the
longer acceptance run: several GPUs, checkpoints, comparisons.)
"""

import argparse
import os
import tempfile

import keras
import numpy as np

import tensorflow_dcn as tfdcn  # registers the layer and its ops (also for load_model)


def make_data(num_images, size, seed=0):
    """Noisy images with a few bright squares; labels 1 inside a square, 0 elsewhere."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0.0, 0.3, (num_images, size, size, 3)).astype("float32")
    labels = np.zeros((num_images, size, size), "int32")
    for image, label in zip(images, labels):
        for _ in range(3):
            y, x = rng.integers(0, size - 8, 2)
            side = rng.integers(4, 9)
            image[y : y + side, x : x + side] += 1.0
            label[y : y + side, x : x + side] = 1
    return images, labels


def build_model(size, channels=32):
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(channels, 3, padding="same", activation="relu")(inputs)
    # Offsets and mask are predicted from x by the layer's own (zero-initialised) conv.
    x = tfdcn.DCNv2(channels, 3, padding="same", activation="relu")(x)
    x = tfdcn.DCNv2(channels, 3, padding="same", dilation_rate=2, activation="relu")(x)
    logits = keras.layers.Conv2D(2, 1, dtype="float32")(x)  # float32 logits under mixed precision
    return keras.Model(inputs, logits)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mixed-precision",
        default="float32",
        choices=("float32", "mixed_float16", "mixed_bfloat16"),
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()

    keras.mixed_precision.set_global_policy(args.mixed_precision)
    images, labels = make_data(512, args.size)
    model = build_model(args.size)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(images, labels, batch_size=32, epochs=args.epochs, validation_split=0.1)
    print(
        f"jit_compile (XLA): {model.jit_compile}; loss {history.history['loss'][0]:.4f} -> "
        f"{history.history['loss'][-1]:.4f}"
    )

    path = os.path.join(tempfile.mkdtemp(), "quickstart.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    same = np.allclose(restored.predict(images[:8]), model.predict(images[:8]))
    print(f"saved to {path}; the loaded model predicts the same: {same}")


if __name__ == "__main__":
    main()
