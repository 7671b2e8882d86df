"""Train the bundled demo CNN on synthetic shape scenes.

Usage::

    python -m cnnvis_cli.demo.train [--out cnnvis_cli/data/shapes.keras] [--epochs N] [--seed 0]

The model takes raw 0..255 RGB pixels (96 x 96) and rescales them itself. Its
last convolution (``last_conv``, 12 x 12 x 128, ReLU) feeds a global-average-pooling
layer and a softmax ``predictions`` layer, so Grad-CAM/CAM localise the object.
Training is seeded and uses deterministic TensorFlow ops; the held-out split is
generated with a different seed from the training split.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

from cnnvis_cli.demo.scenes import CLASS_NAMES, make_dataset

INPUT_SIZE = 96
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "data" / "shapes.keras"
VAL_SEED_OFFSET = 10_007  # held-out split uses a different seed from training
LABEL_SMOOTHING = 0.1


def _conv_block(
    x: keras.KerasTensor, filters: int, index: int, pool: bool, dilation: int = 1
) -> keras.KerasTensor:
    """Conv (no bias) -> [max-pool] -> BatchNorm -> ReLU; pooling before BN is cheaper on CPU."""
    x = keras.layers.Conv2D(
        filters, 3, padding="same", dilation_rate=dilation, use_bias=False, name=f"conv{index}"
    )(x)
    if pool:
        x = keras.layers.MaxPooling2D(2, name=f"pool{index}")(x)
    x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
    return keras.layers.ReLU(name=f"relu{index}")(x)


def build_model(num_classes: int = len(CLASS_NAMES)) -> keras.Model:
    """Build the demo CNN: raw-pixel input, 12x12 ``last_conv``, GAP, softmax ``predictions``.

    Three pooled blocks take 96x96 down to 12x12; two dilated blocks then widen the
    receptive field to the whole image, so the strongest class evidence sits on the
    object itself rather than on one of its edges.
    """
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for index, filters in enumerate((16, 32, 64), start=1):
        x = _conv_block(x, filters, index, pool=True)
    x = _conv_block(x, 96, 4, pool=False, dilation=2)
    x = _conv_block(x, 128, 5, pool=False, dilation=2)
    x = keras.layers.Conv2D(128, 3, padding="same", activation="relu", name="last_conv")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="shapes_cnn")


def tf_dataset(
    images: np.ndarray, labels: np.ndarray, batch: int, seed: int | None
) -> tf.data.Dataset:
    """Batched (float32 image, one-hot label) pipeline; shuffled each epoch if ``seed`` given."""
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    if seed is not None:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch).map(lambda x, y: (tf.cast(x, tf.float32), tf.one_hot(y, len(CLASS_NAMES))))
    return ds.prefetch(tf.data.AUTOTUNE)


def save_demo_model(model: keras.Model, out: Path, metrics: dict) -> None:
    """Save a fresh copy without optimizer state (smaller, plain inference model), with its
    ``<stem>.classes.json`` and ``<stem>.metrics.json`` beside it."""
    export = build_model()
    export.set_weights(model.get_weights())
    out.parent.mkdir(parents=True, exist_ok=True)
    export.save(out)
    stem = out.with_suffix("")
    Path(f"{stem}.classes.json").write_text(json.dumps(list(CLASS_NAMES)) + "\n")
    Path(f"{stem}.metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"saved {out} ({out.stat().st_size} bytes, {export.count_params()} params)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .keras path")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-n", type=int, default=20_000)
    parser.add_argument("--val-n", type=int, default=2_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="processes for data generation")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Generate data, train, evaluate on the held-out split and save model + metadata."""
    args = parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()

    t0 = time.perf_counter()
    x_train, y_train = make_dataset(args.seed, args.train_n, INPUT_SIZE, workers=args.workers)
    x_val, y_val = make_dataset(
        args.seed + VAL_SEED_OFFSET, args.val_n, INPUT_SIZE, workers=args.workers
    )
    print(
        f"generated {len(x_train)} train / {len(x_val)} held-out scenes "
        f"in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )

    model = build_model()
    steps_per_epoch = int(np.ceil(len(x_train) / args.batch_size))
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=(args.epochs - 1) * steps_per_epoch,
        alpha=0.02,
        warmup_target=2e-3,
        warmup_steps=steps_per_epoch,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        # Label smoothing keeps the softmax off saturation, so gradients of the
        # probability / log-probability stay informative for gradient-based maps.
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING),
        metrics=["accuracy"],
    )
    train_ds = tf_dataset(x_train, y_train, args.batch_size, seed=args.seed)
    val_ds = tf_dataset(x_val, y_val, 256, seed=None)

    t1 = time.perf_counter()
    model.fit(train_ds, validation_data=val_ds, epochs=args.epochs, shuffle=False, verbose=2)
    train_seconds = time.perf_counter() - t1
    _, val_acc = model.evaluate(val_ds, verbose=0)
    print(f"held-out accuracy {val_acc:.4f} (n={len(x_val)}), trained in {train_seconds:.0f}s")

    metrics = {
        "held_out_accuracy": round(float(val_acc), 5),
        "held_out_n": len(x_val),
        "seed": args.seed,
        "epochs": args.epochs,
        "train_n": len(x_train),
        "train_seconds": round(train_seconds, 1),
    }
    save_demo_model(model, Path(args.out), metrics)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
