"""``RunConfig``: everything a run needs besides the method's own options.

Its fields carry their command-line metadata (``cnnvis_cli.options.option``): the CLI generates
every method command's common options from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnvis_cli.core.decode import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE
from cnnvis_cli.core.source import DEFAULT_MEMORY_BUDGET
from cnnvis_cli.options import Options, option

MODEL_PANEL = "Model"
OUTPUT_PANEL = "Output"
METRICS_PANEL = "Metrics and report"
INPUT_PANEL = "Input and batching"
SCALE_PANEL = "Shards, resuming and Ray"
DEFAULT_OUT = Path("cnnvis-out")


@dataclass(frozen=True)
class RunConfig:
    """The run's inputs, model, targets, batching and outputs (one per command invocation)."""

    images: list[str] = option(
        default_factory=list,
        help="Image files and/or folders.",
        argument=True,
        metavar="IMAGES...",
        required=True,
    )
    model: str = option(
        "",
        "Model: a .keras/.h5 file, a SavedModel folder, or keras:NAME (e.g. keras:MobileNetV2).",
        flags=("--model", "-m"),
        metavar="MODEL",
        required=True,
    )
    class_spec: str | None = option(
        None,
        "Class to explain: an index, or a name when the model has class names. Default: each "
        "image's own top class.",
        flags=("--class", "-c"),
        metavar="CLASS",
    )
    top_k: int = option(1, "Maps for the K best classes.", metavar="K", min=1)
    batch_size: int = option(
        16, "Images per step.", flags=("--batch-size", "-b"), metavar="N", min=1, panel=INPUT_PANEL
    )
    eval_batch: int = option(
        64,
        "Model evaluations per call, for methods that run the model on many copies of an image "
        "(occlusion, SmoothGrad, Integrated Gradients, Score-CAM, metrics).",
        metavar="N",
        min=1,
        panel=INPUT_PANEL,
    )
    preprocess: str = option(
        "auto",
        "auto | unit [0,1] | raw 0..255 | symmetric [-1,1] | caffe | torch. auto: raw when the "
        "model rescales itself, a nested keras.applications backbone's own, else unit.",
        metavar="MODE",
        panel=MODEL_PANEL,
    )
    class_names: Path | None = option(
        None,
        "JSON list or text file (one per line) of class names. Default: <model stem>.classes.json "
        "beside the model.",
        metavar="FILE",
        panel=MODEL_PANEL,
    )
    recursive: bool = option(
        False, "Search folders recursively.", flags=("--recursive", "-r"), panel=INPUT_PANEL
    )
    max_pixels: int = option(
        DEFAULT_MAX_PIXELS,
        "Refuse images with more pixels than this.",
        metavar="N",
        min=1,
        panel=INPUT_PANEL,
    )
    max_file_size: int = option(
        DEFAULT_MAX_FILE_SIZE // 2**20,
        "Refuse input files larger than this many MiB.",
        metavar="MIB",
        min=1,
        panel=INPUT_PANEL,
    )
    memory_budget: int = option(
        DEFAULT_MEMORY_BUDGET // 2**20,
        "MiB of decoded images held at once (decoding ahead waits beyond it).",
        metavar="MIB",
        min=64,
        panel=INPUT_PANEL,
    )
    weights: str = option(
        "imagenet",
        "For keras:NAME models: imagenet (from the Keras cache), a weights file, or none (random).",
        metavar="imagenet|PATH|none",
        panel=MODEL_PANEL,
    )
    output: str | None = option(
        None,
        "Which output of a multi-output model to explain: a name or an index (default: the first).",
        metavar="NAME|INDEX",
        panel=MODEL_PANEL,
    )
    max_size: int = option(
        DEFAULT_MAX_SIDE,
        "Long-side cap for models with a dynamic input size.",
        metavar="N",
        min=8,
        panel=MODEL_PANEL,
    )
    unsafe_load: bool = option(
        False,
        "Turn Keras' safe mode off so Lambda layers load. This RUNS CODE stored in the model "
        "file: only for files you trust.",
        panel=MODEL_PANEL,
    )
    custom_objects: Path | None = option(
        None,
        "Python file defining the model's custom layers (or a CUSTOM_OBJECTS dict). This RUNS "
        "the file's code.",
        metavar="FILE.py",
        panel=MODEL_PANEL,
    )
    out: Path = option(
        DEFAULT_OUT, "Output folder.", flags=("--out", "-o"), metavar="PATH", panel=OUTPUT_PANEL
    )
    alpha: float = option(
        0.4, "Heatmap opacity.", min=0.0, max=1.0, metavar="A", panel=OUTPUT_PANEL
    )
    colormap: str = option(
        "jet",
        "Any OpenCV colormap: jet, turbo, viridis, inferno, magma, ...",
        metavar="NAME",
        panel=OUTPUT_PANEL,
    )
    upsample: str = option(
        "bilinear",
        "How low-resolution maps are resized to the image: bilinear (half-pixel centres) | "
        "bicubic (as Xplique) | corners (bilinear, aligned corners, as tf-keras-vis).",
        metavar="MODE",
        panel=OUTPUT_PANEL,
    )
    image_format: str = option(
        "png",
        "Overlay file format: png (lossless) | jpg (quality 92, ~10x faster to write) | webp.",
        flags=("--format",),
        metavar="png|jpg|webp",
        panel=OUTPUT_PANEL,
    )
    legend: bool | None = option(
        None,
        "A strip under each picture: method, class, score and a colour bar with its range. "
        "Default: on for compare and with --report, off for plain overlays (they keep the "
        "input's pixel size).",
        flags=("--legend/--no-legend",),
        panel=OUTPUT_PANEL,
    )
    scale: str = option(
        "joint",
        "With --top-k: joint shows an image's maps on one scale (the weaker classes look "
        "weaker), each scales every map to its own maximum.",
        metavar="joint|each",
        panel=OUTPUT_PANEL,
    )
    clip: float = option(
        99.0,
        "Pixel-level maps (saliency, SmoothGrad, VarGrad, SquareGrad, Integrated Gradients, "
        "gradient x input, GradientSHAP) are clipped at this percentile before colouring, so a "
        "few extreme pixels do not leave the rest faint (100: no clip; --save-raw stays "
        "unclipped).",
        metavar="PCT",
        min=50.0,
        max=100.0,
        panel=OUTPUT_PANEL,
    )
    save_raw: bool = option(False, "Also write the map as float32 .npy.", panel=OUTPUT_PANEL)
    json_output: bool = option(
        False, "Print the summary JSON to stdout.", flags=("--json",), panel=OUTPUT_PANEL
    )
    quiet: bool = option(
        False, "No progress or table; errors only.", flags=("--quiet", "-q"), panel=OUTPUT_PANEL
    )
    metrics: str | None = option(
        None,
        "Metrics per image, comma-separated: deletion, insertion, mufidelity, road, avgdrop, "
        "increase, sparseness, complexity (README: Metrics).",
        metavar="NAME,NAME",
        panel=METRICS_PANEL,
    )
    metric_steps: int = option(
        32, "Steps of the deletion/insertion curves.", metavar="N", min=1, panel=METRICS_PANEL
    )
    metric_samples: int = option(
        128, "Random subsets per image for mufidelity.", metavar="N", min=2, panel=METRICS_PANEL
    )
    report: bool = option(
        False,
        "Write OUT/index.html, a self-contained gallery (with downscaled copies of the inputs "
        "in OUT/thumbs/, so the folder can be moved).",
        panel=METRICS_PANEL,
    )
    labels: Path | None = option(
        None,
        "Expected classes, JSON {file name: class name or index}: misclassified images are "
        "flagged (and fail `cnnvis check`).",
        metavar="FILE",
        panel=METRICS_PANEL,
    )
    shard: str | None = option(
        None,
        "Process shard I of N only (0 <= I < N): a stable partition by each input's path, for CI "
        "matrices and job arrays; `cnnvis merge` joins the shards' outputs.",
        metavar="I/N",
        envvar="CNNVIS_SHARD",
        panel=SCALE_PANEL,
    )
    resume: bool = option(
        False,
        "Skip inputs a previous run into the same -o already finished (same model, method and "
        "options; the input unchanged), even after Ctrl-C or kill -9; do the rest.",
        panel=SCALE_PANEL,
    )
    engine: str = option(
        "local",
        "Where the inputs are explained: local (this process) | ray (a pool of Ray actors, each "
        "holding the model; needs pip install 'cnnvis\\[ray]').",
        metavar="local|ray",
        panel=SCALE_PANEL,
    )
    ray_address: str | None = option(
        None,
        "The Ray cluster --engine ray joins (e.g. auto, HOST:6379). Default: $RAY_ADDRESS if "
        "set, else a new local Ray on this machine.",
        metavar="ADDRESS",
        panel=SCALE_PANEL,
    )
    workers: int | None = option(
        None,
        "Ray actors with --engine ray; each loads the model once. Default: the cores of a local "
        "Ray, one per node of a cluster.",
        metavar="N",
        min=1,
        panel=SCALE_PANEL,
    )
    worker_gpus: float = option(
        0.0,
        "GPUs each Ray actor asks for with --engine ray (1 on GPU nodes; 0.5 puts two on a GPU).",
        metavar="G",
        min=0.0,
        panel=SCALE_PANEL,
    )
    # set by code, not flags
    method: str = option("gradcam", hidden=True)
    method_options: Options | None = option(None, hidden=True)
    column_options: dict[str, Options] = option(default_factory=dict, hidden=True)
    check: Any = option(None, hidden=True)  # evaluation.check.RegionCheck for `cnnvis check`
    junit: Path | None = option(None, hidden=True)
    title: str | None = option(None, hidden=True)  # the table's and report's title

    @property
    def show_legend(self) -> bool:
        """--legend as given, else on for compare panels and report runs."""
        return self.legend if self.legend is not None else self.method == "compare" or self.report

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.strip().lower() for m in (self.metrics or "").split(",") if m.strip())
