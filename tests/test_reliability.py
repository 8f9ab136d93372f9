"""Nothing lost under collisions and faults: a second process, a kill -9 half-way through --overwrite,
a symlinked --out, torn and damaged files, signals while the report is written, read-only folders,
a full disk and a file-size limit (real ones where the platform allows it).

Each case asserts the exit status, the message's key words, no traceback for what is not a bug, and
that the files already there are unchanged (checksums) where nothing may change.
"""

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import zipfile

import pytest
from click.testing import CliRunner

from dcwp_prune.run.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def tree(path):
    from .test_user_errors import tree as _tree

    return _tree(path)


@pytest.fixture
def run_copy(finished_run, tmp_path):
    shutil.copytree(finished_run / "run", tmp_path / "run")
    shutil.copy(finished_run / "tiny.toml", tmp_path / "tiny.toml")
    return tmp_path


def aside_of(folder):
    return folder.parent / f".{folder.name}.dcwp-replaced"


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


# ------------------------------------------------------------------------------ one process per run folder
HOLD = (
    "import sys, time\nfrom dcwp_prune.run.lock import run_lock\nwith run_lock(sys.argv[1]):\n"
    "    print('held', flush=True)\n    time.sleep(120)\n"
)


def test_a_second_command_on_a_run_folder_in_use_is_refused_and_a_killed_holder_does_not_block(run_copy):
    out = run_copy / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, env=_env(), text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree(out)
        for args in (
            ["mlp", "--data", "cmnist", "--out", out, "--resume"],
            ["mlp", "--data", "cmnist", "--config", run_copy / "tiny.toml", "--out", out, "--overwrite"],
            ["report", out],
            ["evaluate", out],
        ):
            r = invoke(*args)
            assert r.exit_code == 2, (args, r.output)
            assert f"run folder '{out}' is in use by process {holder.pid}" in r.output and "Traceback" not in r.output
        assert tree(out) == before
    finally:
        holder.kill()  # kill -9: the OS drops its lock
        holder.wait()
    r = invoke("report", out)
    assert r.exit_code == 0, r.output


def test_two_real_runs_into_one_new_folder_one_is_refused(tmp_path, finished_run):
    """Two CLI processes started together: exactly one runs, the other exits 2 naming the holder."""
    cmd = [
        sys.executable,
        "-m",
        "dcwp_prune.run.cli",
        "mlp",
        "--data",
        "cmnist",
        "--config",
        str(finished_run / "tiny.toml"),
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=_env(), text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    refused = outs[[p.returncode for p in procs].index(2)]
    assert "is in use by process" in refused and "Traceback" not in refused
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["stage"] == "final" for r in records) == 1  # one run's records, not two interleaved


# ------------------------------------------------------------------------------ --overwrite killed half-way
def test_killed_overwrite_with_the_folder_gone_is_restored(run_copy):
    out = run_copy / "run"
    before = tree(out)
    os.replace(out, aside_of(out))  # what kill -9 right after the move leaves
    r = invoke("mlp", "--data", "cmnist", "--config", run_copy / "tiny.toml", "--out", out, "--no-progress")
    assert r.exit_code == 2 and "already exists" in r.output, r.output  # restored, then the usual refusal
    assert "is back in" in r.output
    assert tree(out) == before and not aside_of(out).exists()


