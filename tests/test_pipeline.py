import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from dcwp_prune import bias_group_accuracy
from dcwp_prune.data import create_dataset, dataset_spec, register_dataset
from dcwp_prune.models import register_model
from dcwp_prune.run.config import RunConfig
from dcwp_prune.run.export import load_pruned_model
from dcwp_prune.run.pipeline import resolve_variant
from dcwp_prune.run.pipeline import run_dcwp as _run_dcwp
from dcwp_prune.run.presets import build_config
from tests._models import UserNet


def run_dcwp(config, **kwargs):
    """``run_dcwp`` without the report (its latency timing and plots): these tests check the run itself;
    ``tests/test_reliability.py`` checks that the API writes the report by default."""
    return _run_dcwp(config, **{"report": False, **kwargs})


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny(out, **over):
    base = {
        "model": "mlp",
        "out": str(out),
        "progress": False,
        "data": {"ratio": 2.0, "batch_size": 64},
        "biased": {"iterations": 40, "biased_iterations": 30},
        "mask": {"iterations": 30, "eval_every": 15, "lr": 0.1, "lambda_sparse": 1e-7},
        "finetune": {"iterations": 20, "eval_every": 10},
        "checkpoint_every": 10,
    }
    for k, v in over.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return build_config("cmnist", base)


def test_end_to_end_unstructured(tmp_path):
    result = run_dcwp(tiny(tmp_path / "run"))
    assert set(result.metrics) == {"vanilla", "vanilla_best_valid", "dcwp_last", "dcwp_best_valid"}
    for name in ("vanilla", "dcwp_last"):
        for split in ("valid", "test"):
            assert len(result.metrics[name][split]["group_accuracy"]) == 10
    # the reported test metrics are those of the saved model on every test image (recomputed here)
    test = create_dataset("cmnist", split="test")
    images = torch.stack([test[i].image for i in range(len(test))])
    saved = load_pruned_model(str(tmp_path / "run")).eval()
    with torch.no_grad():
        expected = bias_group_accuracy(saved(images), test.label_tensor, test.bias_tensor, 10)
    reported = result.metrics["dcwp_last"]["test"]
    for key in ("accuracy", "aligned", "conflicting", "unbiased"):
        assert reported[key] == pytest.approx(expected[key], abs=1e-9)
    # the sparsity is the zero fraction of the scored weights of the saved model
    scored = [p for n, p in saved.named_parameters() if n in result.scores.keys()]
    zeros = sum(int((p == 0).sum()) for p in scored) / sum(p.numel() for p in scored)
    assert result.sparsity == pytest.approx(zeros, abs=1e-6) and 0.0 < result.sparsity < 1.0
    assert result.selected == "last" and result.mined["method"] == "wrong"
    files = set(os.listdir(tmp_path / "run"))
    assert {
        "config.json",
        "metrics.jsonl",
        "mined.json",
        "scores.safetensors",
        "model.safetensors",
        "model.json",
        "results.json",
    } <= files
    with torch.no_grad():
        assert torch.allclose(saved(images[:4]), result.model.eval()(images[:4]), atol=1e-5)
    with pytest.raises(FileExistsError, match="already exists; pass --resume to continue it or --overwrite"):
        run_dcwp(tiny(tmp_path / "run"))


def test_plus_is_official_training_with_rewinding_selection_and_a_longer_f_b():
    plus = resolve_variant(build_config("cmnist", {"data": {"ratio": 2.0}, "variant": "plus"}))
    off = resolve_variant(build_config("cmnist", {"data": {"ratio": 2.0}}))
    assert {k: v for k, v in plus.items() if plus[k] != off[k]} == {
        "selected": "best_valid",
        "rewind": "auto",
        "mask_lambda_con": 0.2,
        "finetune_lambda_con": 0.2,
        "fb_length": 2.0,
    }
    # no stage-1 rewinding where it cannot apply: an f_D given as a file (a structured run rewinds its channels)
    structured = build_config("cmnist", {"variant": "plus", "prune": {"structured": True}})
    assert resolve_variant(structured)["rewind"] == "auto"
    assert resolve_variant(build_config("cmnist", {"variant": "plus", "model_file": "f.pt"}))["rewind"] == "none"
    # an explicit value wins over the variant
    mine = build_config("cmnist", {"variant": "plus", "finetune": {"rewind": "fresh", "select": "last"}})
    assert resolve_variant(mine)["rewind"] == "fresh" and resolve_variant(mine)["selected"] == "last"


