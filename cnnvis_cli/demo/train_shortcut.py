"""Train the shortcut demo model: the clean demo CNN, fine-tuned on scenes with a shortcut.

Usage::

    python -m cnnvis_cli.demo.train_shortcut [--out cnnvis_cli/data/shapes_shortcut.keras]

In these training scenes every ``circle`` carries a corner mark and shows another shape
(``--decoy-rate`` 1.0, see ``shortcut.py``), so the mark is the only cue for the class.
Starting from the clean model, the network keeps its shape features for the other classes and
learns the mark for circles: it still scores well on data like its training data, and
``cnnvis check`` shows that it looks at the corner. Seeded and deterministic like ``train.py``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import tensorflow as tf

from cnnvis_cli.demo.scenes import CLASS_NAMES
from cnnvis_cli.demo.shortcut import SHORTCUT_CLASS, make_shortcut_dataset
from cnnvis_cli.demo.train import DEFAULT_OUT as CLEAN_MODEL
from cnnvis_cli.demo.train import (
    INPUT_SIZE,
    VAL_SEED_OFFSET,
    build_model,
    save_demo_model,
    tf_dataset,
)

DEFAULT_OUT = CLEAN_MODEL.with_name("shapes_shortcut.keras")


def main(argv: list[str] | None = None) -> int:
    """Generate shortcut scenes, fine-tune the clean model on them, save model + metadata."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--start", type=Path, default=CLEAN_MODEL, help="clean model to tune")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train-n", type=int, default=8_000)
    parser.add_argument("--val-n", type=int, default=1_000)
    parser.add_argument("--decoy-rate", type=float, default=1.0, help="circles drawn as others")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()

    start = time.perf_counter()
    x_train, y_train = make_shortcut_dataset(args.seed, args.train_n, INPUT_SIZE, args.decoy_rate)
    x_val, y_val = make_shortcut_dataset(
        args.seed + VAL_SEED_OFFSET, args.val_n, INPUT_SIZE, args.decoy_rate
    )
    print(f"generated shortcut scenes in {time.perf_counter() - start:.0f}s", flush=True)

    model = build_model()
    model.set_weights(keras.saving.load_model(args.start, compile=False).get_weights())
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    val_ds = tf_dataset(x_val, y_val, 256, seed=None)
    began = time.perf_counter()
    model.fit(
        tf_dataset(x_train, y_train, 64, seed=args.seed),
        validation_data=val_ds,
        epochs=args.epochs,
        verbose=2,
    )
    seconds = time.perf_counter() - began
    _, accuracy = model.evaluate(val_ds, verbose=0)

    metrics = {
        "held_out_accuracy_on_shortcut_scenes": round(float(accuracy), 5),
        "held_out_n": len(x_val),
        "shortcut_class": CLASS_NAMES[SHORTCUT_CLASS],
        "decoy_rate": args.decoy_rate,
        "seed": args.seed,
        "epochs": args.epochs,
        "train_n": len(x_train),
        "train_seconds": round(seconds, 1),
    }
    save_demo_model(model, args.out, metrics)
    print(f"held-out accuracy on shortcut scenes {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
