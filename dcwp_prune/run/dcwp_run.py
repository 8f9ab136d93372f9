"""What each stage of a DCWP run does (:class:`DCWPRun`); the bookkeeping is :class:`~.stages.StageRunner`'s."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from .._atomic import write_bytes
from ..adapters.torch_prune import dcwp_global_unstructured, pruned_sparsity, shuffle_masks
from ..data import dataset_spec
from ..errors import InputError
from ..models import create_model
from ..scores import MaskScores
from ..training.biased import train_biased_model
from ..training.engine import Runtime
from ..training.finetune import finetune
from ..training.mask import learn_mask_scores
from ..training.mining import MinedSet, mine_conflicting
from ..training.sampling import upweight
from ..training.selection import best_summary
from .checkpoint import save_checkpoint
from .config import RunConfig, resolve_variant
from .data import RunData, RunLoaders
from .preflight import load_model_file
from .records import RunRecorder
from .stages import BIASED, FINAL, FINETUNE, MASK, MINING, RETRAIN, Stage, StageRunner, stage_seed

__all__ = ["DCWPRun"]


class DCWPRun(StageRunner):
    """The stages of one DCWP run, each a body (what it computes and saves) and what restores it when resuming."""

    def __init__(self, config: RunConfig, rt: Runtime, data: RunData, recorder: RunRecorder) -> None:
        super().__init__(config, rt, recorder)
        self.data = data
        self.variant = resolve_variant(config)
        self.loaders = RunLoaders(config, data, rt)
        self.select_metric = dataset_spec(config.data.name).select_metric
        self.history: Optional[List[Any]] = None  # a structured run's pruning history (what rewinding replays)

    def new_model(self) -> nn.Module:
        c = self.config
        model = create_model(c.model, self.data.num_classes, weights=c.weights).to(self.rt.device)
        if c.channels_last and self.rt.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        return model

    # stage 1 ---------------------------------------------------------------------------------
    def save_dense(self, state: Dict[str, Any]) -> None:
        """``f_d.safetensors``: the dense f_D that stage 3 scores (``dcwp-prune prune --model-file`` takes it)."""
        path = os.path.join(self.config.out, "f_d.safetensors")
        if self.writes and not (self.config.resume and os.path.isfile(path)):
            from safetensors.torch import save

            write_bytes(path, save({k: v.detach().contiguous().cpu() for k, v in state.items()}))

    def biased(self) -> Dict[str, Any]:
        c = self.config
        models: List[nn.Module] = []
        body = self.reuse_stage1 if c.stage1_from else self.train_stage1
        stage1 = self.run_stage(
            BIASED,
            lambda resume: body(resume, models),
            self.with_models,
            setup=None if c.stage1_from else lambda: models.extend([self.new_model(), self.new_model()]),
        )
        self.save_dense(stage1["model_d"].state_dict())  # also for a run folder of an earlier release (none there)
        return stage1

    def train_stage1(
        self, resume: Optional[Dict[str, Any]], models: List[nn.Module]
    ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """Stage 1's body: f_D and f_B trained on the same batches (``models``, built by the stage's setup)."""
        c = self.config
        model_d, model_b = models
        if c.model_file:
            load_model_file(model_d, c.model_file)
        train_d = None if c.model_file else model_d
        train_b = None if c.mining.method == "oracle" else model_b
        n = len(self.data.train)
        out = train_biased_model(
            train_b,
            self.loaders.train(1, int(resume["iteration"]) if resume else 0),
            c.biased.replace(biased_length=self.variant["fb_length"]),
            self.rt,
            model_d=train_d,
            score_loader=self.loaders.eval(self.data.train_scoring),
            num_samples=n,
            pseudo_every=max(1, n // c.data.batch_size),
            resume=resume,
            evaluate_fn=self.loaders.evaluate,
            eval_every=c.finetune.eval_every,
            select_metric=self.select_metric,
        )
        vanilla = self.loaders.evaluate(model_d)
        self.rt.log({"stage": "vanilla", **vanilla})
        state = {
            "model_d": model_d.state_dict(),
            "model_b": model_b.state_dict(),
            "vanilla": vanilla,
            "pseudo_scores": out["pseudo_scores"] if out["pseudo_scores"] is not None else torch.zeros(0),
            "vanilla_best_valid": out["best_d"],
        }
        self.save_snapshots(out["snapshots"])  # before stage 1 counts as done, so a finished stage 1 has them
        return state, {**state, "model_d": model_d, "model_b": model_b}

    def save_snapshots(self, snapshots: Dict[str, Dict[str, torch.Tensor]]) -> None:
        """f_D's stage-1 snapshots (``biased.snapshots``), what ``finetune.rewind = "stage1"`` rewinds to."""
        if self.writes:
            save_checkpoint(self.recorder.checkpoint("stage1_snapshots"), {"snapshots": snapshots})

    def reuse_stage1(self, resume: Optional[Dict[str, Any]], models: List[nn.Module]) -> Tuple[Dict[str, Any], Any]:
        """Stage 1's body with ``stage1_from``: another run's stage 1 (checked to match by
        ``check_stage1_source``), saved as this run's own."""
        source = self.config.stage1_from
        assert source is not None
        state = RunRecorder(source).load(BIASED.done_file)  # type: ignore[arg-type]
        assert state is not None  # checked before the run folder was created
        state = {k: state.get(k) for k in ("model_d", "model_b", "vanilla", "pseudo_scores", "vanilla_best_valid")}
        self.rt.log({"stage": "vanilla", "stage1_from": os.path.abspath(source), **state["vanilla"]})
        snapshots = RunRecorder(source).load("stage1_snapshots")
        if snapshots is not None:
            self.save_snapshots(snapshots["snapshots"])
        return state, self.with_models(state)

    def with_models(self, state: Dict[str, Any]) -> Dict[str, Any]:
        """A stage-1 checkpoint with f_D and f_B built and loaded from it."""
        model_d, model_b = self.new_model(), self.new_model()
        model_d.load_state_dict(state["model_d"])
        model_b.load_state_dict(state["model_b"])
        return {**state, "model_d": model_d, "model_b": model_b}

    # stage 2 ---------------------------------------------------------------------------------
    def mining(self, model_b: nn.Module, pseudo: torch.Tensor) -> MinedSet:
        return self.run_stage(MINING, lambda _: self.mine(model_b, pseudo), lambda saved: saved["mined"])

    def mine(self, model_b: nn.Module, pseudo: torch.Tensor) -> Tuple[Dict[str, Any], MinedSet]:
        train = self.data.train
        mined = mine_conflicting(
            self.config.mining.method,
            train.ids,
            labels_loader=self.loaders.eval(self.data.train_scoring),
            model_b=model_b,
            pseudo_scores=pseudo if len(pseudo) else None,
            tau=self.config.mining.tau,
            truth=train.conflicting,
            runtime=self.rt,
        )
        self.rt.log(
            {
                "stage": "mining",
                "count": mined.count,
                "precision": mined.precision,
                "recall": mined.recall,
                "true_conflicting": int(train.conflicting.sum()),
                "num_samples": len(train),
            }
        )
        return {"mined": mined}, mined

    # stage 3 ---------------------------------------------------------------------------------
    def mask(self, model_d: nn.Module, mined: MinedSet) -> MaskScores:
        def restore(saved: Dict[str, Any]) -> MaskScores:
            model_d.load_state_dict(saved["model"])
            return MaskScores(saved["scores"], model=model_d)

        return self.run_stage(MASK, lambda resume: self.learn_mask(model_d, mined, resume), restore)

    def learn_mask(
        self, model_d: nn.Module, mined: MinedSet, resume: Optional[Dict[str, Any]]
    ) -> Tuple[Dict[str, Any], MaskScores]:
        c = self.config
        weights = upweight(self.data_flags(mined), self.variant["mask_upweight"])

        def on_eval(it: int, scores: MaskScores) -> Dict[str, Any]:
            return self.loaders.evaluate(model_d, ("valid",))

        scores = learn_mask_scores(
            model_d,
            self.loaders.train(3, int(resume["iteration"]) if resume else 0, weights),
            mined.flags_for,
            c.mask.replace(
                gumbel=self.variant["gumbel"],
                positives=self.variant["positives"],
                lambda_con=self.variant["mask_lambda_con"],
            ),
            self.rt,
            resume=resume,
            on_eval=on_eval,
        )
        scores.bind(model_d)
        if self.writes:
            scores.save(os.path.join(c.out, "scores.safetensors"))
        return {"model": model_d.state_dict(), "scores": scores.state_dict()}, scores

    def data_flags(self, mined: MinedSet) -> torch.Tensor:
        return mined.flags_for(self.data.train.ids)

    # prune -----------------------------------------------------------------------------------
    def prune(self, model: nn.Module, scores: MaskScores) -> Optional[Dict[str, Any]]:
        p = self.config.prune
        if p.structured:
            from ..adapters.structured import prune_channels

            example = self.data.valid[0].image.unsqueeze(0).to(self.rt.device)
            try:
                result = prune_channels(model, scores, example, **p.channel_options())
            except ValueError as err:
                if p.target_macs is None or not self.writes:
                    raise
                raise InputError(
                    f"{err}. The learned scores are saved (stage 3 is done): continue with --resume "
                    f"--out {self.config.out} --force-config and a larger --pruning-ratio (or a smaller "
                    "--target-macs)"
                ) from None
            info = dict(result.to_dict(), history=result.history)
            self.history = result.history
        else:
            dcwp_global_unstructured(model, scores.probs(), **p.rule())
            info = None
            if p.shuffle:  # the random-mask control: the same count per tensor at random positions
                shuffle_masks(model, torch.Generator().manual_seed(stage_seed(self.config.seed, 2)))
        self.rt.log(
            {
                "stage": "prune",
                "structured": p.structured,
                "sparsity": self.sparsity(model, scores),
                **({k: v for k, v in info.items() if k != "history"} if info else {}),
            }
        )
        return info

    def sparsity(self, model: nn.Module, scores: MaskScores) -> float:
        if self.config.prune.structured:
            return float(scores.sparsity())
        return float(pruned_sparsity(model))

    # stage 4 ---------------------------------------------------------------------------------
    def finetune(self, model: nn.Module, mined: MinedSet, model_b: Optional[nn.Module] = None) -> Dict[str, Any]:
        rewind = self.variant["rewind"]  # auto: this arm fine-tunes the trained f_D, retrain() the rewound one
        return self.train_stage4(FINETUNE, model, mined, model_b, None if rewind in ("none", "auto") else rewind)

    def train_stage4(
        self, stage: Stage, model: nn.Module, mined: MinedSet, model_b: Optional[nn.Module], rewind: Optional[str]
    ) -> Dict[str, Any]:
        """Stage 4 (or DCWP+'s ``retrain`` arm): the pruned ``model`` rewound first when ``rewind`` names how
        (not when resuming mid-stage), retrained with the mined samples upweighted, evaluated on valid."""

        def restore(saved: Dict[str, Any]) -> Dict[str, Any]:
            model.load_state_dict(saved["model"])
            return saved

        return self.run_stage(
            stage, lambda resume: self.retrain_pruned(stage, model, mined, model_b, rewind, resume), restore
        )

    def retrain_pruned(
        self,
        stage: Stage,
        model: nn.Module,
        mined: MinedSet,
        model_b: Optional[nn.Module],
        rewind: Optional[str],
        resume: Optional[Dict[str, Any]],
    ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        c = self.config
        if rewind is not None and resume is None:
            self.rewind(model, rewind)
        weights = upweight(self.data_flags(mined), c.finetune.upweight)
        out = finetune(
            model,
            self.loaders.train(4, int(resume["iteration"]) if resume else 0, weights),
            mined.flags_for,
            c.finetune.replace(
                positives=c.finetune.positives or self.variant["positives"],
                lambda_con=self.variant["finetune_lambda_con"],
            ),
            self.rt,
            evaluate_fn=self.loaders.evaluate,
            select_metric=self.select_metric,
            resume=resume,
            bias_model=model_b if c.finetune.logit_correction > 0 else None,
            name=stage.name,
        )
        state = {"model": model.state_dict(), **out}
        return state, state

    def retrain(
        self, model: nn.Module, mined: MinedSet, model_b: Optional[nn.Module], tuned: Dict[str, Any]
    ) -> Dict[str, Any]:
        """DCWP+'s second arm (``finetune.rewind = "auto"``): the pruned ``model`` rewound to its stage-1
        snapshot and retrained exactly as stage 4; then the arm whose best iterate is better on valid is kept
        (``model`` holds that arm's last iterate). Returns the kept arm's stage-4 state, with both arms'
        best-on-valid metrics under ``arms`` and the choice under ``chosen``."""
        # arm 1's saved state aliases the model's tensors, which arm 2 rewinds in place: keep a copy
        tuned = {**tuned, "model": {k: v.detach().clone() for k, v in tuned["model"].items()}}
        done = self.train_stage4(RETRAIN, model, mined, model_b, "stage1")

        def score(state: Dict[str, Any]) -> float:
            best = state.get("best")
            return float(best["valid"][self.select_metric]) if best else float("-inf")

        chosen = "rewound" if score(done) > score(tuned) else "finetuned"  # ties keep the trained f_D
        kept = done if chosen == "rewound" else tuned
        model.load_state_dict(kept["model"])
        arms = {name: state.get("best") for name, state in (("finetuned", tuned), ("rewound", done))}
        self.rt.log(
            {
                "stage": "retrain_choice",
                "chosen": chosen,
                "metric": self.select_metric,
                **{f"{k}_valid": score(s) for k, s in (("finetuned", tuned), ("rewound", done))},
            }
        )
        return {**kept, "arms": arms, "chosen": chosen}

    def rewind(self, model: nn.Module, how: str) -> None:
        """Reset the surviving weights of the pruned ``model`` (its masks stay) before stage 4. A structurally
        pruned model takes the dense state with the run's pruning history replayed on it: the kept channels'
        weights as they were at that point."""
        from ..training.biased import snapshot_key
        from ..training.rewind import rewind_weights

        c = self.config
        if how == "fresh":  # a new initialisation, drawn without touching the stage's RNG
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(stage_seed(c.seed, 3) + 500)
                state = self.new_model().state_dict()
        else:
            key = snapshot_key(self.variant["rewind_point"])
            snapshots = (self.recorder.load("stage1_snapshots") or {}).get("snapshots", {})
            if key not in snapshots:
                raise InputError(
                    f"finetune.rewind = 'stage1' needs f_D's stage-1 snapshot at {key} of its schedule, and "
                    f"this run's stage 1 kept {sorted(snapshots) or 'none'} (checkpoints/stage1_snapshots.pt; "
                    "a stage 1 of an earlier release keeps none): run stage 1 again (a new --out without "
                    "--stage1-from), or --rewind fresh"
                )
            state = snapshots[key]
        if self.history is not None:  # structured: the same channels removed from the dense state first
            from ..adapters.structured import load_pruning_history

            with torch.random.fork_rng(devices=[]):  # its initialisation is overwritten: the stage's RNG untouched
                dense = self.new_model()
            dense.load_state_dict(state)
            example = self.data.valid[0].image.unsqueeze(0).to(self.rt.device)
            state = load_pruning_history(dense, self.history, example).state_dict()
        info = rewind_weights(model, state)
        self.rt.log(
            {"stage": "rewind", "to": how, "point": self.variant["rewind_point"] if how == "stage1" else None, **info}
        )

    # stage 5 ---------------------------------------------------------------------------------
    def final(
        self,
        model: nn.Module,
        tuned: Dict[str, Any],
        vanilla: Dict[str, Any],
        vanilla_best: Optional[Dict[str, Any]] = None,
    ) -> Dict[str, Dict[str, Any]]:
        return self.run_stage(FINAL, lambda _: ({}, self.evaluate_final(model, tuned, vanilla, vanilla_best)), dict)

    def evaluate_final(
        self,
        model: nn.Module,
        tuned: Dict[str, Any],
        vanilla: Dict[str, Any],
        vanilla_best: Optional[Dict[str, Any]],
    ) -> Dict[str, Dict[str, Any]]:
        metrics = {"vanilla": vanilla, "dcwp_last": self.loaders.evaluate(model)}
        for arm, best in (tuned.get("arms") or {}).items():  # DCWP+: both arms' best-on-valid iterates
            if best is not None:
                metrics[f"{arm}_best_valid"] = best_summary(best)
        if vanilla_best is not None:  # f_D's (ERM's) best-on-valid iterate in stage 1, metrics only
            metrics["vanilla_best_valid"] = vanilla_best
        if tuned.get("best") is not None:
            metrics["dcwp_best_valid"] = best_summary(tuned["best"])
        self.rt.log({"stage": "final", **{k: v for k, v in metrics.items()}})
        return metrics
