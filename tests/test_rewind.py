"""Rewinding before stage 4, the random-mask control, f_D's stage-1 selection and snapshots."""

import json

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from dcwp_prune.adapters.torch_prune import shuffle_masks
from dcwp_prune.errors import InputError
from dcwp_prune.run.checkpoint import load_checkpoint
from dcwp_prune.run.pipeline import run_dcwp
from dcwp_prune.training.biased import BiasedTrainConfig, train_biased_model
from dcwp_prune.training.rewind import rewind_weights
from dcwp_prune.training.selection import BestOnValid

from .test_pipeline import tiny


def _net():
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def _pruned(seed=0):
    torch.manual_seed(seed)
    model = _net()
    for m in (model[0], model[2]):
        prune.random_unstructured(m, "weight", amount=0.6)
    return model


def test_rewind_copies_the_state_into_the_surviving_weights_and_keeps_the_masks():
    model = _pruned()
    masks = [model[0].weight_mask.clone(), model[2].weight_mask.clone()]
    torch.manual_seed(7)
    state = _net().state_dict()
    info = rewind_weights(model, state)
    assert info == {"copied": 4, "pruned": 2}
    assert torch.equal(model[0].weight_orig, state["0.weight"]) and torch.equal(model[2].bias, state["2.bias"])
    assert torch.equal(model[0].weight_mask, masks[0]) and torch.equal(model[2].weight_mask, masks[1])
    # the forward is the dense state's network with the masks applied
    dense = _net()
    dense.load_state_dict(
        {k: (v * masks[0] if k == "0.weight" else v * masks[1] if k == "2.weight" else v) for k, v in state.items()}
    )
    x = torch.randn(4, 6)
    assert torch.equal(model(x), dense(x))


def test_rewind_refuses_another_architecture_or_a_smaller_model():
    model = _pruned()
    with pytest.raises(InputError, match="the state has no '0.bias'"):
        rewind_weights(model, {"weight": torch.zeros(1)})
    small = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).state_dict()
    with pytest.raises(InputError, match=r"'0.bias' is \(4,\) in the state and \(5,\) in the model.*structurally"):
        rewind_weights(model, small)


def test_shuffle_masks_keeps_each_tensors_count_and_moves_the_positions():
    model = _pruned()
    before = {n: b.clone() for n, b in model.named_buffers() if n.endswith("_mask")}
    kept = shuffle_masks(model, torch.Generator().manual_seed(0))
    after = dict(model.named_buffers())
    assert set(kept) == {"0.weight", "2.weight"}
    for name, mask in before.items():
        assert after[name].sum() == mask.sum() and not torch.equal(after[name], mask)
        assert kept[name[:-5]] == pytest.approx(float(mask.float().mean()))
    # the forward uses the shuffled mask
    assert torch.equal(model[0].weight, model[0].weight_orig * after["0.weight_mask"])
    with pytest.raises(InputError, match="no torch.nn.utils.prune masks"):
        shuffle_masks(_net())


def test_stage1_evaluation_and_snapshots_do_not_change_training():
    def batches():
        g = torch.Generator().manual_seed(1)
        while True:
            yield torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)

    def evaluate(model):
        with torch.no_grad():
            acc = float((model(torch.ones(8, 6)).argmax(1) == 0).float().mean())
        return {"valid": {"accuracy": acc}, "test": {"accuracy": acc}}

    cfg = BiasedTrainConfig(iterations=23, lr=1e-2, snapshots=(0.0, 0.5))
    runs = []
    for evaluate_fn in (None, evaluate):
        torch.manual_seed(0)
        model, init = _net(), None
        init = {k: v.clone() for k, v in model.state_dict().items()}
        out = train_biased_model(None, batches(), cfg, model_d=model, evaluate_fn=evaluate_fn, eval_every=5)
        runs.append((model.state_dict(), out, init))
    (plain, out_plain, init), (evaluated, out_eval, _) = runs
    assert all(torch.equal(plain[k], evaluated[k]) for k in plain)
    assert out_plain["best_d"] is None
    its = [5, 10, 15, 20, 23]
    assert out_eval["best_d"]["iteration"] in its
    assert set(out_eval["snapshots"]) == {"0", "0.5"}
    assert all(torch.equal(out_eval["snapshots"]["0"][k], init[k]) for k in init)  # 0: the initialisation
    assert not torch.equal(out_eval["snapshots"]["0.5"]["0.weight"], init["0.weight"])


