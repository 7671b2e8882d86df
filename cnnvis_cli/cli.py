"""The ``cnnvis`` command line: one small function per command.

Each command parses its options into a ``RunConfig`` and hands it to the runner. TensorFlow,
NumPy and OpenCV are imported inside the commands, so ``cnnvis --help`` and ``--version`` stay
instant.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from cnnvis_cli import __version__

app = typer.Typer(
    name="cnnvis",
    help="See where a convolutional network looks: heatmap overlays for Keras image models.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    add_completion=False,
)

METHODS_PANEL = "Methods"
TOOLS_PANEL = "Tools"
OUTPUT_PANEL = "Output"

Images = Annotated[
    list[str], typer.Argument(help="Image files and/or folders.", show_default=False)
]
ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Model: a .keras/.h5 file, a SavedModel folder, or keras:NAME (e.g. "
        "keras:MobileNetV2).",
        show_default=False,
    ),
]
OutOpt = Annotated[
    Path, typer.Option("--out", "-o", help="Output folder.", rich_help_panel=OUTPUT_PANEL)
]
LayerOpt = Annotated[
    str | None,
    typer.Option(
        "--layer",
        help="Layer for the map (path through nested models); default: the last "
        "layer with a spatial output.",
    ),
]
ClassOpt = Annotated[
    str | None,
    typer.Option(
        "--class",
        "-c",
        help="Class to explain: an index, or a name when the model has class "
        "names. Default: each image's own top class.",
        show_default=False,
    ),
]
TopKOpt = Annotated[int, typer.Option("--top-k", min=1, help="Maps for the K best classes.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per model call.")]
AlphaOpt = Annotated[
    float,
    typer.Option(
        "--alpha", min=0.0, max=1.0, help="Heatmap opacity.", rich_help_panel=OUTPUT_PANEL
    ),
]
ColormapOpt = Annotated[
    str,
    typer.Option(
        "--colormap",
        help="Any OpenCV colormap: jet, turbo, viridis, inferno, magma, ...",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
PreprocessOpt = Annotated[
    str,
    typer.Option(
        "--preprocess",
        help="auto | unit [0,1] | raw 0..255 | symmetric [-1,1] | caffe | torch. "
        "auto: raw when the model starts with a Rescaling/Normalization layer, else unit.",
    ),
]
ClassNamesOpt = Annotated[
    Path | None,
    typer.Option(
        "--class-names",
        help="JSON list or text file (one per line) of class names. Default: "
        "<model stem>.classes.json beside the model.",
        show_default=False,
    ),
]
SaveRawOpt = Annotated[
    bool,
    typer.Option(
        "--save-raw", help="Also write the map as float32 .npy.", rich_help_panel=OUTPUT_PANEL
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print the summary JSON to stdout.", rich_help_panel=OUTPUT_PANEL),
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="No progress or table; errors only.", rich_help_panel=OUTPUT_PANEL
    ),
]
RecursiveOpt = Annotated[
    bool, typer.Option("--recursive", "-r", help="Search folders recursively.")
]
MODEL_PANEL = "Model"
METRICS_PANEL = "Metrics and report"
MetricsOpt = Annotated[
    str | None,
    typer.Option(
        "--metrics",
        help="Faithfulness metrics per image: deletion, insertion (Petsiuk et "
        "al., 2018), comma-separated.",
        show_default=False,
        rich_help_panel=METRICS_PANEL,
    ),
]
MetricStepsOpt = Annotated[
    int,
    typer.Option(
        "--metric-steps",
        min=1,
        help="Steps of the deletion/insertion curves.",
        rich_help_panel=METRICS_PANEL,
    ),
]
ReportOpt = Annotated[
    bool,
    typer.Option(
        "--report",
        help="Write OUT/index.html, a self-contained gallery.",
        rich_help_panel=METRICS_PANEL,
    ),
]
RegionsOpt = Annotated[
    Path,
    typer.Option(
        "--regions",
        help="Boxes JSON (file name -> x0, y0, x1, y1 in pixels) or a folder of "
        "mask PNGs with the inputs' stems.",
        show_default=False,
    ),
]
CheckMethodOpt = Annotated[str, typer.Option("--method", help="Method whose heatmap is checked.")]
MinEnergyOpt = Annotated[
    float,
    typer.Option(
        "--min-energy",
        min=0.0,
        max=1.0,
        help="Minimum mean share of heatmap mass inside the regions.",
    ),
]
MinHitRateOpt = Annotated[
    float,
    typer.Option(
        "--min-hit-rate",
        min=0.0,
        max=1.0,
        help="Minimum share of images whose heatmap maximum is inside the region.",
    ),
]
ToleranceOpt = Annotated[
    int,
    typer.Option("--tolerance", min=0, help="Pointing-game tolerance in pixels."),
]
JunitOpt = Annotated[
    Path | None,
    typer.Option("--junit", help="Write JUnit XML (one test case per image).", show_default=False),
]
WeightsOpt = Annotated[
    str,
    typer.Option(
        "--weights",
        help="For keras:NAME models: imagenet (from the Keras cache), a weights "
        "file, or none (random).",
        rich_help_panel=MODEL_PANEL,
    ),
]
OutputOpt = Annotated[
    str | None,
    typer.Option(
        "--output",
        help="Which output of a multi-output model to explain: a name or an index "
        "(default: the first).",
        show_default=False,
        rich_help_panel=MODEL_PANEL,
    ),
]
UnsafeOpt = Annotated[
    bool,
    typer.Option(
        "--unsafe-load",
        help="Turn Keras' safe mode off so Lambda layers load. This RUNS CODE "
        "stored in the model file: only for files you trust.",
        rich_help_panel=MODEL_PANEL,
    ),
]
CustomObjectsOpt = Annotated[
    Path | None,
    typer.Option(
        "--custom-objects",
        help="Python file defining the model's custom layers (or a "
        "CUSTOM_OBJECTS dict). This RUNS the file's code.",
        show_default=False,
        rich_help_panel=MODEL_PANEL,
    ),
]
MaxSizeOpt = Annotated[
    int,
    typer.Option(
        "--max-size",
        min=8,
        help="Long-side cap for models with a dynamic input size.",
        rich_help_panel=MODEL_PANEL,
    ),
]
MaxPixelsOpt = Annotated[
    int, typer.Option("--max-pixels", min=1, help="Refuse images with more pixels than this.")
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cnnvis {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """See where a convolutional network looks: heatmap overlays for Keras image models."""


PatchOpt = Annotated[
    int | None,
    typer.Option(
        "--patch",
        min=1,
        help="Occluding patch side in model-input pixels (default: 16 at "
        "224x224, scaled to the input size).",
        show_default=False,
    ),
]
StrideOpt = Annotated[
    int | None,
    typer.Option("--stride", min=1, help="Patch stride (default: patch/2).", show_default=False),
]
BaselineOpt = Annotated[
    str,
    typer.Option(
        "--baseline",
        help="Occluder: mean (image mean) | zero | gray (127.5) | blur | a value "
        "on the 0..255 scale.",
    ),
]
SignedOpt = Annotated[
    bool,
    typer.Option(
        "--signed",
        help="Keep negative values (patches whose removal raises the score), "
        "drawn with a diverging colormap.",
    ),
]
MaxChannelsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-channels",
        min=1,
        help="Faster Score-CAM: score only the N channels with the largest activation variance.",
        show_default=False,
    ),
]
SamplesOpt = Annotated[int, typer.Option("--samples", min=1, help="Noisy copies per image.")]
NoiseOpt = Annotated[
    float,
    typer.Option("--noise", min=0.0, help="Noise sigma as a fraction of the 0..255 input range."),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Noise seed (results are reproducible).")]
StepsOpt = Annotated[int, typer.Option("--steps", min=1, help="Integration steps.")]
IGBaselineOpt = Annotated[
    str,
    typer.Option(
        "--baseline",
        help="Integration start: black | gray (127.5) | blur | mean | a value on the 0..255 scale.",
    ),
]
MethodsOpt = Annotated[
    str,
    typer.Option("--methods", help="Comma-separated methods, one panel column each."),
]


def _param(name: str, annotation: object, default: object = inspect.Parameter.empty):
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
    )


# Options every method command takes, in --help order: (parameter name, type, default).
COMMON_HEAD = [_param("images", Images), _param("model", ModelOpt)]
COMMON_TAIL = [
    _param("class_spec", ClassOpt, None),
    _param("top_k", TopKOpt, 1),
    _param("batch_size", BatchOpt, 16),
    _param("preprocess", PreprocessOpt, "auto"),
    _param("class_names", ClassNamesOpt, None),
    _param("recursive", RecursiveOpt, False),
    _param("max_pixels", MaxPixelsOpt, 100_000_000),
    _param("weights", WeightsOpt, "imagenet"),
    _param("output", OutputOpt, None),
    _param("max_size", MaxSizeOpt, 1024),
    _param("unsafe_load", UnsafeOpt, False),
    _param("custom_objects", CustomObjectsOpt, None),
    _param("out", OutOpt, Path("cnnvis-out")),
    _param("alpha", AlphaOpt, 0.4),
    _param("colormap", ColormapOpt, "jet"),
    _param("save_raw", SaveRawOpt, False),
    _param("json_output", JsonOpt, False),
    _param("quiet", QuietOpt, False),
    _param("metrics", MetricsOpt, None),
    _param("metric_steps", MetricStepsOpt, 32),
    _param("report", ReportOpt, False),
]
LAYER = _param("layer", LayerOpt, None)
OCCLUSION = [
    _param("patch", PatchOpt, None),
    _param("stride", StrideOpt, None),
    _param("baseline", BaselineOpt, "mean"),
]


def _run(method: str, method_options: dict, **options) -> None:
    from cnnvis_cli.runner import RunConfig, run

    options["inputs"] = options.pop("images")
    metrics = options.pop("metrics", None)
    options["metrics"] = (
        tuple(m.strip() for m in metrics.split(",") if m.strip()) if metrics else ()
    )
    config = RunConfig(method=method, method_options=method_options, **options)
    raise typer.Exit(run(config))


def method_command(name: str, summary: str, extra: list[inspect.Parameter], **renamed) -> None:
    """Register ``cnnvis NAME``: the common options plus the method's own ``extra`` ones.

    ``renamed`` maps a CLI parameter name to the method option it feeds, when they differ.
    """
    extra_names = [p.name for p in extra]

    def command(**kwargs: object) -> None:
        method_options = {renamed.get(n, n): kwargs.pop(n) for n in extra_names}
        if "methods" in method_options:
            method_options["methods"] = [
                m.strip() for m in str(method_options["methods"]).split(",") if m.strip()
            ]
        _run(name, method_options, **kwargs)

    command.__signature__ = inspect.Signature(COMMON_HEAD + extra + COMMON_TAIL)
    command.__doc__ = summary
    command.__name__ = name.replace("-", "_")
    app.command(name=name, rich_help_panel=METHODS_PANEL)(command)


method_command(
    "gradcam",
    "Grad-CAM heatmaps (Selvaraju et al., 2017): where the class evidence is.",
    [LAYER],
)
method_command(
    "occlusion",
    "Occlusion sensitivity (Zeiler & Fergus, 2014): how much the class score drops when a "
    "patch is hidden.",
    [*OCCLUSION, _param("signed", SignedOpt, False)],
    signed="signed_map",
)
method_command(
    "guided",
    "Guided back-propagation (Springenberg et al., 2015): pixel-level gradient detail.",
    [],
)
method_command(
    "guided-gradcam",
    "Guided Grad-CAM (Selvaraju et al., 2017): guided back-propagation x Grad-CAM.",
    [LAYER],
)
method_command(
    "gradcam-pp",
    "Grad-CAM++ (Chattopadhay et al., 2018): better coverage when a class appears several times.",
    [LAYER],
)
method_command(
    "hirescam",
    "HiResCAM (Draelos & Carin, 2020): gradient x activation, faithful for CAM-style models.",
    [LAYER],
)
method_command(
    "layercam",
    "LayerCAM (Jiang et al., 2021): positive gradient x activation; good on early layers.",
    [LAYER],
)
method_command(
    "saliency",
    "Vanilla gradient saliency (Simonyan et al., 2014): max |d score / d pixel| over channels.",
    [],
)
method_command(
    "smoothgrad",
    "SmoothGrad (Smilkov et al., 2017): saliency averaged over noisy copies.",
    [
        _param("samples", SamplesOpt, 25),
        _param("noise", NoiseOpt, 0.15),
        _param("seed", SeedOpt, 0),
    ],
)
method_command(
    "integrated-gradients",
    "Integrated Gradients (Sundararajan et al., 2017): gradients integrated from a baseline; "
    "reports the completeness gap.",
    [_param("steps", StepsOpt, 50), _param("baseline", IGBaselineOpt, "black")],
)
method_command(
    "scorecam",
    "Score-CAM (Wang et al., 2020): channels weighted by the class score of the input masked "
    "with them; gradient-free.",
    [LAYER, _param("max_channels", MaxChannelsOpt, None)],
)
method_command(
    "compare",
    "One labelled panel per image: input | Grad-CAM | occlusion | guided Grad-CAM.",
    [_param("methods", MethodsOpt, "gradcam,occlusion,guided-gradcam"), LAYER, *OCCLUSION],
)


@app.command(rich_help_panel=TOOLS_PANEL)
def layers(
    model: Annotated[str, typer.Argument(help="Keras model file (.keras or .h5).")],
    show_all: Annotated[bool, typer.Option("--all", help="List every layer.")] = False,
    preprocess: PreprocessOpt = "auto",
    weights: WeightsOpt = "imagenet",
    output: OutputOpt = None,
    unsafe_load: UnsafeOpt = False,
    custom_objects: CustomObjectsOpt = None,
) -> None:
    """List the layers Grad-CAM can use, the automatic choice, input and head."""
    from rich.console import Console

    from cnnvis_cli.errors import CnnvisError
    from cnnvis_cli.inspect import print_layers
    from cnnvis_cli.model import load_model

    try:
        adapter = load_model(
            model,
            preprocess=preprocess,
            weights=weights,
            output=output,
            unsafe=unsafe_load,
            custom_objects=custom_objects,
        )
    except CnnvisError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    print_layers(adapter, Console(), show_all)


@app.command(rich_help_panel=TOOLS_PANEL)
def demo(
    out: OutOpt = Path("cnnvis-out/demo"),
    method: Annotated[
        str, typer.Option("--method", help="Method to run (compare: one panel of several).")
    ] = "compare",
    quiet: QuietOpt = False,
) -> None:
    """Run on the bundled demo model and sample images (a compare panel per image)."""
    from cnnvis_cli.demo.paths import demo_model_path, sample_images_dir

    samples = sample_images_dir()
    if samples is None:
        typer.echo("error: sample_images/ not found; run from a clone of the cnnvis repo", err=True)
        raise typer.Exit(2)
    from cnnvis_cli.runner import RunConfig, run

    config = RunConfig(
        method=method,
        inputs=[str(samples)],
        model=str(demo_model_path()),
        out=out,
        quiet=quiet,
        report=True,
    )
    code = run(config)
    if code in (0, 1):
        where = out.resolve()
        typer.echo(f"PNGs written to {where}/ — open {where / 'index.html'} for the gallery")
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    app()


def check_command() -> None:
    """Register ``cnnvis check``: a method's heatmaps against known regions, as a CI gate."""
    extra = [
        _param("regions", RegionsOpt),
        _param("method", CheckMethodOpt, "gradcam"),
        _param("min_energy", MinEnergyOpt, 0.5),
        _param("min_hit_rate", MinHitRateOpt, 0.9),
        _param("tolerance", ToleranceOpt, 15),
        _param("junit", JunitOpt, None),
        LAYER,
        *OCCLUSION,
    ]

    def check(**kwargs: object) -> None:
        from cnnvis_cli.check import RegionCheck, Regions
        from cnnvis_cli.errors import CnnvisError

        method = str(kwargs.pop("method"))
        region_options = {k: kwargs.pop(k) for k in ("min_energy", "min_hit_rate", "tolerance")}
        regions = kwargs.pop("regions")
        method_options = {k: kwargs.pop(k) for k in ("layer", "patch", "stride", "baseline")}
        try:
            kwargs["check"] = RegionCheck(Regions(Path(regions)), **region_options)
        except CnnvisError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        _run(method, _accepted(method, method_options), **kwargs)

    check.__signature__ = inspect.Signature(COMMON_HEAD + extra + COMMON_TAIL)
    check.__doc__ = (
        "Does the model look at the right place? Energy inside known regions and the pointing "
        "game; exit 3 when the set fails."
    )
    app.command(name="check", rich_help_panel=TOOLS_PANEL)(check)


def _accepted(method: str, options: dict) -> dict:
    """The options the chosen method takes (check passes layer/occlusion options through)."""
    from cnnvis_cli.methods import get_method, method_names
    from cnnvis_cli.methods.compare import accepted_options

    if method not in method_names():
        typer.echo(f"error: unknown --method {method!r}; use {', '.join(method_names())}", err=True)
        raise typer.Exit(2)
    return accepted_options(get_method(method), options)


check_command()
