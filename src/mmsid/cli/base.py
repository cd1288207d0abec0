"""The command group and what every command shares: error exit, protocol options."""

from __future__ import annotations

import sys

import click


def _fail(e: Exception) -> None:
    click.echo(f"error: {e}", err=True)
    sys.exit(2)


def _trained(r: dict, out: str, patience: int) -> None:
    """The last lines of a trained stage: a warning when a time limit or the epoch cap ended it
    before early stopping did (with ``patience`` 0 the cap is the plan), what it wrote."""
    if r.get("stopped") == "max_minutes":
        click.echo(
            f"warning: training was cut by the time limit after {r['epochs_run']} epoch(s), "
            "before it converged (metrics.json: stopped = max_minutes)",
            err=True,
        )
    elif r.get("stopped") == "epochs" and patience:
        click.echo(
            f"warning: training reached the epoch cap ({r['epochs_run']}) while validation was "
            "still improving within the patience, so it may not have converged; re-run with a "
            "larger --epochs (metrics.json: stopped = epochs)",
            err=True,
        )
    click.echo(f"wrote {out}/metrics.json, model.pt, curves.png")


def protocol_options(f):
    """--cold-fraction and --protocol-seed: the evaluation protocol (mmsid.protocol)."""
    f = click.option(
        "--protocol-seed",
        default=0,
        show_default=True,
        help="Seed of the protocol: cold items and ranking negatives (fixed across model seeds).",
    )(f)
    return click.option(
        "--cold-fraction",
        default=0.05,
        show_default=True,
        help="Share of items held out of every training input (the cold slice).",
    )(f)


def _protocol(cold_fraction: float, protocol_seed: int):
    from mmsid.protocol import ProtocolConfig

    return ProtocolConfig(cold_fraction=cold_fraction, seed=protocol_seed)


@click.group()
@click.version_option(package_name="mmsid")
def main() -> None:
    """mmsid: multimodal semantic IDs for recommendation.

    Training commands also run data-parallel under torchrun:
    `torchrun --nproc-per-node N -m mmsid retrieve ...` (see mmsid.distributed)."""
    import os
    import sys

    from mmsid import distributed

    click.get_current_context().call_on_close(distributed.shutdown)  # no-op for one process
    if int(os.environ.get("RANK", "0")) > 0:  # torchrun: rank 0 reports; errors still show
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the process's lifetime)
