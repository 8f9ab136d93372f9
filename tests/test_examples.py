"""Smoke-run the example scripts as a user would (subprocess, CPU, small settings)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(*args, timeout=1800):  # a hang guard only: a slow machine passes, just later
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_unstructured_example():
    out = run_example("examples/unstructured_prune.py", "--random-scores", "--amount", "0.9")
    assert "sparsity over scored weights: 0.9000" in out


def test_unstructured_example_from_scores_file(tmp_path):
    import torchvision

    from dcwp_prune import MaskScores

    model = torchvision.models.get_model("resnet18", num_classes=10)
    MaskScores.from_model(model).save(tmp_path / "s.safetensors")  # all logits 1.5: DCWP keeps everything
    out = run_example("examples/unstructured_prune.py", "--scores", str(tmp_path / "s.safetensors"))
    assert "sparsity over scored weights: 0.0000" in out


def test_torch_ao_example():
    out = run_example("examples/ao_sparsify.py", "--random-scores", "--sparsity-level", "0.8")
    assert "output change from squashing: 0.00e+00" in out
    n = 11_172_032  # resnet18's conv and linear weights at 10 classes, each masked at 80 % (rounded per tensor)
    zeros = int(out.split("zero weights after squash_mask: ")[1].split()[0])
    assert abs(zeros - 0.8 * n) <= 21 and f"of {n}" in out


def test_structured_example():
    out = run_example("examples/structured_prune.py", "--random-scores", "--size", "64")
    assert "MACs" in out and "output shape: (1, 10)" in out


def test_structured_example_to_a_macs_target():
    import re

    out = run_example("examples/structured_prune.py", "--random-scores", "--size", "64", "--target-macs", "3")
    reduction = float(re.search(r"MACs .* \((\d+\.\d+)x\)", out).group(1))
    assert "pruning ratio found: 0." in out and reduction >= 3.0 and "output shape: (1, 10)" in out


def test_examples_need_scores():
    proc = subprocess.run([sys.executable, "examples/structured_prune.py"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "pass --scores FILE or --random-scores" in proc.stderr


@pytest.mark.parametrize("path", sorted(p for p in os.listdir(os.path.join(ROOT, "examples")) if p.endswith(".py")))
def test_examples_are_short(path):
    with open(os.path.join(ROOT, "examples", path)) as f:
        assert len(f.readlines()) <= 100


@pytest.mark.parametrize(
    "script,args,expect",
    [
        ("examples/unstructured_prune.py", [], "sparsity over scored weights: "),
        ("examples/structured_prune.py", ["--pruning-ratio", "0.5"], "output shape: (1, 10)"),
        ("examples/ao_sparsify.py", ["--sparsity-level", "0.5"], "output change from squashing: 0.00e+00"),
    ],
)
def test_examples_take_a_runs_mlp_with_its_dense_f_d_and_scores(finished_run, script, args, expect):
    run = finished_run / "run"
    out = run_example(
        script,
        "--model",
        "mlp",
        "--model-file",
        str(run / "f_d.safetensors"),
        "--scores",
        str(run / "scores.safetensors"),
        *args,
    )
    assert expect in out
