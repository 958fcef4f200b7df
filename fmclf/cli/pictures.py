"""The picture commands: ``fmclf predict`` (a run's predictions) and ``fmclf show`` (a data set's images)."""

from __future__ import annotations

import pathlib

import click

from ..draw.pictures import SHOWN
from ..kinds import SPLITS
from ..run.config import RunConfig
from . import cli, friendly
from ._flags import PathArg, complete_component, dataset_options, require_run_data_root

_PATH = PathArg()
#: The most images one picture of the command line draws.
_MOST = 100


@cli.command()
@click.argument("run_dir", type=_PATH)
@click.option("-n", "n", type=click.IntRange(1, _MOST), default=SHOWN, show_default=True,
              help="How many test images to predict and draw.")
@click.option("--out", type=_PATH, default=None,
              help="Picture to write (.png, .svg or .pdf). [default: RUN_DIR/predictions.png]")
@click.option("--device", default="cpu", show_default=True,
              help="Device to predict on: cpu (instant for a few images, whatever trained the run), cuda, cuda:N, "
                   "mps or auto.")
@click.option("--data-root", type=_PATH, default=None,
              help="Folder with the data set's files, if not where the run found them.")
@click.option("--weights", default="final", show_default=True, metavar="final|NAME",
              help="final: model.pt (or the last checkpoint); NAME: RUN_DIR/NAME.pt that a callback kept, such as "
                   "best.")
@click.pass_context
@friendly
def predict(ctx: click.Context, run_dir: pathlib.Path, n: int, out: pathlib.Path | None, device: str,
            data_root: pathlib.Path | None, weights: str) -> None:
    """Draw a run's predictions: the first N test images titled true / predicted, wrong ones in red.

    Uses RUN_DIR/model.pt (or the last checkpoint of an unfinished run), or --weights NAME.
    """
    from ..draw.gallery import predict_run

    host = ctx.obj.host()
    require_run_data_root(host, run_dir, data_root)
    result = predict_run(run_dir, host, n=n, out=out, device=device, data_root=data_root, weights=weights)
    click.echo(f"{result.right} of {result.shown} right ({100 * result.right / result.shown:.1f}%), "
               f"weights from {result.weights}")
    click.echo(f"wrote {result.path}")


@cli.command()
@click.option("--dataset", default=RunConfig().dataset, show_default=True, shell_complete=complete_component("dataset"),
              help="Data-set component whose inputs are images (`fmclf plugins --kind dataset` lists them).")
@click.option("-n", "n", type=click.IntRange(1, _MOST), default=SHOWN, show_default=True, help="How many images.")
@click.option("--split", type=click.Choice(SPLITS), default="train", show_default=True,
              help="Training images (shuffled by --seed) or the first test images (or valid, for a data set that "
                   "holds one out).")
@click.option("--seed", type=int, default=0, show_default=True, help="Shuffling seed for the training images.")
@click.option("--out", type=_PATH, default=None,
              help="Picture to write (.png, .svg or .pdf). [default: DATASET-SPLIT.png]")
@click.option("--data-root", type=_PATH, default=None,
              help="Folder with the data set's files (the data set's data_root option).")
@click.option("-o", "--option", "option_args", multiple=True, metavar="dataset.OPTION=VALUE",
              help="Set a data-set option, e.g. -o dataset.resize=64. Repeatable.")
@click.pass_context
@friendly
def show(ctx: click.Context, dataset: str, n: int, split: str, seed: int, out: pathlib.Path | None,
         data_root: pathlib.Path | None, option_args: tuple[str, ...]) -> None:
    """Draw sample images of a data set with their text labels."""
    host = ctx.obj.host()
    options = dataset_options(host, dataset, option_args, data_root, "fmclf show")
    from ..draw.gallery import show_samples

    default_out = pathlib.Path(f"{dataset.replace(':', '_').replace('/', '_')}-{split}.png")
    path, labels = show_samples(host, dataset, n=n, out=out or default_out, split=split, seed=seed, options=options)
    click.echo(f"{len(labels)} {split} images: {', '.join(labels)}")
    click.echo(f"wrote {path}" if out is not None else
               f"wrote {path.resolve()} (in the current folder; --out chooses another place)")
