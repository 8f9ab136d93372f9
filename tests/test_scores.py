import pytest
import torch
from torch import nn

from dcwp_prune import MaskScores
from tests._models import GroupedNet, TinyCNN


def test_from_model_covers_conv_and_linear_kinds():
    scores = MaskScores.from_model(GroupedNet())
    assert scores.keys() == ["c1.weight", "grouped.weight", "dw.weight", "up.weight", "fc.weight"]
    assert all(bool((p.detach() == 1.5).all()) for p in scores.parameters())
    assert scores.numel() == sum(
        m.weight.numel() for m in GroupedNet().modules() if hasattr(m, "weight") and not isinstance(m, nn.BatchNorm2d)
    )


def test_include_exclude_patterns_and_types():
    net = TinyCNN()
    assert MaskScores.from_model(net, exclude=["fc"]).keys() == ["conv1.weight", "conv2.weight"]
    assert MaskScores.from_model(net, include=["conv*"], exclude=["*2.weight"]).keys() == ["conv1.weight"]
    assert MaskScores.from_model(net, exclude_types=[nn.Conv2d]).keys() == ["fc.weight"]
    with pytest.raises(ValueError, match=r"include pattern\(s\) \['nothing\*'\] match no scorable weight"):
        MaskScores.from_model(net, include=["conv1*", "nothing*"])  # a typo is named, even beside a good pattern
    with pytest.raises(ValueError, match="no weight matched"):
        MaskScores.from_model(net, include=["conv*"], exclude=["conv*"])


def test_hard_mask_keep_rule_and_sparsity():
    net = nn.Linear(4, 1, bias=False)
    scores = MaskScores({"weight": torch.tensor([[2.0, 0.0, -1e-9, -3.0]])}, model=net)
    assert scores.hard_mask()["weight"].tolist() == [[1.0, 1.0, 0.0, 0.0]]
    probs = scores.probs()["weight"]
    assert ((probs >= 0.5) == (scores["weight"] >= 0)).all()  # -1e-9 must not round up to 0.5
    assert scores.sparsity() == 0.5
    assert scores.sparsity(per_layer=True) == {"weight": 0.5}
    assert scores.hard_mask(threshold=0.9)["weight"].tolist() == [[0.0, 0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match=r"`threshold` to be a float in \[0, 1\], got 1.5"):
        scores.hard_mask(1.5)


def test_save_load_round_trip_is_exact(tmp_path):
    net = TinyCNN()
    scores = MaskScores.from_model(net)
    with torch.no_grad():
        for p in scores.parameters():
            p.normal_()
    path = tmp_path / "s.safetensors"
    scores.save(path)
    back = MaskScores.load(path, model=net)
    assert back.keys() == scores.keys()
    for k in scores:
        assert torch.equal(back[k], scores[k])
    assert back.model is net
    assert not list(tmp_path.glob("*.tmp"))


def test_load_reports_mismatches(tmp_path):
    scores = MaskScores.from_model(TinyCNN(), exclude=["fc"])
    path = tmp_path / "s.safetensors"
    scores.save(path)
    other = TinyCNN()
    other.conv2 = nn.Conv2d(8, 7, 3)
    with pytest.raises(
        ValueError, match=r"shape mismatches: conv2.weight: expected \(7, 8, 3, 3\), got \(6, 8, 3, 3\)"
    ):
        MaskScores.load(path, model=other)
    fresh = MaskScores.from_model(TinyCNN())
    with pytest.raises(ValueError, match="1 missing keys: fc.weight"):
        fresh.load_state_dict(MaskScores.load(path).state_dict())
    with pytest.raises(KeyError, match="no submodule 'head'"):
        MaskScores({"head.weight": torch.zeros(2)}, model=TinyCNN())


def test_load_refuses_non_score_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        MaskScores.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="is not a safetensors mask-scores file"):
        MaskScores.load(bad)
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a dcwp-prune mask-scores file"):
        MaskScores.load(tmp_path / "other.safetensors")


def test_to_importance_scores_keys_are_module_pairs():
    net = TinyCNN()
    scores = MaskScores.from_model(net)
    imp = scores.to_importance_scores()
    assert set(imp) == {(net.conv1, "weight"), (net.conv2, "weight"), (net.fc, "weight")}
    assert torch.allclose(imp[(net.fc, "weight")], torch.sigmoid(torch.tensor(1.5)).expand(3, 6))
    unbound = MaskScores(scores.state_dict())
    with pytest.raises(ValueError, match="not bound to a model"):
        unbound.to_importance_scores()
    with pytest.raises(ValueError, match="kind must be 'probs' or 'logits'"):
        scores.to_importance_scores(kind="mask")
