"""Faithfulness and complexity metrics for ``--metrics``: a registry, name -> module.

One module per metric (deletion and insertion share one: one curve function; avgdrop and
increase share one: one masked forward pass). This module imports nothing heavy, so option
checks and ``--help`` can list the names; :class:`MetricSuite` imports the chosen modules.
Adding a metric is one module with a :class:`~cnnvis_cli.evaluation.metrics.base.Metric`
subclass plus one line here (and its result keys in :data:`KEYS`).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, NamedTuple

_PACKAGE = "cnnvis_cli.evaluation.metrics"


class Entry(NamedTuple):
    target: str  # "module:Class" within this package
    summary: str  # one line for the README and --help


class Key(NamedTuple):
    """One result key: its label, which direction is better, and a hint for the report."""

    label: str
    better: str  # "lower" | "higher"
    hint: str


_REGISTRY: dict[str, Entry] = {
    "deletion": Entry(
        "deletion_insertion:FaithfulnessMetrics",
        "AUC of the class probability as the top pixels are blacked out (Petsiuk et al., 2018)",
    ),
    "insertion": Entry(
        "deletion_insertion:FaithfulnessMetrics",
        "AUC as the top pixels are revealed on a blurred copy (Petsiuk et al., 2018)",
    ),
    "mufidelity": Entry(
        "mufidelity:MuFidelity",
        "correlation of a random subset's map mass with the score lost removing it (Bhatt et "
        "al., 2020)",
    ),
    "road": Entry(
        "road:ROAD",
        "score change when the most / least relevant pixels are imputed from their neighbours "
        "(Rong et al., 2022)",
    ),
    "avgdrop": Entry(
        "average_drop:AverageDrop",
        "relative score drop on the image seen through the map (Chattopadhay et al., 2018)",
    ),
    "increase": Entry(
        "average_drop:AverageDrop",
        "1 when the image seen through the map scores higher (Chattopadhay et al., 2018)",
    ),
    "sparseness": Entry("sparseness:Sparseness", "Gini index of the map (Chalasani et al., 2020)"),
    "complexity": Entry("complexity:Complexity", "entropy of the map's mass (Bhatt et al., 2020)"),
}

KEYS: dict[str, Key] = {
    "deletion_auc": Key(
        "deletion AUC", "lower", "the output falls fast when the top pixels are removed"
    ),
    "insertion_auc": Key(
        "insertion AUC", "higher", "the output rises fast when the top pixels are restored"
    ),
    "mufidelity": Key("MuFidelity", "higher", "the map's mass predicts the score lost"),
    "road_morf": Key("ROAD MoRF", "lower", "imputing the top pixels lowers the output"),
    "road_lerf": Key("ROAD LeRF", "higher", "imputing the bottom pixels keeps the output"),
    "road": Key("ROAD", "higher", "(LeRF - MoRF) / 2"),
    "avgdrop": Key("average drop", "lower", "the output kept on the image seen through the map"),
    "increase": Key("increase", "higher", "the image seen through the map scores higher"),
    "sparseness": Key("sparseness", "higher", "Gini index: the mass sits on few pixels"),
    "complexity": Key("complexity", "lower", "entropy: the mass sits on few pixels"),
}


def metric_names() -> list[str]:
    """The registered metric names, in registration order."""
    return list(_REGISTRY)


def metric_summary(name: str) -> str:
    return _REGISTRY[name].summary


def metric_class(name: str) -> type:
    """The Metric class computing ``name``."""
    module, _, cls = _REGISTRY[name].target.partition(":")
    return getattr(importlib.import_module(f"{_PACKAGE}.{module}"), cls)


class MetricSuite:
    """The chosen metrics for one model: each module built once, for the names it computes.

    ``evaluate(image, saliency, class_index)`` returns every result key of every chosen metric.
    """

    def __init__(self, adapter: Any, names: Sequence[str], settings: Any = None) -> None:
        from cnnvis_cli.evaluation.metrics.base import MetricSettings, known_names

        self.settings = settings or MetricSettings()
        grouped: dict[str, list[str]] = {}
        for name in known_names(names, list(_REGISTRY)):
            grouped.setdefault(_REGISTRY[name].target, []).append(name)
        self.metrics = [
            metric_class(chosen[0]).from_settings(adapter, self.settings, chosen)
            for chosen in grouped.values()
        ]

    def params(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for metric in self.metrics:
            found.update(metric.params())
        return found

    def evaluate(self, image: Any, saliency: Any, class_index: int) -> dict[str, float]:
        figures: dict[str, float] = {}
        for metric in self.metrics:
            figures.update(metric.evaluate(image, saliency, class_index))
        return figures