def test_best_on_valid_keeps_the_first_of_equal_scores_and_never_reads_test():
    model = _net()
    scores = iter([0.2, 0.5, 0.5, 0.1])
    tests = iter([0.9, 0.1, 0.99, 1.0])
    tracker = BestOnValid(
        model, lambda m: {"valid": {"accuracy": next(scores)}, "test": {"accuracy": next(tests)}}, keep_state=False
    )
    for it in (1, 2, 3, 4):
        tracker(it)
    assert tracker.summary() == {"valid": {"accuracy": 0.5}, "test": {"accuracy": 0.1}, "iteration": 2}
    assert tracker.best_state is None and len(tracker.history) == 4


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("rewind") / "base"
    return run_dcwp(tiny(out), report=False)


def test_a_run_keeps_erm_best_on_valid_and_the_stage1_snapshots(base):
    metrics = base.metrics
    assert {"vanilla", "vanilla_best_valid", "dcwp_last", "dcwp_best_valid"} == set(metrics)
    assert metrics["vanilla_best_valid"]["iteration"] in (10, 20, 30, 40)
    snaps = load_checkpoint(f"{base.run_dir}/checkpoints/stage1_snapshots.pt")["snapshots"]
    assert sorted(snaps) == ["0", "0.05", "0.1", "0.25"]


@pytest.mark.parametrize("how, point", [("stage1", 0.0), ("stage1", 0.25), ("fresh", 0.0)])
def test_rewind_runs_from_the_chosen_state(base, tmp_path, how, point):
    result = run_dcwp(
        tiny(
            tmp_path / how, stage1_from=base.run_dir, finetune={"rewind": how, "rewind_point": point, "iterations": 0}
        ),
        report=False,
    )
    # with no fine-tuning step the saved model is the rewound state under the mask
    snaps = load_checkpoint(f"{base.run_dir}/checkpoints/stage1_snapshots.pt")["snapshots"]
    state = result.model.state_dict()
    records = [json.loads(line) for line in open(tmp_path / how / "metrics.jsonl")]
    rewind = [r for r in records if r["stage"] == "rewind"]
    assert len(rewind) == 1 and rewind[0]["to"] == how and rewind[0]["pruned"] == 4  # the MLP's four nn.Linear
    target = snaps["0" if point == 0 else "0.25"]
    same = [torch.equal(v, target[k[:-5]]) for k, v in state.items() if k.endswith("weight_orig")]
    assert len(same) == 4 and (all(same) if how == "stage1" else not any(same))
    assert all(torch.equal(state[k], target[k]) for k in target if k.endswith("bias")) == (how == "stage1")


def test_shuffle_mask_keeps_each_layers_sparsity(base, tmp_path):
    result = run_dcwp(tiny(tmp_path / "shuffled", stage1_from=base.run_dir, prune={"shuffle": True}), report=False)
    assert result.kept == base.kept and result.sparsity == pytest.approx(base.sparsity)
    ours = {k: v for k, v in result.model.state_dict().items() if k.endswith("_mask")}
    theirs = {k: v for k, v in base.model.state_dict().items() if k.endswith("_mask")}
    assert all(ours[k].sum() == theirs[k].sum() for k in ours) and any(
        not torch.equal(ours[k], theirs[k]) for k in ours
    )


@pytest.mark.parametrize(
    "over, message",
    [
        ({"finetune": {"rewind": "stage1", "rewind_point": 0.3}}, r"rewind_point 0.3 \(--rewind-point\) is not one of"),
        (
            {"finetune": {"rewind_point": 1.5}},
            r"rewind_point must be in \[0, 1\] \(a fraction of f_D.s schedule\), got 1.5 \(--rewind-point\)",
        ),
        ({"prune": {"structured": True, "shuffle": True}}, "re-draws unstructured masks"),
    ],
)
def test_bad_rewind_and_shuffle_options_are_refused_before_anything_runs(tmp_path, over, message):
    with pytest.raises(InputError, match=message):
        run_dcwp(tiny(tmp_path / "bad", **over), report=False)
    assert not (tmp_path / "bad").exists()


