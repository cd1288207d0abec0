"""`mmsid data describe`, `mmsid features`."""

from __future__ import annotations

import json

import click

from mmsid.cli.base import _fail, main
from mmsid.errors import MMSIDError


@main.group()
def data() -> None:
    """Inspect data sets."""


@data.command("describe")
@click.argument("dataset")
@click.option(
    "--data-dir", default=None, help="Folder holding the data set (else $MMSID_DATA_DIR)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def data_describe(dataset: str, data_dir: str | None, as_json: bool) -> None:
    """Users, items, interactions, density, sequence lengths, modality coverage."""
    from mmsid.data import load_dataset
    from mmsid.data.describe import describe

    try:
        stats = describe(load_dataset(dataset, data_dir))
    except MMSIDError as e:
        _fail(e)
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    rows = [
        ("users", f"{stats['users']:,}"),
        ("items", f"{stats['items']:,}"),
        ("interactions", f"{stats['interactions']:,}"),
        ("density", f"{stats['density']:.5f}"),
        ("timestamps", "yes" if stats["has_timestamps"] else "order only"),
    ]
    sl = stats["sequence_length"]
    rows.append(
        (
            "sequence length",
            f"min {sl['min']}  median {sl['median']:.0f}  "
            f"mean {sl['mean']:.1f}  p90 {sl['p90']:.0f}  max {sl['max']}",
        )
    )
    for name, m in stats["modalities"].items():
        rows.append(
            (
                f"modality {name}",
                f"{m['kind']}, {m['coverage']:.1%} "
                f"({m['present']:,} present, {m['missing']:,} missing)",
            )
        )
    width = max(len(r[0]) for r in rows)
    click.echo(f"{stats['dataset']}")
    for k, v in rows:
        click.echo(f"  {k:<{width}}  {v}")


@main.command("features")
@click.argument("dataset")
@click.option(
    "--data-dir", default=None, help="Folder holding the data set (else $MMSID_DATA_DIR)."
)
@click.option("--modality", "modalities", multiple=True, help="Modality to embed (repeatable).")
@click.option("--no-normalize", is_flag=True, help="Keep raw norms (default: L2-normalise).")
@click.option("--device", default="auto", show_default=True)
@click.option(
    "--cache-dir", default=None, help="Feature cache (default $MMSID_CACHE_DIR/features)."
)
def features_cmd(
    dataset: str,
    data_dir: str | None,
    modalities: tuple[str, ...],
    no_normalize: bool,
    device: str,
    cache_dir: str | None,
) -> None:
    """Build (or read from cache) content embeddings and print their shapes."""
    from mmsid.data import load_dataset
    from mmsid.device import resolve_device
    from mmsid.features import build_features

    try:
        ds = load_dataset(dataset, data_dir)
        f = build_features(
            ds,
            modalities=list(modalities) or None,
            normalize=not no_normalize,
            device=str(resolve_device(device)),
            cache=cache_dir,
        )
    except MMSIDError as e:
        _fail(e)
    for name, shape in f.shapes().items():
        src = "cache" if f.cached[name] else f.encoders[name]
        click.echo(
            f"{name:<14} {shape[0]} x {shape[1]:<5} present {int(f.masks[name].sum()):>6}"
            f"  {f.seconds[name]:7.2f}s  ({src})"
        )
