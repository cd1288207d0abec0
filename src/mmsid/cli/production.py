"""Production: `mmsid ids assign|show|find` (the ID store of a tokenize run), `mmsid serve`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mmsid.cli.base import _fail, main
from mmsid.errors import MMSIDError


@main.group()
def ids() -> None:
    """Semantic IDs of a tokenize run: assign new items, look items and IDs up."""


@ids.command("assign")
@click.argument("run")
@click.option("--items", "items_file", required=True, help="CSV/TSV/Parquet: item + content.")
@click.option(
    "--embeddings",
    multiple=True,
    help="NAME=FILE.npy: a modality as precomputed vectors, one row per item (repeatable).",
)
@click.option("--replace", is_flag=True, help="Re-assign items whose content changed.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--out", default=None, help="Also write the SIDs here (.csv or .parquet).")
def ids_assign(
    run: str,
    items_file: str,
    embeddings: tuple[str, ...],
    replace: bool,
    device: str,
    out: str | None,
) -> None:
    """IDs for new items, without retraining: RUN's encoders and fitted tokenizer give the
    codes, RUN/ids.sqlite the collision index (all items of the file or none)."""
    from mmsid.assign import Assigner, read_embeddings, read_items
    from mmsid.device import resolve_device
    from mmsid.io import atomic_path

    try:
        if out is not None and Path(out).suffix not in (".csv", ".parquet"):
            raise click.UsageError("--out must end in .csv or .parquet")
        frame = read_items(items_file)
        emb = dict(read_embeddings(s) for s in embeddings)
        with Assigner(run, device=str(resolve_device(device))) as a:
            res = a.assign(
                frame, emb, replace=replace, source=items_file, base=Path(items_file).parent
            )
            version = a.version
    except MMSIDError as e:
        _fail(e)
    if out is not None:
        with atomic_path(out) as tmp:
            res.to_parquet(tmp, index=False) if out.endswith(".parquet") else res.to_csv(
                tmp, index=False
            )
    res[["item", "sid"]].to_csv(sys.stdout, sep="\t", index=False)
    click.echo(f"{len(res)} items assigned in {run}/ids.sqlite (version {version})", err=True)


@ids.command("show")
@click.argument("run")
@click.argument("items", nargs=-1, required=True)
def ids_show(run: str, items: tuple[str, ...]) -> None:
    """The SID of each ITEM (codes then collision index); exit 1 if one has none."""
    from mmsid.assign import STORE, tokenizer_version
    from mmsid.store import IDStore

    missing = 0
    try:
        version = tokenizer_version(run)
        with IDStore(Path(run) / STORE) as s:
            for it in items:
                sid = s.sid(version, it)
                missing += sid is None
                click.echo(f"{it}\t{'-'.join(map(str, sid)) if sid else '(none)'}")
    except (MMSIDError, OSError) as e:
        _fail(e)
    sys.exit(1 if missing else 0)


@ids.command("find")
@click.argument("run")
@click.argument("prefix")
def ids_find(run: str, prefix: str) -> None:
    """Items whose SID starts with PREFIX ("12-4": codes, then optionally the collision)."""
    from mmsid.assign import STORE, tokenizer_version
    from mmsid.store import IDStore, parse_prefix

    try:
        codes = parse_prefix(prefix)
        version = tokenizer_version(run)
        with IDStore(Path(run) / STORE) as s:
            for it in s.items(version, codes):
                click.echo(it)
    except (MMSIDError, OSError) as e:
        _fail(e)


@main.command("serve")
@click.argument("run")
@click.option("--retriever", default=None, help="A `mmsid retrieve --model parallel-sid` folder.")
@click.option("--ranker", default=None, help="A `mmsid rank --model din-sid` folder.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option(
    "--token-env",
    default="MMSID_TOKEN",
    show_default=True,
    help="Environment variable holding the bearer token required for writes (unset: none).",
)
@click.option("--max-body", default=1 << 20, show_default=True, help="Request size limit, bytes.")
@click.option("--device", default="cpu", show_default=True)
@click.option(
    "--fusion",
    default="auto",
    show_default=True,
    help="Content fusion of the retriever's scores: auto (the weights its run chose on "
    "validation), off, or W,B.",
)
def serve_cmd(
    run: str,
    retriever: str | None,
    ranker: str | None,
    host: str,
    port: int,
    token_env: str,
    max_body: int,
    device: str,
    fusion: str,
) -> None:
    """HTTP service over RUN's ID store: item -> SID, SID prefix -> items, add items, and
    recommend with a trained parallel-SID retriever (plus the content fusion its run chose),
    rank with a din-sid ranker (new items included in both). OpenAPI at /docs."""
    import os

    import uvicorn

    from mmsid.serve import Service, create_app

    try:
        svc = Service(run, retriever=retriever, ranker=ranker, device=device, fusion=fusion)
    except MMSIDError as e:
        _fail(e)
    token = os.environ.get(token_env) or None
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: serving on {host} with no write token (${token_env})", err=True)
    uvicorn.run(create_app(svc, token=token, max_body=max_body), host=host, port=port)