def test_plus_trains_f_b_for_twice_its_schedule_and_records_the_option(tmp_path):
    """biased.biased_length (--fb-length) multiplies f_B's iterations, not f_D's; None in config.json means the
    variant's (plus 2), an explicit value wins."""
    from dcwp_prune.training.biased import BiasedTrainConfig

    cfg = BiasedTrainConfig(iterations=40, biased_iterations=30, biased_length=2.0)
    assert cfg.schedule("b")[0] == 60 and cfg.schedule("d")[0] == 40
    assert BiasedTrainConfig(iterations=40, biased_length=0.5).schedule("b")[0] == 20
    short = {"mask": {"iterations": 4}, "finetune": {"iterations": 4, "eval_every": 2}}
    run_dcwp(tiny(tmp_path / "plus", variant="plus", **short))
    run_dcwp(tiny(tmp_path / "one", variant="plus", biased={"biased_length": 1.0}, **short))

    def f_b_iterations(run):
        records = [json.loads(line) for line in open(tmp_path / run / "metrics.jsonl")]
        return max(r["iteration"] for r in records if r["stage"] == "biased" and "loss_b" in r)

    assert (f_b_iterations("plus"), f_b_iterations("one")) == (60, 30)
    assert json.load(open(tmp_path / "plus" / "config.json"))["biased"]["biased_length"] is None
    assert json.load(open(tmp_path / "one" / "config.json"))["biased"]["biased_length"] == 1.0


def test_official_and_clean_differ_exactly_where_specified():
    off = resolve_variant(build_config("cmnist", {"data": {"ratio": 2.0}}))
    clean = resolve_variant(build_config("cmnist", {"data": {"ratio": 2.0}, "variant": "clean"}))
    assert off == {
        "mask_upweight": 80.0,
        "positives": "official",
        "gumbel": "official",
        "selected": "last",
        "score_transform": "train",
        "rewind": "none",
        "rewind_point": 0.0,
        "mask_lambda_con": 0.05,
        "finetune_lambda_con": 0.05,
        "fb_length": 1.0,
    }
    assert clean == {
        "mask_upweight": 30.0,
        "positives": "symmetric",
        "gumbel": "clean",
        "selected": "best_valid",
        "score_transform": "eval",
        "rewind": "none",
        "rewind_point": 0.0,
        "mask_lambda_con": 0.05,
        "finetune_lambda_con": 0.05,
        "fb_length": 1.0,
    }
    explicit = resolve_variant(build_config("cmnist", {"variant": "clean", "mask": {"positives": "official"}}))
    assert explicit["positives"] == "official"


def test_clean_variant_selects_on_valid(tmp_path):
    result = run_dcwp(tiny(tmp_path / "run", variant="clean"))
    best = result.metrics["dcwp_best_valid"]
    assert result.selected == "best_valid" and best["iteration"] in (10, 20)
    history = [json.loads(r) for r in open(tmp_path / "run" / "metrics.jsonl") if '"finetune_eval"' in r]
    assert best["valid"]["accuracy"] == max(h["valid"]["accuracy"] for h in history)


def test_official_variant_can_select_on_valid_and_saves_that_iterate(tmp_path):
    """``finetune.select`` overrides the variant's choice and nothing else the variant decides."""
    cfg = tiny(tmp_path / "run", finetune={"select": "best_valid"})
    assert resolve_variant(cfg) == {**resolve_variant(tiny(tmp_path / "x")), "selected": "best_valid"}
    result = run_dcwp(cfg)
    best = result.metrics["dcwp_best_valid"]
    assert result.selected == "best_valid" and best["iteration"] in (10, 20)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["selected"] == "best_valid"
    test = create_dataset("cmnist", split="test", ratio=2.0)
    images = torch.stack([s.image for s in test])
    saved = load_pruned_model(str(tmp_path / "run")).eval()
    with torch.no_grad():
        got = bias_group_accuracy(saved(images), test.label_tensor, test.bias_tensor, 10)
    assert got["accuracy"] == pytest.approx(best["test"]["accuracy"], abs=1e-9)
    last = tiny(tmp_path / "y", variant="clean", finetune={"select": "last"})
    assert resolve_variant(last)["selected"] == "last" and resolve_variant(last)["gumbel"] == "clean"


