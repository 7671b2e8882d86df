"""What a run's results depend on, recorded in the summary so ``--resume`` and ``merge`` can
tell whether two runs are the same: the model's content hash and the versions of cnnvis,
TensorFlow and Keras (the method and its options are the summary's ``method`` and ``params``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cnnvis_cli import __version__

CHUNK = 2**20


def _hash_file(path: Path, digest: Any) -> None:
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)


def model_hash(spec: str, weights: str = "imagenet") -> str:
    """SHA-256 of the model's bytes: a file, every file of a SavedModel folder (names and
    contents, in sorted order), or for ``keras:NAME`` the name and the weights file used."""
    digest = hashlib.sha256()
    path = Path(spec)
    if spec.lower().startswith("keras:"):
        digest.update(spec.lower().encode())
        weights_path = Path(weights)
        if weights_path.is_file():
            _hash_file(weights_path, digest)
        else:
            digest.update(weights.lower().encode())
    elif path.is_dir():
        for member in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(member.relative_to(path).as_posix().encode())
            _hash_file(member, digest)
    elif path.is_file():
        _hash_file(path, digest)
    return digest.hexdigest()


def fingerprint(spec: str, weights: str = "imagenet") -> dict[str, str]:
    """The summary's ``fingerprint``."""
    from cnnvis_cli.core.tf import tf_and_keras

    tf, keras = tf_and_keras()
    return {
        "model_sha256": model_hash(spec, weights),
        "cnnvis": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
