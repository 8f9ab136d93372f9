"""Unit tests of the training stages' pieces on tiny hand-made data."""

import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from dcwp_prune.run.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from dcwp_prune.run.presets import build_config, quick_schedule
from dcwp_prune.training.mask import MaskLearnConfig
from dcwp_prune.training.mining import MinedSet, mine_conflicting
from dcwp_prune.training.passes import per_sample
from dcwp_prune.training.sampling import ShardSampler


class Fixed(nn.Module):
    """Returns the logits stored for each input index (the input is the index)."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("table", logits)

    def forward(self, x):
        return self.table[x.long().view(-1)]


def _loader(n, batch_size=3, sampler=None):
    x = torch.arange(n).float()
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1][:n])
    return DataLoader(TensorDataset(x, y, torch.zeros(n, dtype=torch.long)), batch_size=batch_size, sampler=sampler)


# biased model: right on samples 0-4, wrong on 5, 6, 7
LOGITS = torch.tensor([[9, 0, 0], [0, 9, 0], [0, 0, 9], [9, 0, 0], [0, 9, 0], [9, 0, 0], [0, 9, 0], [0, 0, 9]]).float()
TRUTH = torch.tensor([0, 0, 0, 0, 1, 1, 1, 0], dtype=torch.bool)  # truly conflicting: 4, 5, 6
IDS = [f"s{i}" for i in range(8)]


def test_mining_wrong_flags_misclassified_samples_with_exact_quality():
    mined = mine_conflicting("wrong", IDS, labels_loader=_loader(8), model_b=Fixed(LOGITS), truth=TRUTH)
    assert mined.flags.tolist() == [False] * 5 + [True, True, True]
    assert mined.precision == pytest.approx(2 / 3) and mined.recall == pytest.approx(2 / 3)


def test_mining_ensemble_thresholds_pseudo_scores_at_tau():
    scores = torch.tensor([0.1, 0.9, 0.8, 0.81, 0.0, 0.95, 0.2, 0.5], dtype=torch.float64)
    mined = mine_conflicting("ensemble", IDS, pseudo_scores=scores, tau=0.8, truth=TRUTH)
    assert mined.flags.tolist() == [False, True, False, True, False, True, False, False]  # strictly above tau
    assert mined.precision == pytest.approx(1 / 3) and mined.recall == pytest.approx(1 / 3)


def test_mining_oracle_is_the_truth_and_unknown_method_is_refused():
    mined = mine_conflicting("oracle", IDS, truth=TRUTH)
    assert torch.equal(mined.flags, TRUTH) and mined.precision == 1.0 and mined.recall == 1.0
    with pytest.raises(ValueError, match=r"one of \('wrong', 'ensemble', 'oracle'\), got 'magic'"):
        mine_conflicting("magic", IDS, truth=TRUTH)
    with pytest.raises(ValueError, match="needs the biased model"):
        mine_conflicting("wrong", IDS)


def test_mined_set_save_load_round_trip(tmp_path):
    mined = mine_conflicting("wrong", IDS, labels_loader=_loader(8), model_b=Fixed(LOGITS), truth=TRUTH)
    mined.save(str(tmp_path / "mined.json"))
    back = MinedSet.load(str(tmp_path / "mined.json"))
    assert back.ids == mined.ids and torch.equal(back.flags, mined.flags)
    assert (back.method, back.precision, back.recall) == (mined.method, mined.precision, mined.recall)
    assert back.flags_for(["s7", "s0", "s5"]).tolist() == [True, False, True]
    with pytest.raises(KeyError, match="sample id 'zz' was not mined"):
        back.flags_for(["zz"])


def test_damaged_mined_json_is_named(tmp_path):
    (tmp_path / "mined.json").write_text('{"ids": ["a"')
    with pytest.raises(ValueError, match="mined.json' is damaged"):
        MinedSet.load(str(tmp_path / "mined.json"))


def test_per_sample_shards_add_up_to_the_unsharded_pass():
    model = Fixed(LOGITS)
    value = lambda logits, y: logits.softmax(1).gather(1, y[:, None]).squeeze(1)  # noqa: E731
    full = per_sample(model, _loader(8), 8, value)
    shards = [per_sample(model, _loader(8, sampler=ShardSampler(8, r, 3)), 8, value) for r in range(3)]
    visited = [sorted(ShardSampler(8, r, 3)) for r in range(3)]
    assert sorted(i for v in visited for i in v) == list(range(8))  # every sample exactly once
    combined = torch.zeros(8, dtype=torch.float64)
    for r, shard in enumerate(shards):
        combined[visited[r]] = shard[visited[r]]
    assert torch.equal(combined, full)


def test_quick_schedule_figures():
    config = build_config("cmnist", {"model": "cnn"})
    quick = quick_schedule(config, 4000)  # 16 batches of 256 an epoch
    assert (
        quick.biased.iterations,
        quick.biased.biased_iterations,
        quick.mask.iterations,
        quick.finetune.iterations,
    ) == (640, 160, 400, 160)
    assert quick.biased.biased_lr_decay_step == 48 and quick.mask.eval_every == 100 and quick.quick
    assert quick_schedule(quick, 4000) == quick  # idempotent: a resumed quick run keeps its schedule
    big = quick_schedule(config, 60000)
    assert (big.biased.iterations, big.biased.biased_iterations, big.mask.iterations, big.finetune.iterations) == (
        2000,
        400,
        400,
        200,
    )  # 1/5 of the official schedule


def test_checkpoint_restores_every_rng_stream_exactly(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    save_checkpoint(tmp_path / "c.pt", {"rng": get_rng_state()})
    expected = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    torch.rand(100), np.random.rand(100), random.random()  # move every stream on
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    again = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_mask_config_gumbel_is_honoured():
    """A config with gumbel="clean" samples masks from sigmoid((logit + noise) / T), "official" from
    sigmoid((sigmoid(logit) + noise) / T): at logit 3 the keep rates differ (0.95 vs 0.72)."""
    from dcwp_prune.training.mask import learn_mask_scores, resolve_mask_options

    assert resolve_mask_options(MaskLearnConfig(gumbel="clean", positives="symmetric")) == ("clean", "symmetric")
    assert resolve_mask_options(MaskLearnConfig()) == ("official", "official")
    rates = {}
    for variant in ("official", "clean"):
        model = nn.Sequential(nn.Flatten(), nn.Linear(4, 200, bias=False), nn.Linear(200, 2))
        kept = []

        def batches():
            while True:
                yield (
                    torch.randn(8, 4),
                    torch.randint(0, 2, (8,)),
                    torch.zeros(8, dtype=torch.long),
                    [str(i) for i in range(8)],
                )

        cfg = MaskLearnConfig(
            iterations=1, lr=0.0, init=3.0, gumbel=variant, lambda_con=0.0, eval_every=0, lambda_sparse=0.0
        )
        hook = model[1].register_forward_hook(
            lambda m, i, o, kept=kept: kept.append(float((m.weight != 0).float().mean()))
        )
        torch.manual_seed(0)
        learn_mask_scores(model, batches(), lambda ids: torch.zeros(len(ids), dtype=torch.bool), cfg)
        hook.remove()
        rates[variant] = kept[0]
    assert rates["official"] == pytest.approx(0.72, abs=0.06)
    assert rates["clean"] == pytest.approx(0.95, abs=0.04)
