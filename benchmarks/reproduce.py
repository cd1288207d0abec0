"""Every file under benchmarks/results/ and the committed command that regenerates it.

    python benchmarks/reproduce.py --list     # each results file, its command, commit, seeds
    python benchmarks/reproduce.py --audit    # every file registered, stamped, by its command
    python benchmarks/reproduce.py --check    # re-run the cheap ones in a temp folder, compare

A results file that no entry below regenerates is an error of ``--audit`` (a figure no
committed code produces is deleted, not kept). ``--check`` runs each cheap command with
``MMSID_RESULTS_DIR`` pointing at a temporary folder and compares every number of the fresh
JSON with the committed one (relative tolerance ``--rtol``; timings are not compared).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# results stem -> (command, cheap enough for --check on 2 cores, keys whose numbers are
# timings or machine facts and are not compared)
ENTRIES: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "semantic_drift": ("python benchmarks/bench_drift.py", False, ("seconds",)),
    "tokenizers": ("python benchmarks/bench_tokenizers.py", False, ("meta", "encode", "train")),
    "smoke": (
        "OMP_NUM_THREADS=1 python benchmarks/bench_pipeline.py "
        "--config benchmarks/configs/smoke.yaml --datasets lfm2k-mm --device cpu",
        True,
        ("seconds", "commit", "command", "key", "status", "stages"),
    ),
    "scoring": (
        "python benchmarks/bench_scoring.py --threads 2",
        False,
        ("rows", "cpu", "commit", "command"),
    ),
    "rankers": (
        "python benchmarks/bench_rankers.py",
        False,
        ("rows", "cpu", "commit", "command"),
    ),
    "stability": (
        "python benchmarks/bench_stability.py",
        False,
        ("commit", "command"),
    ),
    "alignment_cost": (
        "python benchmarks/bench_stability.py --retrieval",
        False,
        ("commit", "command"),
    ),
    "serve": (
        "python benchmarks/bench_serve.py",
        False,
        ("scenarios", "machine", "commit", "command"),
    ),
    "schema": ("python benchmarks/bench_schema.py", False, ("operations", "commit", "command")),
    "distributed": (
        "python benchmarks/bench_distributed.py",
        False,
        ("wall_seconds", "machine", "torch", "commit", "command"),
    ),
    "scale": ("python benchmarks/bench_scale.py", False, ("machine", "commit", "command")),
    "mmq_health": ("python benchmarks/bench_mmq_health.py", False, ("commit", "command")),
    "parallel_loss": (
        "python benchmarks/bench_parallel_loss.py --datasets ml100k-mm amazon-beauty --seeds 0 1 2",
        False,
        ("commit", "command"),
    ),
    "parallel_ids": (
        "python benchmarks/bench_parallel_ids.py --datasets amazon-beauty "
        "--ids rq-kmeans:3 opq:8 --seeds 0 1 2",
        False,
        ("commit", "command"),
    ),
    "parallel_ids_mmq_beauty": (
        "python benchmarks/bench_parallel_ids.py --datasets amazon-beauty --ids "
        "rq-vae:6/title+categories rq-kmeans:6/title+categories psrq:6/title+categories "
        "opq:6/title+categories mmq-ft:1/title+categories mmq:1/title+categories "
        "mmq-ctl:1/title+categories --seeds 0 1 2 --pair mmq-ft:1/title+categories "
        "mmq-ctl:1/title+categories --pair mmq-ft:1/title+categories mmq:1/title+categories "
        "--pair mmq-ft:1/title+categories rq-kmeans:6/title+categories "
        "--pair mmq-ft:1/title+categories psrq:6/title+categories "
        "--pair mmq-ft:1/title+categories opq:6/title+categories "
        "--results parallel_ids_mmq_beauty",
        False,
        ("commit", "command"),
    ),
    "parallel_ids_mmq12_beauty": (
        "python benchmarks/bench_parallel_ids.py --datasets amazon-beauty --ids "
        "rq-vae:12@0.14/title+categories mmq-ft:2@0.14/title+categories --seeds 0 1 2 "
        "--results parallel_ids_mmq12_beauty",
        False,
        ("commit", "command"),
    ),
    "ranking_ids_beauty": (
        "python benchmarks/bench_ranking_ids.py --datasets amazon-beauty --ids "
        "rq-vae:6/title+categories mmq-ft:1/title+categories mmq:1/title+categories "
        "mmq-ctl:1/title+categories --seeds 0 1 2 --pair mmq-ft:1/title+categories "
        "mmq-ctl:1/title+categories --pair mmq-ft:1/title+categories mmq:1/title+categories "
        "--results ranking_ids_beauty",
        False,
        ("commit", "command"),
    ),
    "ranking_idlen_beauty": (
        "python benchmarks/bench_ranking_ids.py --datasets amazon-beauty --ids "
        "rq-vae:12/title+categories mmq-ft:2/title+categories mmq:2/title+categories "
        "mmq-ctl:2/title+categories --seeds 0 1 2 --pair mmq-ft:2/title+categories "
        "mmq-ctl:2/title+categories --pair mmq-ft:2/title+categories mmq:2/title+categories "
        "--results ranking_idlen_beauty",
        False,
        ("commit", "command"),
    ),
    "ranking_ablations_beauty": (
        "python benchmarks/bench_ranking_ids.py --datasets amazon-beauty --ids "
        "rq-vae:6/title+categories mmq-ft:1/title+categories "
        "mmq-ft-specific-only:1/title+categories mmq-ft-shared-only:1/title+categories "
        "rq-vae:6/title --seeds 0 1 2 --pair mmq-ft:1/title+categories "
        "mmq-ft-specific-only:1/title+categories --pair mmq-ft:1/title+categories "
        "mmq-ft-shared-only:1/title+categories --results ranking_ablations_beauty",
        False,
        ("commit", "command"),
    ),
    "ranking_noorth_beauty": (
        "python benchmarks/bench_ranking_ids.py --datasets amazon-beauty --ids "
        "mmq-ft:1/title+categories mmq-ft-no-orth:1/title+categories --seeds 0 1 2 --pair "
        "mmq-ft:1/title+categories mmq-ft-no-orth:1/title+categories "
        "--results ranking_noorth_beauty",
        False,
        ("commit", "command"),
    ),
    "ranking_noorth12_beauty": (
        "python benchmarks/bench_ranking_ids.py --datasets amazon-beauty --ids "
        "mmq-ft:2/title+categories mmq-ft-no-orth:2/title+categories --seeds 0 1 2 --pair "
        "mmq-ft:2/title+categories mmq-ft-no-orth:2/title+categories "
        "--results ranking_noorth12_beauty",
        False,
        ("commit", "command"),
    ),
    "ranking_ablations12_beauty": (
        "python benchmarks/bench_ranking_ids.py --datasets amazon-beauty --ids "
        "mmq-ft:2/title+categories mmq-ft-shared-only:2/title+categories "
        "mmq-ft-specific-only:2/title+categories --seeds 0 1 2 --pair mmq-ft:2/title+categories "
        "mmq-ft-shared-only:2/title+categories --pair mmq-ft:2/title+categories "
        "mmq-ft-specific-only:2/title+categories --results ranking_ablations12_beauty",
        False,
        ("commit", "command"),
    ),
    "ranking_coarse_beauty": (
        "python benchmarks/bench_ranking_ids.py --datasets amazon-beauty --ids "
        "rq-vae:6/title+categories mmq-ft:1/title+categories rq-vae:3/title+categories "
        "rq-vae:2/title+categories --seeds 0 1 2 --pair mmq-ft:1/title+categories "
        "rq-vae:3/title+categories --pair mmq-ft:1/title+categories rq-vae:2/title+categories "
        "--results ranking_coarse_beauty",
        False,
        ("commit", "command"),
    ),
    "ranking_equal6_beauty": (
        "python benchmarks/bench_ranking_ids.py --datasets amazon-beauty --ids "
        "rq-vae:6/title+categories mmq-ft:1/title+categories rq-kmeans:6/title+categories "
        "psrq:6/title+categories opq:6/title+categories --seeds 0 1 2 "
        "--pair mmq-ft:1/title+categories rq-kmeans:6/title+categories "
        "--pair mmq-ft:1/title+categories psrq:6/title+categories "
        "--pair mmq-ft:1/title+categories opq:6/title+categories --results ranking_equal6_beauty",
        False,
        ("commit", "command"),
    ),
    "sid_ties_beauty": (
        "python benchmarks/bench_sid_ties.py --datasets amazon-beauty --ids "
        "rq-vae:6/title+categories rq-kmeans:6/title+categories psrq:6/title+categories "
        "opq:6/title+categories mmq-ft:1/title+categories rq-vae:12@0.14/title+categories "
        "mmq-ft:2@0.14/title+categories --seeds 0 1 2 "
        "--pair mmq-ft:1/title+categories rq-vae:6/title+categories "
        "--pair mmq-ft:1/title+categories rq-kmeans:6/title+categories "
        "--pair mmq-ft:1/title+categories psrq:6/title+categories "
        "--pair mmq-ft:1/title+categories opq:6/title+categories "
        "--pair mmq-ft:2@0.14/title+categories rq-vae:12@0.14/title+categories "
        "--results sid_ties_beauty",
        False,
        ("commit", "command"),
    ),
    "parallel_ids_layout_beauty": (
        "python benchmarks/bench_parallel_ids.py --datasets amazon-beauty --ids "
        "rq-vae:6/title+categories rq-kmeans:6/title+categories psrq:6/title+categories "
        "opq:6/title+categories mmq-ft:1/title+categories mmq-ft-one-expert:2/title+categories "
        "--seeds 0 1 2 --pair mmq-ft-one-expert:2/title+categories mmq-ft:1/title+categories "
        "--pair mmq-ft-one-expert:2/title+categories rq-kmeans:6/title+categories "
        "--pair mmq-ft-one-expert:2/title+categories psrq:6/title+categories "
        "--pair mmq-ft-one-expert:2/title+categories opq:6/title+categories "
        "--results parallel_ids_layout_beauty",
        False,
        ("commit", "command"),
    ),
    "ranking_layout_beauty": (
        "python benchmarks/bench_ranking_ids.py --datasets amazon-beauty --ids "
        "rq-vae:6/title+categories mmq-ft:1/title+categories "
        "mmq-ft-one-expert:2/title+categories opq:6/title+categories --seeds 0 1 2 "
        "--pair mmq-ft-one-expert:2/title+categories mmq-ft:1/title+categories "
        "--pair mmq-ft-one-expert:2/title+categories opq:6/title+categories "
        "--results ranking_layout_beauty",
        False,
        ("commit", "command"),
    ),
    "sid_ties_layout_beauty": (
        "python benchmarks/bench_sid_ties.py --datasets amazon-beauty --ids "
        "rq-vae:6/title+categories mmq-ft:1/title+categories "
        "mmq-ft-one-expert:2/title+categories --seeds 0 1 2 "
        "--pair mmq-ft-one-expert:2/title+categories mmq-ft:1/title+categories "
        "--results sid_ties_layout_beauty",
        False,
        ("commit", "command"),
    ),
    "graph_decode": (
        "python benchmarks/bench_graph_decode.py --ids mmq-ft:1/title+categories "
        "mmq-ft-no-sharpness:1/title+categories --seeds 0 1 2",
        False,
        ("commit", "command", "cpu", "users_per_s", "encoder_users_per_s"),
    ),
    "parallel_ids_sharpness_beauty": (
        "python benchmarks/bench_parallel_ids.py --datasets amazon-beauty --ids "
        "mmq-ft:1/title+categories mmq-ft:1,sharpness=0.03/title+categories "
        "mmq-ft:1,sharpness=0.01/title+categories mmq-ft-no-sharpness:1/title+categories "
        "--seeds 0 1 2 --pair mmq-ft:1,sharpness=0.01/title+categories "
        "mmq-ft-no-sharpness:1/title+categories --pair "
        "mmq-ft:1,sharpness=0.03/title+categories mmq-ft-no-sharpness:1/title+categories "
        "--pair mmq-ft:1,sharpness=0.01/title+categories "
        "mmq-ft:1,sharpness=0.03/title+categories --results parallel_ids_sharpness_beauty",
        False,
        ("commit", "command"),
    ),
    "ranking_sharpness_beauty": (
        "python benchmarks/bench_ranking_ids.py --datasets amazon-beauty "
        "--ids mmq-ft:1/title+categories mmq-ft:1,sharpness=0.01/title+categories "
        "mmq-ft-no-sharpness:1/title+categories --seeds 0 1 2 "
        "--pair mmq-ft:1,sharpness=0.01/title+categories mmq-ft-no-sharpness:1/title+categories "
        "--results ranking_sharpness_beauty",
        False,
        ("commit", "command"),
    ),
    "sid_ties_sharpness_beauty": (
        "python benchmarks/bench_sid_ties.py --datasets amazon-beauty --ids "
        "mmq-ft:1/title+categories mmq-ft:1,sharpness=0.03/title+categories "
        "mmq-ft:1,sharpness=0.01/title+categories mmq-ft-no-sharpness:1/title+categories "
        "--seeds 0 1 2 --pair mmq-ft-no-sharpness:1/title+categories "
        "mmq-ft:1/title+categories --pair mmq-ft:1,sharpness=0.01/title+categories "
        "mmq-ft-no-sharpness:1/title+categories --results sid_ties_sharpness_beauty",
        False,
        ("commit", "command"),
    ),
    "mmq_routing_sharpness_beauty": (
        "python benchmarks/bench_mmq_routing.py --fit amazon-beauty "
        "mmq-ft:1/title+categories --fit amazon-beauty "
        "mmq-ft:1,sharpness=0.03/title+categories --fit amazon-beauty "
        "mmq-ft:1,sharpness=0.01/title+categories --fit amazon-beauty "
        "mmq-ft-no-sharpness:1/title+categories --results mmq_routing_sharpness_beauty",
        False,
        ("commit", "command"),
    ),
    "mmq_routing_sharpness_small": (
        "python benchmarks/bench_mmq_routing.py --fit ml100k-mm mmq-ft:1 --fit ml100k-mm "
        "mmq-ft:1,sharpness=0.01 --fit ml100k-mm mmq-ft-no-sharpness:1 --fit lfm2k-mm mmq-ft:1 "
        "--fit lfm2k-mm mmq-ft:1,sharpness=0.01 --fit lfm2k-mm mmq-ft-no-sharpness:1 "
        "--results mmq_routing_sharpness_small",
        False,
        ("commit", "command"),
    ),
    "mmq_routing": (
        "python benchmarks/bench_mmq_routing.py --fit amazon-beauty mmq-ft:1/title+categories "
        "--fit amazon-beauty mmq-ft:2/title+categories --fit ml100k-mm mmq-ft:2",
        False,
        ("commit", "command"),
    ),
    "parallel_ids_small": (
        "python benchmarks/bench_parallel_ids.py --datasets ml100k-mm lfm2k-mm "
        "--ids rq-kmeans:3 opq:8 --seeds 0 1 2 --results parallel_ids_small",
        False,
        ("commit", "command"),
    ),
    "retrievers": (
        "python benchmarks/bench_retrievers.py --datasets amazon-beauty ml100k-mm lfm2k-mm "
        "--ids opq:8 --seeds 0 1 2",
        False,
        ("commit", "command"),
    ),
    "retrievers_idlen": (
        "python benchmarks/bench_retrievers.py --datasets amazon-beauty lfm2k-mm "
        "--ids opq:8 opq:16@0.14 --seeds 0 1 2 --results retrievers_idlen",
        False,
        ("commit", "command"),
    ),
    "retrievers_ids": (
        "python benchmarks/bench_retrievers.py --datasets ml100k-mm lfm2k-mm "
        "--ids opq:8 rq-kmeans:3 rq-vae:3 psrq:3 mmq-ft:1 --seeds 0 1 2 --results retrievers_ids",
        False,
        ("commit", "command"),
    ),
    "retrievers_newitems": (
        "python benchmarks/bench_retrievers.py --datasets amazon-beauty "
        "--ids opq:8 opq:16@0.14 --seeds 0 1 2 --new-item-tolerance 0.02 "
        "--results retrievers_newitems",
        False,
        ("commit", "command"),
    ),
    "mmq_ids_lfm2k": (
        "python benchmarks/bench_retrievers.py --datasets lfm2k-mm --ids rq-vae:8 mmq-ft:1 "
        "mmq-ctl:1 mmq:1 rq-kmeans:8 psrq:8 opq:8 --seeds 0 1 2 --pair mmq-ft:1 rq-vae:8 "
        "--pair mmq-ft:1 mmq-ctl:1 --pair mmq-ft:1 mmq:1 --pair mmq-ft:1 opq:8 "
        "--results mmq_ids_lfm2k",
        False,
        ("commit", "command"),
    ),
    "mmq_ids_ml100k": (
        "python benchmarks/bench_retrievers.py --datasets ml100k-mm --ids rq-vae:6 mmq-ft:1 "
        "mmq-ctl:1 mmq:1 rq-kmeans:6 psrq:6 opq:6 mmq-ft-one-expert:1 mmq-ft-one-expert:2 "
        "mmq-ft-no-orth:1 mmq-ft-specific-only:1 mmq-ft-shared-only:1 "
        "--seeds 0 1 2 --pair mmq-ft:1 rq-vae:6 --pair mmq-ft:1 mmq-ctl:1 --pair mmq-ft:1 mmq:1 "
        "--pair mmq-ft:1 mmq-ft-one-expert:1 --pair mmq-ft:1 mmq-ft-one-expert:2 "
        "--pair mmq-ft:1 rq-kmeans:6 --pair mmq-ft:1 mmq-ft-no-orth:1 "
        "--pair mmq-ft:1 mmq-ft-specific-only:1 --pair mmq-ft:1 mmq-ft-shared-only:1 "
        "--results mmq_ids_ml100k",
        False,
        ("commit", "command"),
    ),
    "ranking_ids_ml100k": (
        "python benchmarks/bench_ranking_ids.py --datasets ml100k-mm --ids rq-vae:6 mmq-ft:1 "
        "mmq-ctl:1 mmq:1 rq-kmeans:6 psrq:6 opq:6 mmq-ft-no-orth:1 mmq-ft-specific-only:1 "
        "--seeds 0 1 2 --pair mmq-ft:1 mmq-ctl:1 --pair mmq-ft:1 mmq:1 --pair mmq-ft:1 rq-kmeans:6 "
        "--results ranking_ids_ml100k",
        False,
        ("commit", "command"),
    ),
    "ranking_ids_lfm2k": (
        "python benchmarks/bench_ranking_ids.py --datasets lfm2k-mm --ids rq-vae:8 mmq-ft:1 "
        "mmq-ctl:1 mmq:1 rq-kmeans:8 psrq:8 opq:8 mmq-ft-no-orth:1 mmq-ft-shared-only:1 "
        "mmq-ft-specific-only:1 mmq-ft-one-expert:1 mmq-ft-one-expert:2 --seeds 0 1 2 --pair "
        "mmq-ft:1 mmq-ctl:1 --pair mmq-ft:1 mmq:1 --pair mmq-ft:1 rq-kmeans:8 --pair mmq-ft:1 "
        "psrq:8 --pair mmq-ft:1 opq:8 --pair mmq-ft:1 mmq-ft-no-orth:1 --pair mmq-ft:1 "
        "mmq-ft-shared-only:1 --pair mmq-ft:1 mmq-ft-specific-only:1 --pair mmq-ft:1 "
        "mmq-ft-one-expert:1 --pair mmq-ft:1 mmq-ft-one-expert:2 --results ranking_ids_lfm2k",
        False,
        ("commit", "command"),
    ),
    "ranking_idlen_lfm2k": (
        "python benchmarks/bench_ranking_ids.py --datasets lfm2k-mm --ids rq-vae:16 mmq-ft:2 "
        "mmq-ctl:2 mmq:2 rq-kmeans:16 opq:16 psrq:16 mmq-ft:1 rq-vae:8 --seeds 0 1 2 --pair "
        "mmq-ft:2 mmq-ctl:2 --pair mmq-ft:2 mmq:2 --pair mmq-ft:2 rq-kmeans:16 --pair mmq-ft:2 "
        "opq:16 --pair mmq-ft:2 psrq:16 --pair mmq-ft:2 mmq-ft:1 --pair rq-vae:16 rq-vae:8 "
        "--results ranking_idlen_lfm2k",
        False,
        ("commit", "command"),
    ),
    "retrievers_refit_lfm2k": (
        "python benchmarks/bench_retrievers.py --datasets lfm2k-mm --ids mmq-ft:1 mmq-ctl:1 "
        "rq-vae:8 --seeds 0 1 2 --pair mmq-ft:1 mmq-ctl:1 --pair mmq-ft:1 rq-vae:8 "
        "--refit-tokenizers "
        "--results retrievers_refit_lfm2k",
        False,
        ("commit", "command"),
    ),
    "retrievers_ablations_lfm2k": (
        "python benchmarks/bench_retrievers.py --datasets lfm2k-mm --ids mmq-ft:1 "
        "mmq-ft-no-orth:1 mmq-ft-shared-only:1 mmq-ft-specific-only:1 mmq-ft-one-expert:1 "
        "mmq-ft-one-expert:2 --seeds 0 1 2 --pair mmq-ft:1 mmq-ft-no-orth:1 --pair mmq-ft:1 "
        "mmq-ft-shared-only:1 --pair mmq-ft:1 mmq-ft-specific-only:1 --pair mmq-ft:1 "
        "mmq-ft-one-expert:1 --pair mmq-ft:1 mmq-ft-one-expert:2 "
        "--results retrievers_ablations_lfm2k",
        False,
        ("commit", "command"),
    ),
    "retrievers_idlen_lfm2k": (
        "python benchmarks/bench_retrievers.py --datasets lfm2k-mm --ids mmq-ft:2@0.14 "
        "rq-vae:16@0.14 mmq-ctl:2@0.14 mmq:2@0.14 rq-kmeans:16@0.14 psrq:16@0.14 opq:16@0.14 "
        "mmq-ft:1 --seeds 0 1 2 --pair mmq-ft:2@0.14 rq-vae:16@0.14 --pair mmq-ft:2@0.14 "
        "mmq-ctl:2@0.14 --pair mmq-ft:2@0.14 mmq:2@0.14 --pair mmq-ft:2@0.14 rq-kmeans:16@0.14 "
        "--pair mmq-ft:2@0.14 psrq:16@0.14 --pair mmq-ft:2@0.14 opq:16@0.14 --pair "
        "mmq-ft:2@0.14 mmq-ft:1 --results retrievers_idlen_lfm2k",
        False,
        ("commit", "command"),
    ),
    "sasrec_grid": (
        "python benchmarks/bench_sasrec_grid.py --datasets ml100k-mm lfm2k-mm --grid-seeds 0 "
        "--seeds 0 1 2",
        False,
        ("commit", "command", "seconds_per_epoch"),
    ),
    "retrievers_idlen_ml100k": (
        "python benchmarks/bench_retrievers.py --datasets ml100k-mm --ids mmq-ft:2@0.14 "
        "rq-vae:12@0.14 mmq-ctl:2@0.14 mmq:2@0.14 opq:12@0.14 psrq:12@0.14 rq-kmeans:12@0.14 "
        "--seeds 0 1 2 --pair mmq-ft:2@0.14 rq-vae:12@0.14 --pair mmq-ft:2@0.14 mmq-ctl:2@0.14 "
        "--pair mmq-ft:2@0.14 mmq:2@0.14 --pair mmq-ft:2@0.14 opq:12@0.14 --pair mmq-ft:2@0.14 "
        "psrq:12@0.14 --pair mmq-ft:2@0.14 rq-kmeans:12@0.14 --sasrec d_model=128 "
        "--results retrievers_idlen_ml100k",
        False,
        ("commit", "command"),
    ),
    "retrievers_ablations16_lfm2k": (
        "python benchmarks/bench_retrievers.py --datasets lfm2k-mm --ids mmq-ft:2@0.14 "
        "mmq-ft-no-orth:2@0.14 mmq-ft-shared-only:2@0.14 mmq-ft-specific-only:2@0.14 "
        "mmq-ft-one-expert:4@0.14 --seeds 0 1 2 --pair mmq-ft:2@0.14 mmq-ft-no-orth:2@0.14 "
        "--pair mmq-ft:2@0.14 mmq-ft-shared-only:2@0.14 --pair mmq-ft:2@0.14 "
        "mmq-ft-specific-only:2@0.14 --pair mmq-ft:2@0.14 mmq-ft-one-expert:4@0.14 "
        "--results retrievers_ablations16_lfm2k",
        False,
        ("commit", "command"),
    ),
    "ranking_ablations_ml100k": (
        "python benchmarks/bench_ranking_ids.py --datasets ml100k-mm --ids mmq-ft:1 "
        "mmq-ft-no-orth:1 mmq-ft-shared-only:1 mmq-ft-specific-only:1 mmq-ft-one-expert:2 "
        "--seeds 0 1 2 --results ranking_ablations_ml100k",
        False,
        ("commit", "command"),
    ),
    "ranking_ablations12_ml100k": (
        "python benchmarks/bench_ranking_ids.py --datasets ml100k-mm --ids mmq-ft:2 "
        "mmq-ft-no-orth:2 mmq-ft-shared-only:2 mmq-ft-specific-only:2 mmq-ft-one-expert:4 "
        "--seeds 0 1 2 --results ranking_ablations12_ml100k",
        False,
        ("commit", "command"),
    ),
    "ranking_ablations16_lfm2k": (
        "python benchmarks/bench_ranking_ids.py --datasets lfm2k-mm --ids mmq-ft:2 "
        "mmq-ft-no-orth:2 mmq-ft-shared-only:2 mmq-ft-specific-only:2 mmq-ft-one-expert:4 "
        "--seeds 0 1 2 --results ranking_ablations16_lfm2k",
        False,
        ("commit", "command"),
    ),
    "ranking_idlen_ml100k": (
        "python benchmarks/bench_ranking_ids.py --datasets ml100k-mm --ids rq-vae:12 mmq-ft:2 "
        "mmq-ctl:2 mmq:2 rq-kmeans:12 opq:12 psrq:12 --seeds 0 1 2 --pair mmq-ft:2 mmq-ctl:2 "
        "--pair mmq-ft:2 mmq:2 --pair mmq-ft:2 rq-kmeans:12 --pair mmq-ft:2 opq:12 --pair "
        "mmq-ft:2 psrq:12 --results ranking_idlen_ml100k",
        False,
        ("commit", "command"),
    ),
    "ranking_refit_lfm2k": (
        "python benchmarks/bench_ranking_ids.py --datasets lfm2k-mm --ids rq-vae:8 mmq-ft:1 "
        "mmq-ctl:1 mmq:1 rq-kmeans:8 psrq:8 opq:8 --seeds 0 1 2 --pair mmq-ft:1 mmq-ctl:1 "
        "--pair mmq-ft:1 mmq:1 --pair mmq-ft:1 rq-kmeans:8 --pair mmq-ft:1 psrq:8 --pair "
        "mmq-ft:1 opq:8 --refit-tokenizers --results ranking_refit_lfm2k",
        False,
        ("commit", "command"),
    ),
    "tables": (
        "python benchmarks/bench_pipeline.py --config benchmarks/configs/tables.yaml "
        "--datasets ml100k-mm lfm2k-mm",
        False,
        ("seconds", "commit", "command", "key", "status", "stages"),
    ),
    # issue 17's main job; the data sets whose runs are complete (amazon-beauty joins the
    # command as its run finishes)
    "main": (
        "python benchmarks/bench_pipeline.py --config benchmarks/configs/main.yaml "
        "--datasets ml100k-mm lfm2k-mm",
        False,
        ("seconds", "commit", "command", "key", "status", "stages"),
    ),
    "earlystop": (
        "python benchmarks/bench_earlystop.py --config benchmarks/configs/main.yaml "
        "--datasets ml100k-mm lfm2k-mm --min-epochs 25",
        False,
        ("seconds", "commit"),
    ),
}
STAMP = ("command", "commit", "seeds")


def owner(path: Path) -> str | None:
    """The entry a results file belongs to: its stem or the stem before the first '_'."""
    stem = path.name.split(".")[0]
    for key in sorted(ENTRIES, key=len, reverse=True):
        if stem == key or stem.startswith(key + "_"):
            return key
    return None


def audit() -> list[str]:
    problems = []
    for f in sorted(RESULTS.iterdir()):
        if f.name.startswith(".") or f.suffix == ".log":
            continue
        key = owner(f)
        if key is None:
            problems.append(f"{f.name}: no committed command regenerates it (not in ENTRIES)")
            continue
        if f.suffix == ".json":
            d = json.loads(f.read_text())
            missing = [k for k in STAMP if k not in d or d[k] in (None, "")]
            if missing:
                problems.append(f"{f.name}: lacks {missing}")
            elif str(d["commit"]).endswith("+dirty"):
                problems.append(f"{f.name}: made from uncommitted code ({d['commit']})")
            elif f.stem == key and same_command(d["command"]) != same_command(ENTRIES[key][0]):
                problems.append(
                    f"{f.name}: made by `{d['command']}`, registered as `{ENTRIES[key][0]}`"
                )
        if f.suffix == ".md" and "Command:" not in f.read_text():
            problems.append(f"{f.name}: does not name its command")
    return problems


def same_command(cmd: str) -> list[str]:
    """A command's words without what does not change its results file: leading VAR=value
    settings (thread counts) and ``--report-only`` (the same report from the same runs)."""
    words = cmd.split()
    while words and "=" in words[0] and not words[0].startswith("-"):
        words = words[1:]
    return [w for w in words if w != "--report-only"]


def compare(a, b, rtol: float, skip: tuple[str, ...], where: str = "") -> list[str]:
    """Paths where two JSON values differ (numbers beyond rtol; NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k in skip or k.endswith("seconds"):  # timings are measured, not reproduced
                continue
            if k not in a or k not in b:
                out.append(f"{where}/{k}: present on one side only")
            else:
                out += compare(a[k], b[k], rtol, skip, f"{where}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} vs {len(b)}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b))
            for d in compare(x, y, rtol, skip, f"{where}[{i}]")
        ]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if math.isnan(a) and math.isnan(b) or math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12):
            return []
        return [f"{where}: {a} vs {b}"]
    return [] if a == b else [f"{where}: {a!r} vs {b!r}"]