def test_a_structured_run_rewinds_its_kept_channels_to_the_stage1_snapshot(base, tmp_path, monkeypatch):
    """Structured (physically smaller) model: stage 4 starts from f_D's initialisation with the run's pruning
    history replayed on it, i.e. exactly the kept channels' initial weights; DCWP+ rewinds structured runs too."""
    from dcwp_prune.adapters.structured import load_pruning_history, read_history
    from dcwp_prune.models import create_model
    from dcwp_prune.run import dcwp_run
    from dcwp_prune.run.config import resolve_variant

    seen = {}
    real = dcwp_run.finetune

    def recording(model, *args, **kwargs):
        seen.setdefault("start", {k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(dcwp_run, "finetune", recording)
    structured = {"structured": True, "pruning_ratio": 0.5, "global_pruning": False}
    over = {"stage1_from": base.run_dir, "prune": structured, "finetune": {"rewind": "stage1"}}
    run = run_dcwp(tiny(tmp_path / "s", **over), report=False)
    init = load_checkpoint(f"{base.run_dir}/checkpoints/stage1_snapshots.pt")["snapshots"]["0"]
    expected = create_model("mlp", 10)
    expected.load_state_dict(init)
    example = torch.zeros(1, 3, 28, 28)
    load_pruning_history(expected, read_history(tmp_path / "s" / "pruning_history.json"), example)
    want = expected.state_dict()
    assert set(seen["start"]) == set(want) and all(torch.equal(seen["start"][k], want[k]) for k in want)
    assert run.structured and seen["start"]["features.1.weight"].shape[0] < init["features.1.weight"].shape[0]
    records = [json.loads(line) for line in open(tmp_path / "s" / "metrics.jsonl")]
    assert [r["to"] for r in records if r["stage"] == "rewind"] == ["stage1"]
    assert resolve_variant(tiny(tmp_path / "p", variant="plus", prune=structured))["rewind"] == "auto"


def test_rewinding_a_stage1_without_snapshots_names_the_fix(base, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(base.run_dir, old)
    (old / "checkpoints" / "stage1_snapshots.pt").unlink()  # a stage 1 of an earlier release
    with pytest.raises(InputError, match="kept none.*--rewind fresh"):
        run_dcwp(tiny(tmp_path / "r", stage1_from=str(old), finetune={"rewind": "stage1"}), report=False)


def test_logit_correction_takes_the_cross_entropy_on_bias_corrected_logits():
    import torch.nn.functional as F

    from dcwp_prune.models import FeatureTap
    from dcwp_prune.training.engine import Runtime
    from dcwp_prune.training.finetune import FinetuneConfig, finetune
    from dcwp_prune.training.objectives import task_loss

    torch.manual_seed(0)
    model, biased = _net(), _net()
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    batch = (x, y, torch.zeros(8, dtype=torch.long), [str(i) for i in range(8)])
    flags = lambda ids: torch.zeros(len(ids), dtype=torch.bool)  # noqa: E731
    loss, _ = task_loss(model, FeatureTap(model), batch, flags, 0.0, 0.1, "official", Runtime(), biased, 0.5)
    expected = F.cross_entropy(model(x) + 0.5 * F.log_softmax(biased(x), 1), y)
    assert torch.allclose(loss, expected)
    plain, _ = task_loss(model, FeatureTap(model), batch, flags, 0.0, 0.1, "official", Runtime())
    assert torch.allclose(plain, F.cross_entropy(model(x), y))
    with pytest.raises(InputError, match="pass bias_model="):
        finetune(model, iter([batch]), flags, FinetuneConfig(iterations=1, logit_correction=1.0))


def test_a_run_with_logit_correction_uses_its_stage1_biased_model(base, tmp_path):
    over = {"stage1_from": base.run_dir}
    lc = run_dcwp(tiny(tmp_path / "lc", finetune={"logit_correction": 1.0}, **over), report=False)
    plain = run_dcwp(tiny(tmp_path / "plain", **over), report=False)
    assert json.load(open(tmp_path / "lc" / "config.json"))["finetune"]["logit_correction"] == 1.0
    a, b = lc.model.state_dict(), plain.model.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a if k.endswith("weight_orig"))  # the loss changed the training


def test_rewind_auto_runs_both_arms_and_keeps_the_one_better_on_valid(base, tmp_path):
    """DCWP+ (variant plus: lambda_con 0.2, rewind auto): arm 1 is exactly official's stage 4 on the trained f_D,
    arm 2 exactly a stage-1 rewind to f_D's initialisation; the arm with the better best-on-valid iterate is kept,
    at it. (f_B at official's length, so that every run here starts from the same official stage 1.)"""
    over = {"stage1_from": base.run_dir, "biased": {"biased_length": 1.0}}
    plus = run_dcwp(tiny(tmp_path / "plus", variant="plus", **over), report=False)
    con = {"mask": {"lambda_con": 0.2}}  # plus's contrastive weight in stages 3 and 4
    official = run_dcwp(
        tiny(tmp_path / "off", finetune={"select": "best_valid", "lambda_con": 0.2}, **con, **over), report=False
    )
    rewound = run_dcwp(
        tiny(tmp_path / "rw", finetune={"select": "best_valid", "rewind": "stage1", "lambda_con": 0.2}, **con, **over),
        report=False,
    )
    m = plus.metrics
    assert m["finetuned_best_valid"] == official.metrics["dcwp_best_valid"]
    assert m["rewound_best_valid"] == rewound.metrics["dcwp_best_valid"]
    better = (
        "rewound"
        if m["rewound_best_valid"]["valid"]["unbiased"] > m["finetuned_best_valid"]["valid"]["unbiased"]
        else "finetuned"
    )
    assert plus.info["rewind_chosen"] == better and plus.selected == "best_valid"
    assert m["dcwp_best_valid"] == m[f"{better}_best_valid"]
    kept = (rewound if better == "rewound" else official).model.state_dict()
    assert all(torch.equal(v, kept[k]) for k, v in plus.model.state_dict().items())
    records = [json.loads(line) for line in open(tmp_path / "plus" / "metrics.jsonl")]
    assert [r["chosen"] for r in records if r["stage"] == "retrain_choice"] == [better]
    assert {r["stage"] for r in records} >= {"finetune_eval", "retrain_eval", "rewind"}
    again = run_dcwp(tiny(tmp_path / "plus", variant="plus", resume=True, **over), report=False)
    assert (
        again.metrics == plus.metrics and again.info["rewind_chosen"] == better
    )  # resumed from both arms' checkpoints


def test_plus_stopped_in_its_retrain_arm_resumes_to_the_same_result(base, tmp_path, monkeypatch):
    """A stop (Ctrl-C / SIGTERM) while DCWP+ retrains its rewound arm writes a progress checkpoint of the
    'retrain' stage; --resume continues it (not the finished fine-tuning arm) and ends where a straight run ends."""
    from dcwp_prune.run import dcwp_run
    from dcwp_prune.training.engine import StopRequested

    over = {"stage1_from": base.run_dir, "variant": "plus", "biased": {"biased_length": 1.0}, "checkpoint_every": 0}
    straight = run_dcwp(tiny(tmp_path / "straight", **over), report=False)
    real = dcwp_run.finetune

    def stopping(model, batches, *args, name="finetune", runtime=None, **kwargs):
        if name == "retrain":  # signal after the 5th retraining batch, as a Ctrl-C would
            stop = args[2].stop if runtime is None else runtime.stop

            def signalled(source):
                for k, batch in enumerate(source):
                    if k == 5:
                        stop.requested = True
                    yield batch

            batches = signalled(batches)
        return real(model, batches, *args, name=name, **kwargs)

    monkeypatch.setattr(dcwp_run, "finetune", stopping)
    with pytest.raises(StopRequested):
        run_dcwp(tiny(tmp_path / "stopped", **over), report=False)
    progress = load_checkpoint(str(tmp_path / "stopped" / "checkpoints" / "progress.pt"))
    assert progress["stage"] == "retrain" and progress["iteration"] == 6  # the step that drew batch 6 finished
    monkeypatch.setattr(dcwp_run, "finetune", real)
    resumed = run_dcwp(tiny(tmp_path / "stopped", resume=True, **over), report=False)
    assert resumed.metrics == straight.metrics and resumed.info["rewind_chosen"] == straight.info["rewind_chosen"]


def test_fractions_that_round_to_one_iteration_each_keep_their_snapshot():
    """On a short schedule several fractions land on one step (10 iterations: 0 and 0.05 both at 0): every
    snapshot named in biased.snapshots exists, so a rewind to any of them works."""

    def batches():
        while True:
            yield torch.randn(8, 6), torch.randint(0, 3, (8,))

    torch.manual_seed(0)
    model = _net()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = BiasedTrainConfig(iterations=10, snapshots=(0.0, 0.05, 0.1))
    out = train_biased_model(None, batches(), cfg, model_d=model)
    assert set(out["snapshots"]) == {"0", "0.05", "0.1"}
    for key in ("0", "0.05"):
        assert all(torch.equal(out["snapshots"][key][k], init[k]) for k in init)
    assert not torch.equal(out["snapshots"]["0.1"]["0.weight"], init["0.weight"])
