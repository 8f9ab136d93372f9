"""Run folders made by the previous release keep working: resumed, reported and evaluated by this code.

The previous release's package is taken from the repository's history (``git archive``), so the test needs a
clone with history; a copy without it skips, saying so. ``RELEASE`` is the last commit that landed before the
run-layer refactors (stage table, generated options, frozen Runtime); move it forward when a release changes
what a run folder holds, and keep the old one in a second case while folders of it may still be around.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from dcwp_prune.run.cli import main

from ._data import TINY_TOML

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = "a580d05"
# long enough a stage 4 to be stopped inside it, checkpointed every 10 iterations
TOML = TINY_TOML.replace("[finetune]\niterations = 20\n", "[finetune]\niterations = 300\n").replace(
    "seed = 3\n", "seed = 3\ncheckpoint_every = 10\n"
)


@pytest.fixture(scope="module")
def old_package(tmp_path_factory):
    if shutil.which("git") is None:
        pytest.skip("needs git to read the previous release from the repository's history")
    has = subprocess.run(["git", "-C", ROOT, "cat-file", "-e", f"{RELEASE}^{{commit}}"], capture_output=True)
    if has.returncode != 0:
        pytest.skip(f"commit {RELEASE} is not in this copy (a shallow clone?): the previous release is not at hand")
    old = tmp_path_factory.mktemp("release")
    archive = subprocess.run(["git", "-C", ROOT, "archive", RELEASE, "dcwp_prune"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    return old


def _old_cli(old, tmp_path, out):
    """The previous release's CLI on ``out`` (its package first on the path, this checkout's never)."""
    env = dict(os.environ, PYTHONPATH=str(old), OMP_NUM_THREADS="1")
    args = ["mlp", "--data", "cmnist", "--config", str(tmp_path / "tiny.toml"), "--out", str(out), "--no-progress"]
    return [sys.executable, "-m", "dcwp_prune.run.cli", *args], env


def _results(run):
    data = json.loads((run / "results.json").read_text())
    return data["metrics"], data["sparsity"], data["mined"]


@pytest.mark.slow
def test_a_run_of_the_previous_release_resumes_to_the_same_result(old_package, tmp_path):
    """The previous release runs straight, and again stopped (SIGKILL) inside stage 4; this code resumes the
    stopped folder (stages 1-3 reused as they are) and reaches the straight run's numbers; it reports and
    evaluates both folders."""
    (tmp_path / "tiny.toml").write_text(TOML)
    cmd, env = _old_cli(old_package, tmp_path, tmp_path / "straight")
    done = subprocess.run(cmd, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (
        str(old_package)
        in subprocess.run(
            [sys.executable, "-c", "import dcwp_prune; print(dcwp_prune.__file__)"],
            env=env,
            cwd=str(tmp_path),
            capture_output=True,
            text=True,
        ).stdout
    )  # the old package ran, not this checkout

    cmd, env = _old_cli(old_package, tmp_path, tmp_path / "stopped")
    proc = subprocess.Popen(cmd, env=env, cwd=str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "stopped" / "checkpoints"
    deadline = time.time() + 1800  # guards a hang only; the event decides
    while time.time() < deadline and proc.poll() is None and not (ckpt / "stage3_mask.pt").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "stopped" / "results.json").exists(), "the old run finished before it could be stopped"
    before = {n: (ckpt / n).read_bytes() for n in ("stage1_biased.pt", "stage3_mask.pt")}

    runner = CliRunner()
    r = runner.invoke(
        main, ["mlp", "--data", "cmnist", "--out", str(tmp_path / "stopped"), "--resume", "--no-progress"]
    )
    assert r.exit_code == 0, r.output
    assert {n: (ckpt / n).read_bytes() for n in before} == before  # stages 1-3 reused, not re-run
    assert _results(tmp_path / "stopped") == _results(tmp_path / "straight")
    for run in ("straight", "stopped"):
        for command in ("report", "evaluate"):
            r = runner.invoke(main, [command, str(tmp_path / run)])
            assert r.exit_code == 0, (run, command, r.output)