def check(rtol: float, names: list[str]) -> int:
    failed = 0
    for key in names:
        command, cheap, skip = ENTRIES[key]
        if not cheap and key not in sys.argv:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "MMSID_RESULTS_DIR": tmp}
            cmd = command + f" --runs {tmp}/runs" if "bench_pipeline" in command else command
            print(f"[{key}] {cmd}", flush=True)
            subprocess.run(cmd, shell=True, check=True, cwd=HERE.parent, env=env)
            fresh = json.loads((Path(tmp) / f"{key}.json").read_text())
        kept = json.loads((RESULTS / f"{key}.json").read_text())
        diffs = compare(kept, fresh, rtol, skip)
        failed += bool(diffs)
        print(f"[{key}] " + ("matches" if not diffs else f"{len(diffs)} differences:"))
        for d in diffs[:20]:
            print("   ", d)
    return failed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--audit", action="store_true")
    ap.add_argument("--check", nargs="*", default=None, help="entries (default: the cheap ones)")
    ap.add_argument("--rtol", type=float, default=1e-6)
    a = ap.parse_args()
    if a.list:
        for f in sorted(RESULTS.glob("*.json")):
            d = json.loads(f.read_text())
            print(f"{f.name}: {d.get('command')} @ {d.get('commit')} seeds {d.get('seeds')}")
    if a.audit:
        problems = audit()
        print("\n".join(problems) or "every results file is registered and stamped")
        if problems:
            sys.exit(1)
    if a.check is not None:
        names = a.check or [k for k, (_, cheap, _) in ENTRIES.items() if cheap]
        sys.exit(1 if check(a.rtol, names) else 0)


if __name__ == "__main__":
    main()