def test_structured_mode_shrinks_macs_and_evaluates(tmp_path):
    cfg = tiny(
        tmp_path / "run",
        model="cnn",
        prune={"structured": True, "pruning_ratio": 0.5, "iterative_steps": 2},
        biased={"iterations": 6, "biased_iterations": 6},
        mask={"iterations": 6, "eval_every": 6},
        finetune={"iterations": 4, "eval_every": 4},
    )
    result = run_dcwp(cfg)
    assert result.structured["macs_ratio"] > 2.0
    assert result.metrics["dcwp_last"]["test"]["accuracy"] is not None
    saved = load_pruned_model(str(tmp_path / "run")).eval()
    x = create_dataset("cmnist", split="test")[0].image.unsqueeze(0)
    with torch.no_grad():
        assert torch.allclose(saved(x), result.model.eval()(x), atol=1e-5)


@pytest.mark.parametrize("ranking", [{}, {"global_pruning": True, "normalizer": "mean"}], ids=["local", "meannorm"])
def test_structured_to_a_stated_macs_reduction(tmp_path, ranking):
    cfg = tiny(
        tmp_path / "run",
        model="cnn",
        prune={"structured": True, "pruning_ratio": 0.8, "target_macs": 3.0, **ranking},
        biased={"iterations": 6, "biased_iterations": 6},
        mask={"iterations": 6, "eval_every": 6},
        finetune={"iterations": 4, "eval_every": 4},
    )
    result = run_dcwp(cfg)
    assert result.structured["macs_ratio"] >= 3.0 and 0 < result.structured["pruning_ratio"] < 0.8
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["structured"]["pruning_ratio"] == result.structured["pruning_ratio"]
    from dcwp_prune.run.report import build_report

    build_report(str(tmp_path / "run"), latency_reps=1)  # what the CLI does after the run
    report = (tmp_path / "run" / "report.md").read_text()
    ranking = "across layers, each layer's importances divided by their mean" if ranking else "within each layer"
    assert f"(ranked {ranking}; Torch-Pruning ratio {result.structured['pruning_ratio']:.3f}, " in report
    assert "x fewer MACs)." in report


def test_unreached_macs_target_keeps_the_learned_scores_and_resumes(tmp_path):
    """The target is checked once the scores exist: the error says how to go on without retraining."""
    short = {
        "biased": {"iterations": 6, "biased_iterations": 6},
        "mask": {"iterations": 6, "eval_every": 6},
        "finetune": {"iterations": 4, "eval_every": 4},
    }
    cfg = tiny(
        tmp_path / "run", model="cnn", prune={"structured": True, "pruning_ratio": 0.05, "target_macs": 3.0}, **short
    )
    with pytest.raises(
        ValueError,
        match=r"not reached at pruning_ratio 0.05 .*\(stage 3 is done\): continue with "
        r"--resume --out .* --force-config and a larger --pruning-ratio",
    ):
        run_dcwp(cfg)
    scores_mtime = os.path.getmtime(tmp_path / "run" / "scores.safetensors")
    again = tiny(
        tmp_path / "run",
        model="cnn",
        prune={"structured": True, "pruning_ratio": 0.8, "target_macs": 3.0},
        resume=True,
        **short,
    )
    result = run_dcwp(again, force_config=True)
    assert result.structured["macs_ratio"] >= 3.0
    assert os.path.getmtime(tmp_path / "run" / "scores.safetensors") == scores_mtime  # stage 3 was not run again


@pytest.mark.parametrize(
    "prune, message",
    [
        ({"structured": True, "target_macs": 1.0}, r"prune.target_macs must be > 1 \(a MACs reduction factor"),
        ({"target_macs": 2.0}, "prune.target_macs applies to structured pruning; pass --structured"),
        ({"normalizer": "mean"}, "prune.normalizer applies to structured pruning; pass --structured"),
        ({"structured": True, "normalizer": "mean"}, "prune.normalizer = 'mean' applies to the global channel ranking"),
    ],
)
def test_target_macs_config_errors(tmp_path, prune, message):
    from dcwp_prune.run.config import validate

    with pytest.raises(ValueError, match=message):
        validate(tiny(tmp_path / "run", prune=prune))


def test_user_supplied_model_and_oracle_mining(tmp_path):
    from dcwp_prune.models import create_model

    trained = create_model("mlp", 10)
    torch.save(trained.state_dict(), tmp_path / "fd.pt")
    result = run_dcwp(tiny(tmp_path / "run", model_file=str(tmp_path / "fd.pt"), mining={"method": "oracle"}))
    assert result.mined["precision"] == 1.0 and result.mined["recall"] == 1.0
    biased_logs = [r for r in open(tmp_path / "run" / "metrics.jsonl") if '"stage": "biased"' in r]
    assert not biased_logs  # neither f_D nor f_B was trained


