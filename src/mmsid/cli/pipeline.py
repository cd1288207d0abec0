"""The main job: `mmsid run`, `mmsid report`."""

from __future__ import annotations

import click

from mmsid.cli.base import _fail, main
from mmsid.errors import MMSIDError


@main.command("run")
@click.option("--dataset", required=True)
@click.option("--config", "config_file", default=None, help="YAML file of settings.")
@click.option(
    "--methods",
    default=None,
    help="Comma list of rq-kmeans,rq-vae,psrq,mmq,mmq+ft,mmq+ft-control,opq (the default: all "
    "of them) and the MMQ ablations mmq-no-orth,mmq-no-sharpness,mmq-shared-only,"
    "mmq-specific-only,mmq-one-expert.",
)
@click.option("--tasks", default=None, help="Comma list of retrieval,ranking.")
@click.option("--budget", type=click.Choice(["quick", "full"]), default=None)
@click.option("--seeds", default=None, help="Model seeds, comma list: --seeds 0,1,2.")
@click.option("--device", default=None)
@click.option("--data-dir", default=None)
@click.option("--set", "sets", multiple=True, help="Override a setting: KEY.SUB=VALUE.")
@click.option("--resume", is_flag=True, help="Reuse the matching stages of another run here.")
@click.option("--overwrite", is_flag=True, help="Delete what the folder holds and start clean.")
@click.option("--out", required=True, help="Run folder.")
def run_cmd(
    dataset: str,
    config_file: str | None,
    methods: str | None,
    tasks: str | None,
    budget: str | None,
    seeds: str | None,
    device: str | None,
    data_dir: str | None,
    sets: tuple[str, ...],
    resume: bool,
    overwrite: bool,
    out: str,
) -> None:
    """The whole pipeline: features, tokenizers, retrieval and ranking on each, report.md."""
    from mmsid.pipeline import command_line, resolve_config, run

    try:
        cfg = resolve_config(
            dataset,
            out,
            config_file=config_file,
            cli={
                "methods": methods,
                "tasks": tasks,
                "budget": budget,
                "seeds": seeds,
                "device": device,
                "data_dir": data_dir,
            },
            sets=sets,
        )
        r = run(cfg, resume=resume, overwrite=overwrite, command=command_line())
    except MMSIDError as e:
        _fail(e)
    if not r:  # a rank other than 0 under torchrun: rank 0 reports
        return
    cut = [
        name
        for task in ("retrieval", "ranking")
        for name, row in (r.get(task) or {}).items()
        if "max_minutes" in (row.get("stopped") or [])
    ]
    if cut:
        click.echo(
            f"warning: cut by the time limit before converging: {', '.join(cut)} (see report.md)",
            err=True,
        )
    ran = sum(s["status"] == "ran" for s in r["stages"])
    click.echo(
        f"{len(r['stages'])} stages ({ran} ran, {len(r['stages']) - ran} cached) in "
        f"{r['seconds'] / 60:.1f} min; wrote {out}/report.md, results.json"
    )


@main.command("report")
@click.argument("run_dir")
def report_cmd(run_dir: str) -> None:
    """Rewrite RUN_DIR's report.md, results.json and plots from its finished stages, running
    nothing (works while `mmsid run` is still going on it)."""
    from mmsid.pipeline import DONE, refresh

    try:
        r = refresh(run_dir)
    except MMSIDError as e:
        _fail(e)
    n = sum(s["status"] in DONE for s in r["stages"])
    state = "complete" if r["complete"] else "in progress"
    click.echo(f"{n} of {len(r['stages'])} stages done ({state}); wrote {run_dir}/report.md")