def test_killed_overwrite_with_the_new_runs_leftovers_is_restored(run_copy):
    out = run_copy / "run"
    before = tree(out)
    os.replace(out, aside_of(out))
    (out / "checkpoints").mkdir(parents=True)  # the new run's folder before its first checkpoint
    shutil.copy(aside_of(out) / "config.json", out / "config.json")
    r = invoke("mlp", "--data", "cmnist", "--out", out, "--resume", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "is back in" in r.output
    assert not aside_of(out).exists()
    after = tree(out)
    assert {k: after[k] for k in before if k.startswith(("checkpoints", "mined", "scores"))} == {
        k: before[k] for k in before if k.startswith(("checkpoints", "mined", "scores"))
    }


def test_killed_overwrite_after_the_new_runs_checkpoint_finishes_the_deletion(run_copy, finished_run):
    out = run_copy / "run"
    shutil.copytree(finished_run / "run", aside_of(out))  # the replaced run, half deleted when the kill came
    os.unlink(aside_of(out) / "results.json")
    before = tree(out)
    r = invoke("report", out)  # commands that do not open the run folder leave the aside alone
    assert r.exit_code == 0 and aside_of(out).exists()
    r = invoke("mlp", "--data", "cmnist", "--config", run_copy / "tiny.toml", "--out", out, "--no-progress")
    assert r.exit_code == 2 and "already exists" in r.output, r.output
    assert "deletion" in r.output and not aside_of(out).exists()
    assert {k: v for k, v in tree(out).items() if not k.startswith("report")} == {
        k: v for k, v in before.items() if not k.startswith("report")
    }


def test_killed_overwrite_with_something_else_in_the_folder_gives_commands_right_for_that_state(run_copy):
    out = run_copy / "run"
    os.replace(out, aside_of(out))
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    before, before_aside = tree(out), tree(aside_of(out))
    r = invoke("mlp", "--data", "cmnist", "--config", run_copy / "tiny.toml", "--out", out, "--overwrite")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert f"mv {out} {out}.other" in r.output and f"mv {aside_of(out)} {out}" in r.output
    assert tree(out) == before and tree(aside_of(out)) == before_aside
    os.replace(out, f"{out}.other")  # the advice, followed, gives the run back
    os.replace(aside_of(out), out)
    assert invoke("report", out).exit_code == 0


# ------------------------------------------------------------------------------ symlinks, --force-config
def test_overwrite_through_a_symlinked_out_replaces_the_target_and_keeps_the_link(run_copy):
    target, link = run_copy / "run", run_copy / "latest"
    link.symlink_to(target, target_is_directory=True)
    r = invoke(
        "mlp",
        "--data",
        "cmnist",
        "--config",
        run_copy / "tiny.toml",
        "--seed",
        "4",
        "--out",
        link,
        "--overwrite",
        "--no-progress",
    )
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and os.path.realpath(link) == str(target)
    assert json.loads((target / "config.json").read_text())["seed"] == 4
    assert not [p for p in os.listdir(run_copy) if "dcwp-replaced" in p]
    assert invoke("report", link).exit_code == 0
    again = invoke("mlp", "--data", "cmnist", "--out", link, "--resume", "--no-progress")
    assert again.exit_code == 0, again.output


def test_force_config_cannot_change_what_a_finished_stage_was_made_with(run_copy):
    out = run_copy / "run"
    before = tree(out)
    for args in (
        ["cnn", "--data", "cmnist"],
        ["mlp", "--data", "cmnist", "--seed", "8"],
        ["mlp", "--data", "cmnist", "--mining", "oracle"],
    ):
        r = invoke(*args, "--out", out, "--resume", "--force-config", "--no-progress")
        assert r.exit_code == 2, r.output
        assert "cannot change what a finished stage was made with" in r.output and "Traceback" not in r.output
        assert tree(out) == before  # config.json untouched: the plain resume still works
    assert invoke("mlp", "--data", "cmnist", "--out", out, "--resume", "--no-progress").exit_code == 0


# ------------------------------------------------------------------------------ torn and damaged files
def test_a_torn_last_line_of_metrics_jsonl_is_dropped_with_a_note(run_copy):
    out = run_copy / "run"
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"stage": "finetune", "loss_ce": 0.1')  # a kill in the middle of a write
    r = invoke("report", out)
    assert r.exit_code == 0, r.output
    assert "cut short" in r.output
    r = invoke("mlp", "--data", "cmnist", "--out", out, "--resume", "--no-progress")
    assert r.exit_code == 0, r.output
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert all(isinstance(json.loads(line), dict) for line in lines)


def _flip_a_tensor_byte(path):
    with zipfile.ZipFile(path) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len = int.from_bytes(data[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28 : info.header_offset + 30], "little")
    at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    data[at] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_checkpoint_with_flipped_bytes_is_refused_by_name(run_copy):
    ckpt = run_copy / "run" / "checkpoints" / "stage4_finetune.pt"
    _flip_a_tensor_byte(ckpt)
    before = tree(run_copy / "run")
    r = invoke("mlp", "--data", "cmnist", "--out", run_copy / "run", "--resume", "--no-progress")
    assert r.exit_code == 2, r.output
    assert f"checkpoint '{ckpt}' is damaged" in r.output and "checksum" in r.output and "delete it" in r.output
    assert "Traceback" not in r.output and tree(run_copy / "run") == before
    ckpt.unlink()  # the advice: stage 4 runs again from stage 3's checkpoint
    assert invoke("mlp", "--data", "cmnist", "--out", run_copy / "run", "--resume", "--no-progress").exit_code == 0


def test_checkpoint_checksum_round_trip_and_old_checkpoints_still_load(tmp_path):
    import torch

    from dcwp_prune.run.checkpoint import CHECKSUM_KEY, load_checkpoint, save_checkpoint

    state = {
        "w": torch.arange(6.0).reshape(2, 3),
        "bf": torch.ones(3, dtype=torch.bfloat16),
        "it": 4,
        "nested": {"r": [1, 2.5, None, "x"], "flag": torch.tensor(True)},
    }
    save_checkpoint(tmp_path / "a.pt", state)
    back = load_checkpoint(tmp_path / "a.pt")
    assert CHECKSUM_KEY not in back and torch.equal(back["w"], state["w"]) and back["it"] == 4
    torch.save({"w": torch.zeros(2)}, tmp_path / "old.pt")  # an earlier release's checkpoint: no checksum
    assert torch.equal(load_checkpoint(tmp_path / "old.pt")["w"], torch.zeros(2))


# ------------------------------------------------------------------------------ signals, read-only folders
def test_sigterm_while_the_report_is_written_finishes_it(run_copy, monkeypatch):
    from dcwp_prune.run import report as report_mod

    out = run_copy / "run"
    for name in ("report.md", "report.json"):
        (out / name).unlink()
    real = report_mod.build_report

    def signalled(run_dir, *a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(run_dir, *a, **k)

    monkeypatch.setattr(report_mod, "build_report", signalled)
    r = invoke("report", out)
    assert r.exit_code == 143, r.output
    assert "terminated (SIGTERM) while the report was written" in r.output and (out / "report.md").exists()


def test_a_second_signal_while_the_report_is_written_names_the_command_that_rebuilds_it(run_copy, monkeypatch):
    from dcwp_prune.run import report as report_mod

    def twice(run_dir, *a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the second signal stops at once")

    monkeypatch.setattr(report_mod, "build_report", twice)
    r = invoke("report", run_copy / "run")
    assert r.exit_code == 143 and f"dcwp-prune report {run_copy / 'run'}" in r.output, r.output


@pytest.fixture
def read_only(monkeypatch):
    """Make every write into a folder fail as on a read-only folder: chmod where it binds, and as root
    (whom chmod does not stop) the refusal the OS would give."""
    import tempfile

    from dcwp_prune import _atomic

    def ro(folder):
        if os.geteuid() != 0:
            for dirpath, _, _ in os.walk(folder):
                os.chmod(dirpath, 0o555)
            return
        real = tempfile.mkstemp

        def refuse(*a, dir=None, **k):
            if dir is not None and os.path.abspath(dir).startswith(os.path.abspath(folder)):
                raise PermissionError(errno.EACCES, "Permission denied", dir)
            return real(*a, dir=dir, **k)

        monkeypatch.setattr(_atomic.tempfile, "mkstemp", refuse)

    yield ro


def test_evaluate_and_report_on_a_read_only_run_print_the_metrics(run_copy, read_only):
    out = run_copy / "run"
    read_only(out)
    before = tree(out)
    r = invoke("evaluate", out)
    assert r.exit_code == 0, r.output
    assert "test: accuracy" in r.output and "evaluation.json was not written" in r.output
    r = invoke("report", out)
    assert r.exit_code == 0, r.output
    assert "test (%)" in r.output and "the report was not written" in r.output
    assert tree(out) == before
    if os.geteuid() != 0:
        for dirpath, _, _ in os.walk(out):
            os.chmod(dirpath, 0o755)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, mask, mode):
    from dcwp_prune._atomic import write_json
    from dcwp_prune.run.checkpoint import save_checkpoint

    old = os.umask(mask)
    try:
        write_json(tmp_path / "a.json", {"a": 1})
        save_checkpoint(tmp_path / "c.pt", {"a": 1})
    finally:
        os.umask(old)
    for name in ("a.json", "c.pt"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode


def test_a_finished_run_folder_follows_the_umask(finished_run):
    modes = {
        stat.S_IMODE(os.stat(os.path.join(d, f)).st_mode)
        for d, _, files in os.walk(finished_run / "run")
        for f in files
    }
    mask = os.umask(0)
    os.umask(mask)
    assert modes == {0o666 & ~mask}


# ------------------------------------------------------------------------------ faults of the machine
def _limit_file_size(limit):
    def set_limit():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return set_limit


@pytest.mark.skipif(not hasattr(os, "fork"), reason="RLIMIT_FSIZE needs a POSIX child process")
def test_a_real_file_size_limit_at_the_first_checkpoint_is_named_and_leaves_nothing(tmp_path, finished_run):
    cmd = [
        sys.executable,
        "-m",
        "dcwp_prune.run.cli",
        "mlp",
        "--data",
        "cmnist",
        "--config",
        str(finished_run / "tiny.toml"),
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    p = subprocess.run(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=_env(),
        text=True,
        timeout=600,
        preexec_fn=_limit_file_size(200_000),
    )
    assert p.returncode == 1, p.stdout
    assert "file too large while writing" in p.stdout and "stage1_snapshots.pt" in p.stdout  # the first file of stage 1
    assert "Nothing was saved" in p.stdout and "Traceback" not in p.stdout and "enforce fail" not in p.stdout
    assert not (tmp_path / "run").exists()  # the run folder it created is gone, no half-written file
    assert [p for p in os.listdir(tmp_path) if not p.startswith(".run.dcwp-lock")] == []


def test_a_full_disk_after_a_checkpoint_names_the_file_and_the_resume_command(tmp_path, finished_run, monkeypatch):
    from dcwp_prune import _atomic
    from dcwp_prune.run import checkpoint

    real = checkpoint.write_bytes

    def full(path, data):
        if str(path).endswith("stage3_mask.pt"):
            with _atomic.atomic_path(path) as tmp, open(tmp, "wb") as f:
                f.write(data[:100])
                raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(checkpoint, "write_bytes", full)
    out = tmp_path / "run"
    r = invoke("mlp", "--data", "cmnist", "--config", finished_run / "tiny.toml", "--out", out, "--no-progress")
    assert r.exit_code == 1, r.output
    assert f"no space left on device while writing '{out / 'checkpoints' / 'stage3_mask.pt'}'" in r.output
    assert f"--out {out} --resume" in r.output and "Traceback" not in r.output
    assert sorted(os.listdir(out / "checkpoints")) == ["stage1_biased.pt", "stage1_snapshots.pt"]  # no temporary file
    monkeypatch.setattr(checkpoint, "write_bytes", real)
    assert invoke("mlp", "--data", "cmnist", "--out", out, "--resume", "--no-progress").exit_code == 0


def test_resume_with_overwrite_is_refused(run_copy):
    before = tree(run_copy / "run")
    r = invoke("mlp", "--data", "cmnist", "--out", run_copy / "run", "--resume", "--overwrite")
    assert r.exit_code == 2 and "pass one of them" in r.output and "Traceback" not in r.output
    assert tree(run_copy / "run") == before


def test_a_run_made_with_overwrite_resumes(run_copy):
    r = invoke(
        "mlp",
        "--data",
        "cmnist",
        "--config",
        run_copy / "tiny.toml",
        "--out",
        run_copy / "run",
        "--overwrite",
        "--no-progress",
    )
    assert r.exit_code == 0, r.output
    assert invoke("mlp", "--data", "cmnist", "--out", run_copy / "run", "--resume", "--no-progress").exit_code == 0


# ------------------------------------------------------------------------------ a bug is a bug
def test_an_internal_key_error_is_a_bug_with_its_traceback_not_a_user_error(run_copy, monkeypatch):
    from dcwp_prune.run import report as report_mod

    def broken(run_dir, *a, **k):
        return {}["metrics"]  # a bug deep in the code

    monkeypatch.setattr(report_mod, "build_report", broken)
    r = invoke("report", run_copy / "run")
    assert r.exit_code == 1, r.output
    assert "Traceback" in r.output and "KeyError: 'metrics'" in r.output and "unexpected error" in r.output


def test_a_key_error_raised_by_a_users_import_module_is_shown_as_such(tmp_path, monkeypatch):
    (tmp_path / "broken_models.py").write_text("registry = {}\nregistry['missing']\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    r = invoke("mlp", "--import", "broken_models", "--data", "cmnist", "--out", tmp_path / "run")
    assert r.exit_code == 1, r.output
    assert "Traceback" in r.output and "broken_models.py" in r.output and "KeyError" in r.output
    assert not (tmp_path / "run").exists()


def test_the_package_refusals_are_dcwp_errors_and_still_value_errors():
    from dcwp_prune import ConfigError, DCWPError, RunFolderError, build_config

    with pytest.raises(DCWPError):
        build_config("nope")
    assert issubclass(ConfigError, ValueError) and issubclass(RunFolderError, DCWPError)


# ------------------------------------------------------------------------------ options named, combinations refused
@pytest.mark.parametrize(
    "extra,message",
    [
        (
            ["--data-option", 'split_values={"train": 0'],
            "--data-option split_values: '{\"train\": 0' is not valid JSON",
        ),
        (["--pruning-ratio", "0.7"], "prune.pruning_ratio (--pruning-ratio) applies to structured pruning"),
        (["--global-ranking"], "prune.global_pruning (--global-ranking) applies to structured pruning"),
        (["--iterative-steps", "3"], "prune.iterative_steps (--iterative-steps) applies to structured pruning"),
        (
            ["--structured", "--amount", "0.5"],
            "prune.amount (--amount) sets unstructured pruning and this run is structured",
        ),
        (["--seed", str(2**70)], "seed must be a 64-bit integer"),
        (["--data-root", "FILE"], "data.root (--data-root) 'FILE' is a file; it takes a folder"),
        (["--model-file", "DIR"], "model_file (--model-file) 'DIR' is a folder"),
        (["--config", "DIR"], "--config 'DIR' is a folder"),
        (["--config", "LATIN1"], "is not UTF-8 text (byte 0xe9"),
        (["--config", "INCLUDE"], "include pattern(s) ['fc9.*'] match no scorable weight of the model"),
    ],
)
def test_bad_options_are_named_before_the_run_folder_is_touched(tmp_path, extra, message):
    (tmp_path / "f.txt").write_text("x")
    (tmp_path / "latin.toml").write_bytes("# caf\xe9\nseed = 1\n".encode("latin-1"))
    (tmp_path / "inc.toml").write_text('[mask]\ninclude = ["fc9.*"]\n')
    subst = {
        "FILE": tmp_path / "f.txt",
        "DIR": tmp_path,
        "LATIN1": tmp_path / "latin.toml",
        "INCLUDE": tmp_path / "inc.toml",
    }
    extra = [subst.get(a, a) for a in extra]
    message = message.replace("'FILE'", repr(str(tmp_path / "f.txt"))).replace("'DIR'", repr(str(tmp_path)))
    r = invoke("mlp", "--data", "cmnist", *extra, "--out", tmp_path / "run")
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "option,message",
    [
        ("num_classes=abc", "data option num_classes must be an integer >= 1, got 'abc'"),
        ("split_values=3", "data option split_values must be a table {split: value}"),
        ("csv=5", "data option csv must be a path (text), got 5"),
    ],
)
def test_wrong_typed_dataset_options_are_named(tmp_path, option, message):
    from ._data import make_csv_dataset

    make_csv_dataset(tmp_path, ["0"] * 8 + ["2"] * 4)
    r = invoke(
        "mlp",
        "--data",
        "csv",
        "--data-root",
        tmp_path,
        "--data-option",
        "path_col=file",
        "--data-option",
        "label_col=target",
        "--data-option",
        "bias_col=place",
        "--data-option",
        "split_col=fold",
        "--data-option",
        "image_dir=imgs",
        *([] if option.startswith("csv=") else ["--data-option", "csv=meta.csv"]),
        "--data-option",
        option,
        "--image-size",
        "28",
        "--out",
        tmp_path / "run",
    )
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output and not (tmp_path / "run").exists()


def test_prune_structured_with_an_unstructured_rule_is_refused(finished_run, tmp_path):
    run = finished_run / "run"
    from safetensors.torch import save_file

    from dcwp_prune.run.export import load_pruned_model

    save_file(load_pruned_model(str(run)).state_dict(), str(tmp_path / "m.safetensors"))
    r = invoke(
        "prune",
        "--model-file",
        tmp_path / "m.safetensors",
        "--arch",
        "mlp",
        "--scores",
        run / "scores.safetensors",
        "--structured",
        "--amount",
        "0.3",
        "--out",
        tmp_path / "p",
    )
    assert r.exit_code == 2 and "sets unstructured pruning and this run is structured" in r.output, r.output
    r = invoke(
        "prune", "--model-file", tmp_path / "m.safetensors", "--arch", "mlp", "--scores", run, "--out", tmp_path / "p"
    )
    assert r.exit_code == 2 and "is a folder; pass the .safetensors file" in r.output, r.output
    assert not (tmp_path / "p").exists()


def test_a_schedule_value_the_user_wrote_wins_over_quick_and_the_report_says_so(tmp_path):
    (tmp_path / "q.toml").write_text("[finetune]\niterations = 24\n[data]\nratio = 5.0\n")
    from dcwp_prune.run.presets import build_config, quick_schedule

    config = build_config(
        None, {"model": "mlp", "data": {"name": "cmnist"}, "quick": True, "finetune": {"iterations": 24}}
    )
    assert config.quick_fixed == ("finetune.iterations",)
    quick = quick_schedule(config, 4000)
    assert quick.finetune.iterations == 24 and quick.mask.iterations == 400  # the rest is --quick's


# ------------------------------------------------------------------------------ the Python API and the run folder
def test_report_and_evaluate_of_a_run_whose_model_is_not_registered_suggest_import(run_copy):
    out = run_copy / "run"
    for name in ("results.json", "model.json"):
        data = json.loads((out / name).read_text())
        if name == "results.json":
            data["config"]["model"] = "_gone_model"
        else:
            data["arch"] = "_gone_model"
        (out / name).write_text(json.dumps(data))
    for command in ("report", "evaluate"):
        r = invoke(command, out)
        assert r.exit_code == 2, r.output
        assert "'_gone_model', which is not registered" in r.output and "--import MODULE" in r.output


def test_run_dcwp_expands_home_and_writes_what_the_cli_writes(tmp_path, monkeypatch, finished_run):
    from dcwp_prune import build_config, run_dcwp

    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(finished_run / "run", tmp_path / "src")
    overrides = json.loads((finished_run / "run" / "config.json").read_text())
    overrides.update(out="~/api-run", stage1_from="~/src", resume=False, overwrite=False)
    result = run_dcwp(build_config(None, overrides))
    assert result.run_dir == str(tmp_path / "api-run")
    files = set(os.listdir(tmp_path / "api-run"))
    assert {
        "report.md",
        "report.json",
        "kept_per_layer.png",
        "group_accuracy.png",
        "training_curves.png",
        "f_d.safetensors",
        "model.safetensors",
        "results.json",
    } <= files


def test_the_dense_f_d_of_a_run_feeds_the_prune_command(finished_run, tmp_path):
    import torch
    from safetensors.torch import load_file

    run = finished_run / "run"
    r = invoke(
        "prune",
        "--model-file",
        run / "f_d.safetensors",
        "--arch",
        "mlp",
        "--scores",
        run / "scores.safetensors",
        "--out",
        tmp_path / "p",
    )
    assert r.exit_code == 0, r.output
    pruned, trained = load_file(str(tmp_path / "p" / "model.safetensors")), load_file(str(run / "model.safetensors"))
    for key in ("features.1.weight", "features.3.weight", "features.5.weight", "fc.weight"):
        assert torch.equal(pruned[key] == 0, trained[key] == 0), key  # the run's mask, re-applied to its dense f_D


def test_line_progress_prints_a_first_line_after_a_few_iterations():
    import io

    from dcwp_prune.training.progress import LineProgress

    stream = io.StringIO()
    bar = LineProgress("finetune", 1000, stream=stream)
    bar.update(2)
    assert stream.getvalue() == ""
    bar.update(1)
    assert stream.getvalue().startswith("finetune: 3/1000 (0%)") and "ETA" in stream.getvalue()
    bar.update(96)
    assert len(stream.getvalue().splitlines()) == 1
    bar.update(1)
    assert len(stream.getvalue().splitlines()) == 2  # then every 10 %


def test_a_constant_selection_metric_is_said(tmp_path):
    import torch

    from dcwp_prune import FinetuneConfig, finetune

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x, y = torch.randn(8, 3, 2, 2), torch.arange(8) % 3

    def batches():
        while True:
            yield x, y, y, [str(i) for i in range(8)]

    def evaluate_fn(m):
        return {"valid": {"worst_group": 0.0}, "test": {"worst_group": 0.0}}

    cfg = FinetuneConfig(iterations=4, eval_every=2, lambda_con=0.0)
    with pytest.warns(RuntimeWarning, match="'worst_group' on valid was 0 at every one of 2 evaluations"):
        finetune(
            model,
            batches(),
            lambda ids: torch.zeros(len(ids)),
            cfg,
            evaluate_fn=evaluate_fn,
            select_metric="worst_group",
        )


def test_a_registered_dataset_selects_on_the_mean_group_accuracy_by_default():
    from dcwp_prune.data.base import DatasetSpec

    assert DatasetSpec("x", factory=lambda **k: None).select_metric == "unbiased"
    with pytest.raises(ValueError, match="select_metric 'worst' is not a metric"):
        DatasetSpec("x", factory=lambda **k: None, select_metric="worst")


def test_the_report_shows_group_sizes_and_names_the_worst_group(run_copy):
    r = invoke("report", run_copy / "run")
    assert r.exit_code == 0, r.output
    text = (run_copy / "run" / "report.md").read_text()
    assert "100 (class, bias) groups of 5 images each; 50 aligned and 450 conflicting images" in text
    assert "| model | accuracy | aligned | conflicting | worst group |" in text  # unbiased = accuracy: dropped
    assert "equals `accuracy` on this split" in text
    assert "(class " in text and "/ bias " in text and ", n=5)" in text
    assert "- schedule: f_D 30 / f_B 20 / mask 20 / fine-tuning 20 iterations" in text
    assert "worst group" in r.output and "(class " in r.output


# ------------------------------------------------------------------------------ ten more odd inputs
@pytest.mark.parametrize(
    "args,message",
    [
        (["--out", ""], "--out is empty"),
        (
            ["--device", "cuda:x", "--out", "OUT"],
            "device must be auto, cpu, cuda or cuda:N (N a GPU index), got 'cuda:x'",
        ),
        (["--stage1-from", "OUT", "--out", "OUT"], "is this run's own folder"),
        (["--ratio", "nan", "--out", "OUT"], "data.ratio must be a number (or null), got nan"),
    ],
)
def test_more_odd_run_inputs_are_refused(tmp_path, args, message):
    args = [str(tmp_path / "run") if a == "OUT" else a for a in args]
    r = invoke("mlp", "--data", "cmnist", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output and not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", ["--num-classes", "--input-size"])
def test_prune_refuses_a_zero_size(finished_run, tmp_path, flag):
    run = finished_run / "run"
    r = invoke(
        "prune",
        "--model-file",
        run / "f_d.safetensors",
        "--arch",
        "mlp",
        "--scores",
        run / "scores.safetensors",
        flag,
        "0",
        "--out",
        tmp_path / "p",
    )
    assert r.exit_code == 2 and f"{flag} must be a positive integer, got 0" in r.output, r.output
    assert not (tmp_path / "p").exists()