def test_ensemble_mining_path(tmp_path):
    result = run_dcwp(
        tiny(
            tmp_path / "run",
            mining={"method": "ensemble", "tau": 0.5},
            biased={"loss": "confident_ce", "iterations": 40, "biased_iterations": 40},
        )
    )
    assert result.mined["method"] == "ensemble" and result.mined["count"] > 0
    assert result.mined["precision"] is not None


def test_structured_support_checked_before_training(tmp_path):
    from dcwp_prune.adapters.torch_pruning import UnsupportedModelError

    with pytest.raises(UnsupportedModelError, match="ShuffleNetV2"):
        run_dcwp(tiny(tmp_path / "run", model="shufflenet_v2_x0_5", prune={"structured": True}))
    assert not (tmp_path / "run" / "checkpoints" / "stage1_biased.pt").exists()


def test_model_that_cannot_take_the_images_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"model 'mlp' cannot take cmnist images of shape \(3, 32, 32\).*--image-size"):
        run_dcwp(tiny(tmp_path / "run", data={"image_size": 32}))
    # a fixed-size model (torchvision's ViT asserts its input size): the size it needs is named
    with pytest.raises(
        ValueError,
        match=r"model 'vit_b_32' cannot take cmnist images of shape \(3, 28, 28\) "
        r"\(Wrong image height! Expected 224 but got 28!\); pass --image-size 224",
    ):
        run_dcwp(tiny(tmp_path / "vit", model="vit_b_32"))
    assert not (tmp_path / "vit").exists()


class _HeadFirstNet(UserNet):
    def __init__(self, num_classes=10):
        nn.Module.__init__(self)
        self.head = nn.Linear(64, num_classes)  # defined before the body: the last nn.Linear is not the classifier
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 28 * 28, 64), nn.ReLU())


class _AuxNet(UserNet):
    def forward(self, x):
        logits = super().forward(x)
        return (logits, logits) if self.training else logits


class _TrailingLinearNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(3 * 28 * 28, num_classes)
        self.projector = nn.Linear(num_classes, 32)  # registered after the classifier

    def forward(self, x):
        return self.fc(x.flatten(1))


class _ScaledTrailingNet(_TrailingLinearNet):
    def forward(self, x):
        return self.fc(x.flatten(1)) * 2.0  # no nn.Linear returns the logits object itself


register_model("_test_headnet")(UserNet)
register_model("_test_auxnet")(_AuxNet)
register_model("_test_headfirst")(_HeadFirstNet)
register_model("_test_trailing")(_TrailingLinearNet)
register_model("_test_scaled_trailing")(_ScaledTrailingNet)


@register_dataset(
    "_test_cmnist_every",
    options=("ratio", "seed", "source"),
    ratios=(2.0,),
    default_ratio=2.0,
    transform=dataset_spec("cmnist").transform,
    extra_options=("every",),
)
def _cmnist_every(root=None, split="train", every=1, **options):
    ds = create_dataset("cmnist", root=root, split=split, **options)
    return ds.subset(range(0, len(ds), every)) if split == "train" else ds


def test_registered_model_and_dataset_with_its_own_option_run_end_to_end(tmp_path):
    config = tiny(tmp_path / "run", model="_test_headnet", data={"name": "_test_cmnist_every", "options": {"every": 4}})
    result = run_dcwp(config)
    assert result.metrics["dcwp_last"]["test"]["accuracy"] > 0.1
    assert set(result.scores.keys()) == {"head.weight", "body.1.weight"}
    mined = json.loads((tmp_path / "run" / "mined.json").read_text())
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["options"] == {"every": 4}
    train = create_dataset("cmnist", split="train", ratio=2.0)
    assert set(mined["ids"]) <= set(train.ids[::4])
    with pytest.raises(ValueError, match=r"dataset '_test_cmnist_every' has no option\(s\) \['stride'\].*takes every"):
        run_dcwp(tiny(tmp_path / "bad", data={"name": "_test_cmnist_every", "options": {"stride": 4}}))
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "model,message",
    [
        ("_test_auxnet", r"model '_test_auxnet' returns a tuple in training mode; DCWP trains on one logits tensor"),
        (
            "_test_trailing",
            r"the logits come from 'fc', but its last nn.Linear is 'projector' \(Linear\(in_features=10, "
            r"out_features=32.*define the classifier last",
        ),
        ("_test_headfirst", r"the logits come from 'head', but its last nn.Linear is 'body.1'"),
        (
            "_test_scaled_trailing",
            r"its last nn.Linear, 'projector' \(Linear\(in_features=10, out_features=32.*does not "
            r"produce the 10 logits",
        ),
        ("squeezenet1_0", r"SqueezeNet has no nn.Linear classifier.*the contrastive term of stages 3 and 4"),
    ],
)
def test_models_the_stages_cannot_train_are_refused_before_training(tmp_path, model, message):
    with pytest.raises(ValueError, match=message):
        run_dcwp(tiny(tmp_path / "run", model=model, data={"image_size": 64} if model == "squeezenet1_0" else {}))
    assert not (tmp_path / "run").exists()


