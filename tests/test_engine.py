"""The one training loop: state tracking, exact resume, checks, cadences, and the stages built on it."""

import pytest
import torch
from torch import nn

from dcwp_prune.training.engine import Engine, Runtime, StopFlag, StopRequested
from dcwp_prune.training.finetune import FinetuneConfig, finetune


class Memory:
    """Collects what the engine hands to the run layer's callbacks."""

    def __init__(self):
        self.saved, self.records = [], []

    def runtime(self, **kw):
        return Runtime(save_fn=self.save, log_fn=self.records.append, **kw)

    def save(self, stage, iteration, state):
        self.saved.append((stage, iteration, {k: _copy(v) for k, v in state.items()}))
        return f"{stage}@{iteration}"


def _copy(v):
    import copy

    return copy.deepcopy(v)


def _train(engine, model, steps_seen):
    data = torch.Generator().manual_seed(0)
    xs = [torch.randn(4, 3, generator=data) for _ in range(engine.iterations)]

    def step(it):
        steps_seen.append(it)
        return {"loss": engine.update(model(xs[it]).pow(2).mean())}

    engine.run(step)


def _setup(memory, iterations=12, checkpoint_every=5):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    engine = Engine("demo", memory.runtime(checkpoint_every=checkpoint_every), iterations)
    engine.track("model", model)
    engine.optimizer("", model.parameters(), "adam", 1e-2, decay_step=4, gamma=0.5)
    return engine, model


def test_resume_from_a_progress_checkpoint_equals_the_uninterrupted_run():
    full, part = Memory(), Memory()
    engine, model = _setup(full)
    _train(engine, model, [])
    assert [(s, it) for s, it, _ in full.saved] == [("demo", 5), ("demo", 10)]  # every 5, never at the end
    assert set(full.saved[0][2]) == {"model", "opt", "sched"}

    engine2, model2 = _setup(part)
    checkpoint = dict(full.saved[0][2], iteration=5)
    assert engine2.resume(checkpoint) == 5
    seen = []
    _train(engine2, model2, seen)
    assert seen == list(range(5, 12))
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert engine2._optimizers[""][1].get_last_lr() == engine._optimizers[""][1].get_last_lr()


def test_records_every_ten_steps_and_at_the_end():
    memory = Memory()
    engine, model = _setup(memory, iterations=23, checkpoint_every=0)
    _train(engine, model, [])
    assert [r["iteration"] for r in memory.records] == [10, 20, 23]
    assert all(r["stage"] == "demo" and isinstance(r["loss"], float) for r in memory.records)
    assert memory.saved == []


def test_nan_is_reported_before_any_checkpoint():
    memory = Memory()
    engine, model = _setup(memory, iterations=20, checkpoint_every=3)

    def step(it):
        engine.update(model(torch.ones(2, 3)).sum())
        return {"loss": torch.tensor(float("nan") if it >= 1 else 1.0)}  # a diverged model stays diverged

    with pytest.raises(FloatingPointError, match="loss became nan at iteration 3 or earlier"):
        engine.run(step)
    assert memory.saved == []  # the diverged state of iteration 3 was never checkpointed


def test_evaluation_cadence_and_stop_request_checkpoints_first():
    memory = Memory()
    model = nn.Linear(3, 2)
    flag = StopFlag()
    engine = Engine("demo", memory.runtime(stop=flag), 10, eval_every=4)
    engine.track("model", model)
    engine.optimizer("", model.parameters(), "sgd", 0.1)
    evals = []

    def step(it):
        if it == 5:
            flag.requested = True  # what Ctrl-C does
        return {"loss": engine.update(model(torch.ones(1, 3)).sum())}

    with pytest.raises(StopRequested) as stop:
        engine.run(step, on_eval=evals.append)
    assert evals == [4] and stop.value.checkpoint == "demo@6"
    assert memory.saved[-1][1] == 6


def test_stop_flag_catches_sigint_and_sigterm_and_restores_the_handlers():
    import os
    import signal

    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with StopFlag() as flag:
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the main thread before kill() returns here
        assert flag.requested and flag.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):  # a second signal stops at once
            os.kill(os.getpid(), signal.SIGINT)
    assert {sig: signal.getsignal(sig) for sig in before} == before


def _stop_under_ddp(rank, port, out):
    import torch.distributed as dist

    from dcwp_prune.training.distributed import DistEnv

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        memory = Memory()
        flag = StopFlag()
        model = nn.Linear(3, 2)
        engine = Engine("demo", memory.runtime(stop=flag, env=DistEnv(rank, 2, 0)), 30)
        engine.track("model", model)
        engine.optimizer("", model.parameters(), "sgd", 0.1)
        seen = []

        def step(it):
            seen.append(it)
            if rank == 1 and it == 3:
                flag.requested = True  # only rank 1 is signalled, after its 4th step
            return {"loss": engine.update(model(torch.ones(1, 3)).sum())}

        try:
            engine.run(step)
            result = "finished"
        except StopRequested as stop:
            result = stop.checkpoint
        out.put((rank, result, len(seen), flag.requested))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_ranks_agree_on_the_step_they_stop_after():
    """A signal that reaches one rank stops every rank after the same step (the next agreement point),
    and the main rank checkpoints there: no rank is left waiting in an all-reduce."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    procs = [ctx.Process(target=_stop_under_ddp, args=(rank, port, out)) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
        assert p.exitcode == 0
    got = sorted(out.get() for _ in range(2))
    assert got == [(0, "demo@10", 10, True), (1, None, 10, True)]


def test_cpu_amp_autocasts_to_bf16_on_cpu_only_when_asked():
    conv, x = nn.Conv2d(3, 4, 3), torch.randn(1, 3, 8, 8)
    for runtime, dtype in (
        (Runtime(), torch.float32),
        (Runtime(amp=True), torch.float32),  # amp: CUDA only
        (Runtime(cpu_amp=True), torch.bfloat16),
    ):
        with runtime.autocast():
            assert conv(x).dtype == dtype


def test_state_errors_name_the_key():
    engine = Engine("demo", None, 1)
    model = nn.Linear(1, 1)
    engine.track("model", model)
    with pytest.raises(ValueError, match="'model' is tracked twice"):
        engine.track("model", model)
    with pytest.raises(ValueError, match=r"lacks \['model'\]"):
        engine.resume({"iteration": 0})
    with pytest.raises(ValueError, match="get= and set="):
        engine.track("x")


def test_finetune_reads_positives_from_its_config():
    """FinetuneConfig.positives decides the contrastive positives (no keyword decides for it)."""
    torch.manual_seed(0)
    x, y = torch.randn(8, 4), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    flags = torch.tensor([1, 0, 0, 0, 0, 0, 0, 1], dtype=torch.bool)

    def batches():
        while True:
            yield x, y, torch.zeros(8, dtype=torch.long), [str(i) for i in range(8)]

    logged = {}
    for positives in ("official", "symmetric"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
        records = []
        cfg = FinetuneConfig(iterations=1, lr=0.0, lambda_con=1.0, positives=positives, eval_every=0)
        finetune(model, batches(), lambda ids: flags[[int(i) for i in ids]], cfg, Runtime(log_fn=records.append))
        logged[positives] = records[-1]["con"]
    assert logged["official"] != pytest.approx(logged["symmetric"])
