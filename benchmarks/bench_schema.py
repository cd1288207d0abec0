"""A longer schemathesis run against `mmsid serve`'s live schema (issue 18; the tests run a
CI-sized one): every operation, many generated requests, in process (ASGI), on the same real
run bench_serve.py serves (``runs/serve-bench/<dataset>/``, prepared if missing).

    python benchmarks/bench_schema.py [--dataset amazon-beauty] [--examples 500]

Checks: no 5xx, status codes, content types and response bodies as the schema says, invalid
requests refused. Left out, as in the tests: "every schema-valid request is accepted" (an item
with no content, or twice in one batch, is schema-valid and refused by rules a JSON schema
cannot state). Writes benchmarks/results/schema.{json,md}.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _checker(op, calls: dict, args, given, seed, settings, HealthCheck, excluded):
    """One hypothesis test over an operation's generated cases, counting status codes."""

    @seed(args.seed)
    @settings(
        max_examples=args.examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy())
    def check(case):
        r = case.call_and_validate(excluded_checks=[excluded])
        calls["n"] += 1
        calls["status"][r.status_code] = calls["status"].get(r.status_code, 0) + 1

    return check


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="amazon-beauty")
    ap.add_argument("--examples", type=int, default=500, help="Per operation.")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import schemathesis
    from bench_serve import RUNS, prepare
    from hypothesis import HealthCheck, given, seed, settings
    from schemathesis.checks import positive_data_acceptance

    from mmsid.io import write_json, write_text
    from mmsid.pipeline.runner import git_commit
    from mmsid.serve import Service, create_app

    commit = git_commit()
    if commit is None or commit.endswith("+dirty"):
        sys.exit(f"commit {commit}: run from a clean checkout so the figures can be regenerated")
    tok, ret = prepare(args.dataset)
    copy = RUNS / args.dataset / "schema-run"  # writes go to a copy of the run
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(tok, copy)
    svc = Service(copy, retriever=ret)
    app = create_app(svc, token=None, max_body=64 << 20)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ops: dict[str, dict] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        calls: dict = {"n": 0, "status": {}}
        check = _checker(
            op, calls, args, given, seed, settings, HealthCheck, positive_data_acceptance
        )

        t0 = time.perf_counter()
        try:
            check()
            verdict = "passed"
        except Exception as e:  # the first failure schemathesis found, as text
            verdict = "failed: " + str(e).strip().splitlines()[0][:300]
        ops[op.label] = {
            "verdict": verdict,
            "requests": calls["n"],
            "status": {str(k): v for k, v in sorted(calls["status"].items())},
            "seconds": time.perf_counter() - t0,
        }
        print(op.label, ops[op.label])
    out = {
        "command": "python benchmarks/" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "commit": commit,
        "seeds": [args.seed],
        "dataset": args.dataset,
        "schemathesis": schemathesis.__version__,
        "max_examples_per_operation": args.examples,
        "operations": ops,
    }
    write_json(HERE / "results" / "schema.json", out)
    lines = [
        "# Schema fuzzing of `mmsid serve`",
        "",
        f"schemathesis {schemathesis.__version__} against the live OpenAPI schema, in process, "
        f"on {args.dataset}; up to {args.examples} generated requests per operation.",
        "",
        f"Command: `{out['command']}` (commit {commit}, seed {args.seed}).",
        "",
        "| operation | verdict | requests | status codes |",
        "|---|---|---|---|",
    ]
    for label, o in ops.items():
        codes = ", ".join(f"{k}: {v}" for k, v in o["status"].items())
        lines.append(f"| `{label}` | {o['verdict']} | {o['requests']:,} | {codes} |")
    write_text(HERE / "results" / "schema.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