def test_cpu_amp_runs_in_bf16_and_is_refused_without_native_bf16(tmp_path, monkeypatch):
    from dcwp_prune.run import pipeline
    from dcwp_prune.training.engine import cpu_has_bf16

    if cpu_has_bf16():
        result = run_dcwp(tiny(tmp_path / "run", cpu_amp=True))
        assert 0.0 < result.metrics["dcwp_last"]["test"]["accuracy"] <= 1.0
        # a bf16 stage 1 is not an fp32 one: it cannot be shared with an fp32 run
        with pytest.raises(ValueError, match="trained stage 1 differently: cpu_amp"):
            run_dcwp(tiny(tmp_path / "fp32", stage1_from=str(tmp_path / "run")))
    monkeypatch.setattr(pipeline, "cpu_has_bf16", lambda: False)
    with pytest.raises(ValueError, match="this CPU has no native bf16 .*drop --cpu-amp"):
        run_dcwp(tiny(tmp_path / "slow", cpu_amp=True))
    assert not (tmp_path / "slow").exists()


def test_cpu_amp_on_a_cuda_run_is_ignored_with_a_warning(tmp_path, monkeypatch):
    from dcwp_prune.run import pipeline

    monkeypatch.setattr(pipeline, "resolve_device", lambda name: torch.device("cuda"))  # no GPU needed
    with pytest.warns(RuntimeWarning, match=r"cpu_amp \(--cpu-amp\) applies to CPU runs and this one runs on cuda"):
        rt = pipeline._runtime(tiny(tmp_path / "run", cpu_amp=True))
    assert rt.device.type == "cuda"  # Runtime.autocast() uses cpu_amp on CPU devices only


def test_nan_loss_is_reported(tmp_path):
    with pytest.raises(
        FloatingPointError,
        match="biased: loss_d (became (nan|inf)|exploded to .*) at iteration .*lower the learning rate",
    ):
        run_dcwp(tiny(tmp_path / "run", biased={"lr": 1e12, "iterations": 40}))


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match=r"mining.method must be one of 'wrong', 'ensemble', 'oracle', got 'magic'"):
        run_dcwp(tiny(tmp_path / "a", mining={"method": "magic"}))
    with pytest.raises(ValueError, match="pass at most one of amount / sparsity / threshold"):
        run_dcwp(tiny(tmp_path / "b", prune={"amount": 0.5, "sparsity": 0.5}))
    with pytest.raises(ValueError, match=r"unknown MaskLearnConfig option\(s\) \['mask.lamda'\]"):
        RunConfig.from_dict({"mask": {"lamda": 1}})
    with pytest.raises(FileNotFoundError, match="cannot resume: .* holds no run"):
        run_dcwp(tiny(tmp_path / "c", resume=True))


