"""The grammar of the benches' ID specs, ``METHOD:LEVELS[,KEY=VALUE...][@TEMPERATURE][~DROPOUT]
[/VIEW+VIEW...]``: which tokenizer fit a spec names (method, length, MMQ's gate weights, input
modalities) and which retriever settings (temperature, dropout). Folder names follow from it
(bench_parallel_ids.tokenizer_dir and run_folder); a malformed spec is refused here, before
anything trains."""

from __future__ import annotations

from mmsid.tokenize_mmq import ABLATIONS

# MMQ's three ID tables from one fit with behavior fine-tuning (mmsid.tokenize_mmq): the IDs of
# stage 1 (before fine-tuning), after fine-tuning, and after the control's fine-tuning (behavior
# weight 0, same epochs), so the three rows differ only by what the issue asks to isolate.
MMQ_IDS = {
    "mmq": "sids_stage1.parquet",
    "mmq-ft": "sids.parquet",
    "mmq-ctl": "sids_control.parquet",
}

# MMQ + fine-tuning with one part taken away (mmsid.tokenize_mmq.ABLATIONS), each its own fit
# (stage 1, fine-tuning and control, as mmq-ft's); its rows read the fine-tuned IDs
MMQ_ABLATED = tuple(f"mmq-ft-{a}" for a in ABLATIONS if a != "none")


def _ids(spec: str) -> str:
    """``METHOD:LEVELS[,KEY=VALUE...]``: ``spec`` before its temperature, dropout and views."""
    return spec.partition("/")[0].partition("~")[0].partition("@")[0]


def parse_ids(spec: str) -> tuple[str, int, float | None]:
    """``METHOD:LEVELS[,KEY=VALUE...][@TEMPERATURE][~DROPOUT][/VIEW+VIEW...]`` -> (method,
    levels, temperature or None = MODEL's). LEVELS: residual levels (rq-kmeans, rq-vae, psrq),
    codes (opq, pq), or levels per expert (MMQ_IDS: stage 1, with behavior fine-tuning, its
    control; MMQ_ABLATED: fine-tuned MMQ without one part; bench_parallel_loss.tokenize).
    ``,KEY=VALUE``: a tokenizer setting (spec_settings). ``~DROPOUT``: the retriever's dropout
    (spec_dropout), else MODEL's. ``/VIEW+VIEW``: the tokenizer's input modalities
    (spec_views), else the data set's defaults."""
    spec_views(spec)
    spec_dropout(spec)
    temp = spec.partition("/")[0].partition("~")[0].partition("@")[2]
    method, _, levels = _ids(spec).partition(":")
    levels = levels.partition(",")[0]
    ok = method in ("rq-kmeans", "rq-vae", "psrq", "opq", "pq", *MMQ_IDS, *MMQ_ABLATED)
    ok = ok and levels.isdigit()
    try:
        t = float(temp) if temp else None
    except ValueError:
        ok = False
    if not ok or (t is not None and t <= 0):
        raise SystemExit(
            f"--ids {spec!r}: write METHOD:LEVELS[,KEY=VALUE][@TEMPERATURE][~DROPOUT]"
            "[/VIEW+VIEW], e.g. rq-kmeans:3, opq:16@0.14, opq:16@0.14~0.5, "
            "mmq-ft:1/title+categories or mmq-ft:1,sharpness=0.03/title+categories"
        )
    spec_settings(spec)
    return method, int(levels), t


# tokenizer settings an ID spec may set after LEVELS (``mmq-ft:1,sharpness=0.03``,
# ``opq:16,pca=128``), each a TokenizeConfig field, with the methods that take it and whether
# it is a whole number: MMQ's gate terms and (O)PQ's PCA, so they are tuned on validation like
# any other setting of a bench (each value is its own tokenizer fit and run folders)
SPEC_SETTINGS = {
    "sharpness": ("gate_sharpness", ("mmq",), False),
    "balance": ("gate_balance", ("mmq",), False),
    "pca": ("pca_dim", ("opq", "pq"), True),
}


