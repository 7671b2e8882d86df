"""The ``cnnvis`` command line: one small function per command.

Each command parses its options into a ``RunConfig`` and hands it to the runner. TensorFlow,
NumPy and OpenCV are imported inside the commands, so ``cnnvis --help`` and ``--version`` stay
instant.
"""

from __future__ import annotations

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
    str, typer.Option("--model", "-m", help="Keras model file (.keras or .h5).", show_default=False)
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


def _run(method: str, method_options: dict | None = None, **options) -> None:
    from cnnvis_cli.runner import RunConfig, run

    config = RunConfig(method=method, method_options=method_options or {}, **options)
    raise typer.Exit(run(config))


@app.command(rich_help_panel=METHODS_PANEL)
def gradcam(
    images: Images,
    model: ModelOpt,
    out: OutOpt = Path("cnnvis-out"),
    layer: LayerOpt = None,
    class_spec: ClassOpt = None,
    top_k: TopKOpt = 1,
    batch_size: BatchOpt = 16,
    alpha: AlphaOpt = 0.4,
    colormap: ColormapOpt = "jet",
    preprocess: PreprocessOpt = "auto",
    class_names: ClassNamesOpt = None,
    save_raw: SaveRawOpt = False,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
    recursive: RecursiveOpt = False,
    max_pixels: MaxPixelsOpt = 100_000_000,
) -> None:
    """Grad-CAM heatmaps (Selvaraju et al., 2017): where the class evidence is."""
    _run(
        "gradcam",
        {"layer": layer},
        inputs=images,
        model=model,
        out=out,
        class_spec=class_spec,
        top_k=top_k,
        batch_size=batch_size,
        alpha=alpha,
        colormap=colormap,
        preprocess=preprocess,
        class_names=class_names,
        save_raw=save_raw,
        json_output=json_output,
        quiet=quiet,
        recursive=recursive,
        max_pixels=max_pixels,
    )


@app.command(rich_help_panel=TOOLS_PANEL)
def layers(
    model: Annotated[str, typer.Argument(help="Keras model file (.keras or .h5).")],
    show_all: Annotated[bool, typer.Option("--all", help="List every layer.")] = False,
    preprocess: PreprocessOpt = "auto",
) -> None:
    """List the layers Grad-CAM can use, the automatic choice, input and head."""
    from rich.console import Console

    from cnnvis_cli.errors import CnnvisError
    from cnnvis_cli.inspect import print_layers
    from cnnvis_cli.model import load_model

    try:
        adapter = load_model(model, preprocess=preprocess)
    except CnnvisError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code) from None
    print_layers(adapter, Console(), show_all)


@app.command(rich_help_panel=TOOLS_PANEL)
def demo(
    out: OutOpt = Path("cnnvis-out/demo"),
    quiet: QuietOpt = False,
) -> None:
    """Run on the bundled demo model and sample images."""
    from cnnvis_cli.demo.paths import demo_model_path, sample_images_dir

    samples = sample_images_dir()
    if samples is None:
        typer.echo("error: sample_images/ not found; run from a clone of the cnnvis repo", err=True)
        raise typer.Exit(2)
    from cnnvis_cli.runner import RunConfig, run

    config = RunConfig(
        method="gradcam", inputs=[str(samples)], model=str(demo_model_path()), out=out, quiet=quiet
    )
    code = run(config)
    if code in (0, 1):
        typer.echo(f"overlays written to {out.resolve()}/ (summary: {out / 'summary.json'})")
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    app()