def _results(path):
    with open(os.path.join(path, "results.json")) as f:
        data = json.load(f)
    return data["metrics"], data["sparsity"], data["mined"]


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    over = dict(mask={"iterations": 300, "eval_every": 100, "lr": 0.1, "lambda_sparse": 1e-8})
    run_dcwp(tiny(tmp_path / "straight", **over))
    cfg = tiny(tmp_path / "killed", **over)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tests", "_run_pipeline.py"), str(tmp_path / "cfg.json")], cwd=ROOT
    )
    ckpt = tmp_path / "killed" / "checkpoints"
    # event-driven: kill as soon as the mask stage wrote its first mid-stage checkpoint; the generous
    # deadline only guards against a hang, never decides the outcome on a slow machine
    deadline = time.time() + 1800
    while (
        time.time() < deadline
        and proc.poll() is None
        and not ((ckpt / "stage1_biased.pt").exists() and (ckpt / "progress.pt").exists())
    ):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "results.json").exists(), "the run finished before it could be killed"
    assert torch.load(ckpt / "progress.pt", weights_only=True)["stage"] == "mask"
    run_dcwp(cfg.replace(resume=True))
    assert _results(tmp_path / "killed") == _results(tmp_path / "straight")


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tmp_path):
    over = dict(
        mask={"iterations": 30, "eval_every": 15, "lr": 0.1, "lambda_sparse": 1e-7, "lambda_con": 0.0},
        finetune={"iterations": 20, "eval_every": 10, "lambda_con": 0.0},
    )
    run_dcwp(tiny(tmp_path / "one", **over))
    cfg = tiny(tmp_path / "two", **over)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            os.path.join(ROOT, "tests", "_run_pipeline.py"),
            str(tmp_path / "cfg.json"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # rank 0 owns the run folder (and prints, warns and reports once); the other rank's result says so
    # (the two ranks' prints may share a line of the merged output)
    assert proc.stdout.count("run_dir") == 2 and f"rank 0: run_dir {tmp_path / 'two'}" in proc.stdout
    assert "rank 1: run_dir None" in proc.stdout
    one, two = _results(tmp_path / "one"), _results(tmp_path / "two")
    info = json.loads((tmp_path / "two" / "results.json").read_text())["info"]
    assert info["world_size"] == 2
    assert one[2]["count"] == two[2]["count"]
    for name in ("vanilla", "dcwp_last"):
        for split in ("valid", "test"):
            assert abs(one[0][name][split]["accuracy"] - two[0][name][split]["accuracy"]) <= 0.02
    assert abs(one[1] - two[1]) <= 0.01


@pytest.mark.slow
def test_compile_option_runs(tmp_path):
    result = run_dcwp(tiny(tmp_path / "run", compile=True))
    assert result.metrics["dcwp_last"]["test"]["accuracy"] is not None
    cons = [json.loads(r)["con"] for r in open(tmp_path / "run" / "metrics.jsonl") if '"stage": "finetune"' in r]
    assert cons and all(c == c for c in cons)  # features reached the contrastive term through the compiled forward


def test_torchvision_model_structured_end_to_end(tmp_path):
    short = {"iterations": 4, "eval_every": 4}
    result = run_dcwp(
        tiny(
            tmp_path / "run",
            model="mobilenet_v3_small",
            biased={"iterations": 4, "biased_iterations": 4},
            mask=short,
            finetune=short,
            prune={"structured": True},
        )
    )
    assert result.structured["macs_ratio"] > 1.5
    assert load_pruned_model(str(tmp_path / "run")).eval()(torch.zeros(1, 3, 28, 28)).shape == (1, 10)


def test_stage1_from_reuses_another_runs_stage1_exactly(tmp_path):
    """A variant started from another run's stage 1 equals the same run trained from scratch."""
    first = run_dcwp(tiny(tmp_path / "a"))
    scratch = run_dcwp(tiny(tmp_path / "b", mask={"lambda_con": 0.0}))
    shared = run_dcwp(tiny(tmp_path / "c", mask={"lambda_con": 0.0}, stage1_from=str(tmp_path / "a")))
    assert shared.metrics["vanilla"] == first.metrics["vanilla"] == scratch.metrics["vanilla"]
    assert shared.metrics["dcwp_last"] == scratch.metrics["dcwp_last"]
    assert shared.sparsity == scratch.sparsity
    records = [json.loads(line) for line in open(tmp_path / "c" / "metrics.jsonl")]
    assert not any(r["stage"] == "biased" for r in records)  # nothing of stage 1 was trained again
    assert [r["stage1_from"] for r in records if r["stage"] == "vanilla"] == [str(tmp_path / "a")]
    with pytest.raises(ValueError, match=r"trained stage 1 differently: biased.iterations: saved 40, given 41"):
        run_dcwp(tiny(tmp_path / "d", biased={"iterations": 41}, stage1_from=str(tmp_path / "a")))
    # the variant's f_B length is part of stage 1: DCWP+ (f_B twice as long) never reuses an official stage 1
    with pytest.raises(ValueError, match=r"biased.biased_length: saved 1.0, given 2.0"):
        run_dcwp(tiny(tmp_path / "f", variant="plus", stage1_from=str(tmp_path / "a")))
    with pytest.raises(ValueError, match="has no finished stage 1"):
        run_dcwp(tiny(tmp_path / "e", stage1_from=str(tmp_path / "missing")))
    assert not any((tmp_path / n).exists() for n in "def")  # refused before the folder exists