def spec_settings(spec: str) -> dict[str, float]:
    """The tokenizer settings ``spec`` names after LEVELS (``mmq-ft:1,sharpness=0.03`` ->
    {"gate_sharpness": 0.03}; ``opq:16,pca=128`` -> {"pca_dim": 128}), {} for the defaults.
    A setting is refused for a method that does not take it, and an ablation that removes a
    term cannot also weight it."""
    ids = _ids(spec)
    method = ids.partition(":")[0]
    out: dict[str, float] = {}
    for pair in ids.split(",")[1:]:
        key, eq, value = pair.partition("=")
        field, methods, whole = SPEC_SETTINGS.get(key, (key, (), False))
        try:
            v = int(value) if whole else float(value)
        except ValueError:
            v = -1
        if key not in SPEC_SETTINGS or not eq or not v >= (1 if whole else 0) or field in out:
            raise SystemExit(
                f"--ids {spec!r}: after LEVELS write ,KEY=VALUE with KEY one of "
                f"{', '.join(SPEC_SETTINGS)} (once each) and VALUE >= 0 (pca: a whole number "
                ">= 1), e.g. mmq-ft:1,sharpness=0.03 or opq:16,pca=128"
            )
        if not method.startswith(methods):
            raise SystemExit(f"--ids {spec!r}: {key}= is a setting of {' and '.join(methods)}")
        out[field] = v
    if "gate_sharpness" in out and method == "mmq-ft-no-sharpness":
        raise SystemExit(f"--ids {spec!r}: no-sharpness drops the term sharpness= would weight")
    return out


def _named_settings(spec: str) -> list[tuple[str, float]]:
    """``spec``'s tokenizer settings as (spec key, value), in the order written."""
    short = {field: key for key, (field, _, _) in SPEC_SETTINGS.items()}
    return [(short[f], v) for f, v in spec_settings(spec).items()]


def settings_suffix(spec: str) -> str:
    """The folder-name suffix of ``spec``'s tokenizer settings ('' for the defaults)."""
    return "".join(f"-{k}{v:g}" for k, v in _named_settings(spec))


def folder_name(method: str, levels: int, spec: str) -> str:
    """``METHOD-LEVELS[-KEYVALUE...][-VIEW+VIEW]``: the folder name of ``spec``'s tokenizer
    settings and input for ``method`` at ``levels`` (a fit's, or a run's before the model's
    own suffixes)."""
    return f"{method}-{levels}{settings_suffix(spec)}{views_suffix(spec)}"


def spec_dropout(spec: str) -> float | None:
    """The parallel-SID dropout ``spec`` names after ``~`` (``opq:16@0.14~0.5``), or None for
    MODEL's. The tokenizer is the same as without it: only the retriever changes."""
    _, tilde, drop = spec.partition("/")[0].partition("~")
    if not tilde:
        return None
    try:
        d = float(drop)
    except ValueError:
        d = -1.0
    if not 0.0 <= d < 1.0:
        raise SystemExit(f"--ids {spec!r}: after '~' write the retriever's dropout in [0, 1)")
    return d


def spec_views(spec: str) -> list[str]:
    """The input modalities ``spec`` names after ``/`` (``mmq-ft:1/title+categories``: MMQ over
    amazon-beauty's two text views, whose shared and specific experts then read different
    inputs), or [] for the data set's defaults (mmsid.features.inputs.DEFAULT_MODALITIES)."""
    _, slash, views = spec.partition("/")
    names = views.split("+") if slash else []
    if slash and not all(n and n.replace("_", "").isalnum() for n in names):
        raise SystemExit(
            f"--ids {spec!r}: after '/' name the tokenizer's input modalities joined by '+', "
            "e.g. /title+categories"
        )
    return names


def views_suffix(spec: str) -> str:
    """The folder-name suffix of ``spec``'s input modalities ('' for the defaults)."""
    views = spec_views(spec)
    return "-" + "+".join(views) if views else ""


def fit_of(spec: str) -> tuple[str, int]:
    """(method, levels) of the tokenizer fit ``spec``'s IDs come from (MMQ's three share the
    mmq-ft fit)."""
    method, levels, _ = parse_ids(spec)
    return ("mmq-ft" if method in MMQ_IDS else method), levels


def fit_name(spec: str) -> str:
    """The tokenizer fit ``spec``'s IDs come from, as a spec: ``METHOD:LEVELS[,KEY=VALUE]
    [/VIEWS]`` with MMQ's three ID tables named by their shared mmq-ft fit, and each setting
    spelled as its folder is (``sharpness=0.030`` and ``=0.03`` are one fit)."""
    fit, levels = fit_of(spec)
    settings = "".join(f",{k}={v:g}" for k, v in _named_settings(spec))
    views = spec_views(spec)
    return f"{fit}:{levels}{settings}" + ("/" + "+".join(views) if views else "")
