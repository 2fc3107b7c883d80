"""The retraining job: a derived student from scratch (or a teacher, or a hand-designed baseline such as BiSeNetV2),
with distillation, one checkpoint per epoch.

FasterSeg's retraining recipe, scaled to the dataset: loss = OHEM cross-entropy on ``logits``
+ `aux_weight` × cross-entropy on each auxiliary head + the KD terms of :mod:`nas.trainer.chain`; SGD (or AdamW,
`train.optimizer`) with the poly schedule lr_i = lr · (1 − i / N)^0.9 over the N iterations of a phase (DeepLab,
Chen et al., TPAMI 2018, §4.1), gradient clipping, mixed precision on CUDA only. A holistic KD term's discriminator takes one step per
iteration with its own optimiser.

The job writes to ``<run.root>/<run.name>/<train.model>/`` (so a search, its teacher and its student can share a
run name): ``metrics.csv`` (a row per epoch and phase), ``train.ckpt`` after every epoch (atomically: an
interrupted or diverged run keeps its last finished epoch), and at the end ``model.pt`` (the deployable network:
no auxiliary heads, no tutor, no OKDDip peers) and ``scores.json`` (val mIoU per class and per object size). Data
order and every random draw are seeded per (phase, epoch), so ``resume`` repeats what an uninterrupted run would
do (on CPU). The training checkpoint holds whole OKDDip peer groups (leader, peers, attention).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from nas import distributed as dist
from nas.config import ExperimentConfig, config_hash
from nas.data import build_dataset, build_loader, class_weights, dataset_info, dataset_version
from nas.device import resolve_device, seed_everything, set_threads
from nas.distill import DistillationCriterion, HolisticAdversarial, OKDDipCriterion, freeze_teacher, leader_of
from nas.errors import UserError
from nas.evaluate import evaluate
from nas.io import RunDir, atomic_write_json, resume_checkpoint, save_checkpoint
from nas.losses import OhemCrossEntropy, check_finite
from nas.metrics import SegScores
from nas.models import save_model
from nas.optim import make_optimizer
from nas.trainer.chain import (
    Phase,
    check_online,
    kd_terms,
    load_teacher,
    online_peers,
    plan_phases,
    tutor_path_for,
)
from search_spaces.arch import Architecture, load_architecture
from search_spaces.baselines import BASELINES, build_baseline
from search_spaces.builder import build_network
from search_spaces.hrnet import HRNET_PRESETS, build_hrnet
from search_spaces.tutor import build_tutor
from search_spaces.upsample import init_pixel_shuffle

__all__ = ["CHECKPOINT", "TrainJob", "TrainResult", "check_train_config", "run_train", "scores_table", "train_dir",
           "train_or_reuse"]

log = logging.getLogger(__name__)

CHECKPOINT = "train.ckpt"
_POLY_POWER = 0.9


@dataclass(frozen=True)
class TrainResult:
    """What a finished job produced."""

    run_dir: RunDir
    model_path: Path
    scores_path: Path
    scores: SegScores
    class_names: tuple[str, ...]
    params: int  # parameters of the deployable network
    files: tuple[Path, ...] = field(default=())


@dataclass
class _PhaseState:
    """The trainable pieces of one phase."""

    model: nn.Module
    teacher: nn.Module | None
    criterion: DistillationCriterion | None
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    params: list[nn.Parameter]
    okddip: OKDDipCriterion | None = None  # the peers' loss when the model is an OKDDip peer group

    @property
    def adversarial(self) -> list[tuple[str, HolisticAdversarial]]:
        if self.criterion is None:
            return []
        return [(k, m) for k, m in self.criterion.losses.items() if isinstance(m, HolisticAdversarial)]


def _seed(base: int, phase: int, epoch: int, salt: int = 0) -> int:
    return (base * 1_000_003 + phase * 104_729 + (epoch + 1) * 7919 + salt) % (2**31)


def train_dir(cfg: ExperimentConfig) -> Path:
    """``<run.root>/<run.name>/<train.model>``: where a training job writes."""
    return Path(cfg.run.root) / cfg.run.name / cfg.train.model


def scores_table(scores: SegScores, class_names: tuple[str, ...]) -> str:
    """A plain-text table of per-class IoU, then mIoU, pixel accuracy and per-size mIoU."""
    width = max([len(n) for n in class_names] + [10])
    lines = [f"{'class':<{width}}  IoU"]
    for name, iou in zip(class_names, scores.iou):
        lines.append(f"{name:<{width}}  {'  n/a' if math.isnan(iou) else f'{100 * iou:5.1f}'}")
    lines.append(f"{'mIoU':<{width}}  {100 * scores.miou:5.1f}")
    lines.append(f"{'pixel acc':<{width}}  {100 * scores.pixel_acc:5.1f}")
    for bucket, v in scores.size_miou.items():
        lines.append(f"{'mIoU ' + bucket:<{width}}  {'  n/a' if math.isnan(v) else f'{100 * v:5.1f}'}")
    return "\n".join(lines)


def _nan_to_none(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def _baseline_name(baseline: Any) -> str:
    """`family width W depth D` of a baseline description, for messages."""
    if not isinstance(baseline, dict):
        return "none"
    return f"{baseline.get('family')} width {baseline.get('width')} depth {baseline.get('depth')}"


def _arch_key(arch: Architecture | None) -> dict[str, Any] | None:
    if arch is None:
        return None
    return {k: v for k, v in arch.to_dict().items() if k != "meta"}


class TrainJob:
    """State and steps of one training job (construct, optionally :meth:`load`, then :meth:`run_all`)."""

    def __init__(self, cfg: ExperimentConfig, run: RunDir, arch: Architecture | None,
                 teacher: nn.Module | None, tutor_path: int | None):
        self.cfg, self.run, self.arch, self.tutor_path = cfg, run, arch, tutor_path
        tc = cfg.train
        set_threads(cfg.run.threads)
        seed_everything(cfg.run.seed)
        self.device = dist.local_device(resolve_device(cfg.run.device))
        self.info = dataset_info(cfg.data)
        with dist.local_main_first():  # one process per node builds a data cache
            self.train_ds = build_dataset(cfg.data, "train")
            self.val_ds = build_dataset(cfg.data, "val")
        if tc.iters_per_epoch == 0 and len(self.train_ds) < cfg.data.batch_size:
            raise UserError(f"the train split has {len(self.train_ds)} images, fewer than one batch")
        weight = class_weights(self.train_ds).to(self.device) if tc.class_weighted else None
        ignore = self.info.ignore_index
        self.ohem = OhemCrossEntropy(tc.ohem_thresh, tc.ohem_min_kept, weight=weight, ignore_index=ignore)
        self.ce = OhemCrossEntropy(1.0, weight=weight, ignore_index=ignore)
        self.teacher_file = freeze_teacher(teacher).to(self.device) if teacher is not None else None
        self.phases: tuple[Phase, ...] = plan_phases(cfg, tutor_path)
        self.use_amp = bool(tc.amp and self.device.type == "cuda")
        self.model_kind = "hrnet" if tc.model == "teacher" and arch is None else "segnet"
        self.baseline: dict[str, Any] | None = None  # {"family", "width", "depth"} of a hand-designed network
        if tc.model == "baseline":
            self.model_kind = "baseline"
            self.baseline = {"family": tc.baseline, "width": tc.baseline_width, "depth": tc.baseline_depth}
        self.finished: dict[str, dict[str, torch.Tensor]] = {}
        self.start_phase, self.start_epoch, self.rows = 0, 0, 0
        self._resume: dict[str, Any] | None = None
        self.last_scores: SegScores | None = None

    def _deploy_hw(self) -> tuple[int, int]:
        """The input size the model file records (export and predict default to it): a searched or hand-designed
        student's is the size its latency was priced at, a teacher's the size it was trained at."""
        if self.model_kind == "hrnet":
            return tuple(self.cfg.data.image_size)  # type: ignore[return-value]
        return tuple(self.cfg.latency.input_hw)  # type: ignore[return-value]

    # ------------------------------------------------------------------ building
    def _build_model(self, role: str) -> nn.Module:
        if self.baseline is not None:
            b = self.baseline
            return build_baseline(b["family"], self.info.num_classes, width=b["width"], depth=b["depth"])
        if role == "teacher" and self.arch is None:
            return build_hrnet(self.cfg.train.hrnet_preset, self.info.num_classes)
        assert self.arch is not None
        if role == "tutor":
            return build_tutor(self.arch, path=self.tutor_path or 8, blocks=self.cfg.distill.tutor_blocks)
        return build_network(self.arch, aux_heads=True)

    def _probe(self, model: nn.Module, teacher: nn.Module) -> tuple[dict[str, torch.Size], dict[str, torch.Size]]:
        """Output shapes of one eval-mode forward pass of both models (no BatchNorm statistics change)."""
        x = torch.zeros(1, 3, *self.cfg.data.image_size, device=self.device)
        model.eval()
        with torch.no_grad():
            s = {k: v.shape for k, v in model(x).items()}
            t = {k: v.shape for k, v in teacher(x).items()}
        model.train()
        return s, t

    def _setup_phase(self, idx: int) -> _PhaseState:
        cfg, phase = self.cfg, self.phases[idx]
        torch.manual_seed(_seed(cfg.run.seed, idx, -1))
        model = self._build_model(phase.role).to(self.device)
        if not cfg.space.icnr:
            init_pixel_shuffle(model, icnr=False)
        okddip = None
        if phase.role == "student" and cfg.distill.online == "okddip":
            group, okddip = online_peers(cfg.distill, model, phase.epochs, self.info.ignore_index)
            model = group.to(self.device)
        model = dist.convert_sync_batchnorm(model, cfg.run.sync_bn)
        teacher: nn.Module | None = None
        if phase.teacher_from == "file":
            teacher = self.teacher_file
        elif phase.teacher_from == "tutor":
            tutor = self._build_model("tutor")
            tutor.load_state_dict(self.finished["tutor"])
            teacher = freeze_teacher(tutor).to(self.device)
        criterion = None
        if teacher is not None:
            criterion = DistillationCriterion(kd_terms(cfg.distill, self.info.num_classes, self.info.ignore_index))
            criterion.build(*self._probe(model, teacher)).to(self.device)
        params = [*model.parameters(), *(criterion.student_parameters() if criterion is not None else [])]
        tc = cfg.train
        optimizer = make_optimizer(tc.optimizer, params, tc.lr, tc.momentum, tc.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        dist.broadcast_module(model, criterion)  # the same start on every rank
        if criterion is not None:
            dist.average_grads_before_step(*(m.optimizer for _, m in criterion.losses.items()
                                             if isinstance(m, HolisticAdversarial)))
        model.train()
        return _PhaseState(model, teacher, criterion, optimizer, scaler, params, okddip)

    def _loader(self, idx: int, epoch: int, salt: int):
        return dist.shard_loader(build_loader(self.cfg.data, "train", shuffle=True, dataset=self.train_ds,
                                              seed=_seed(self.cfg.run.seed, idx, epoch, salt), drop_last=True))

    # ------------------------------------------------------------------ steps
    def _step(self, st: _PhaseState, batch: dict[str, torch.Tensor], epoch: int, progress: float,
              lr: float) -> dict[str, float]:
        tc = self.cfg.train
        for group in st.optimizer.param_groups:
            group["lr"] = lr
        image = batch["image"].to(self.device, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            out = st.model(image)
            t_out = st.teacher(image) if st.teacher is not None else None
        out = {k: v.float() for k, v in out.items()}
        seg = self.ohem(out["logits"], label)
        aux_keys = sorted(k for k in out if k.startswith("aux"))
        aux = sum((self.ce(out[k], label) for k in aux_keys), torch.zeros((), device=self.device))
        loss = seg + tc.aux_weight * aux
        logs = {"loss_seg": seg.item(), "loss_aux": aux.item()}
        if st.criterion is not None and t_out is not None:
            t_out = {k: v.float() for k, v in t_out.items()}
            try:
                kd, values = st.criterion(out, t_out, epoch=epoch, progress=progress, mask=label, image=image)
            except FloatingPointError as exc:
                raise UserError(f"distillation diverged: {str(exc).splitlines()[0][:200]}") from None
            loss = loss + kd
            logs["loss_kd"] = kd.item()
            logs.update({f"kd_{k}": float(v) for k, v in values.items()})
        if st.okddip is not None:
            okd, okd_logs = st.okddip(out, label, self.ohem, epoch=epoch, progress=progress)
            loss = loss + okd
            logs.update(okd_logs)
        check_finite(loss, "training loss", "lower train.lr", epoch, self.run.file(CHECKPOINT))
        st.optimizer.zero_grad(set_to_none=True)
        st.scaler.scale(loss).backward()
        dist.all_reduce_grads(st.optimizer)
        if tc.grad_clip > 0:
            st.scaler.unscale_(st.optimizer)
            nn.utils.clip_grad_norm_(st.params, tc.grad_clip)
        st.scaler.step(st.optimizer)
        st.scaler.update()
        if st.adversarial and t_out is not None:
            detached = {k: v.detach() for k, v in out.items()}
            try:
                stats = st.criterion.discriminator_step(image, detached, t_out, epoch=epoch, progress=progress)
            except FloatingPointError as exc:
                raise UserError(f"distillation diverged: {str(exc).splitlines()[0][:200]}") from None
            logs.update({k.replace("/", "_"): v for k, v in stats.items()})
        logs["loss"] = loss.item()
        return logs

    def _train_epoch(self, idx: int, st: _PhaseState, epoch: int) -> dict[str, Any]:
        cfg, phase = self.cfg, self.phases[idx]
        torch.manual_seed(_seed(cfg.run.seed, idx, epoch, 17))
        n_iters = cfg.train.iters_per_epoch or len(self._loader(idx, epoch, 0))
        total = phase.epochs * n_iters
        sums: dict[str, float] = {}
        lr = cfg.train.lr
        t0 = time.perf_counter()
        bar = tqdm(total=n_iters, desc=f"{phase.role} {epoch + 1}/{phase.epochs}", leave=False,
                   disable=None if dist.is_main() else True)
        it, salt = 0, 0
        st.model.train()
        try:
            while it < n_iters:
                for batch in self._loader(idx, epoch, salt):
                    if it >= n_iters:
                        break
                    lr = cfg.train.lr * (1 - (epoch * n_iters + it) / total) ** _POLY_POWER
                    logs = self._step(st, batch, epoch, it / n_iters, lr)
                    for k, v in logs.items():
                        sums[k] = sums.get(k, 0.0) + v
                    it += 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{sums['loss'] / it:.3f}")
                    if cfg.run.log_every and it % cfg.run.log_every == 0:
                        log.debug("%s epoch %d iter %d/%d loss %.4g", phase.role, epoch, it, n_iters,
                                  sums["loss"] / it)
                salt += 1
        finally:
            bar.close()
        sums = dist.average_dict(sums)
        dist.average_buffers(st.model, st.criterion)  # BatchNorm running statistics: the same model on every rank
        row: dict[str, Any] = {"phase": phase.role, "epoch": epoch, "lr": lr, "seconds": time.perf_counter() - t0}
        row.update({k: v / max(1, it) for k, v in sums.items()})
        last = epoch == phase.epochs - 1
        if last or (cfg.train.eval_every > 0 and (epoch + 1) % cfg.train.eval_every == 0):
            self.last_scores = self._evaluate(st.model)
            row["val_miou"] = self.last_scores.miou
            row["val_pixel_acc"] = self.last_scores.pixel_acc
            row.update({f"val_miou_{b}": v for b, v in self.last_scores.size_miou.items()})
        return row

    def _evaluate(self, model: nn.Module) -> SegScores:
        loader = dist.shard_loader(build_loader(self.cfg.data, "val", shuffle=False, dataset=self.val_ds))
        return evaluate(model, loader, self.info.num_classes, self.device, size_buckets=self.info.size_buckets,
                        ignore_index=self.info.ignore_index, combine=dist.sum_confusion)

    # ------------------------------------------------------------------ checkpoints
    def state(self, idx: int, epoch: int, st: _PhaseState) -> dict[str, Any]:
        phase = self.phases[idx]
        finished = dict(self.finished)
        if phase.role == "tutor" and epoch == phase.epochs - 1:
            finished["tutor"] = st.model.state_dict()
        return {
            "kind": "train",
            "phase": idx,
            "role": phase.role,
            "epoch": epoch,
            "rows": self.rows,
            "model_kind": self.model_kind,
            "arch": _arch_key(self.arch),
            "hrnet_preset": self.cfg.train.hrnet_preset if self.model_kind == "hrnet" else None,
            "baseline": self.baseline,
            "phases": [[p.role, p.epochs] for p in self.phases],
            "tutor_path": self.tutor_path,
            "model": st.model.state_dict(),
            "optimizer": st.optimizer.state_dict(),
            "optimizer_kind": self.cfg.train.optimizer,
            "scaler": st.scaler.state_dict(),
            "criterion": st.criterion.state_dict() if st.criterion is not None else {},
            "disc_optimizers": {k: m.optimizer.state_dict() for k, m in st.adversarial},
            "finished": finished,
            "config_hash": config_hash(self.cfg),
        }

    def load(self, state: dict[str, Any], path: Path) -> None:
        """Continue after the checkpoint `state` (validated against this job)."""
        if state.get("kind") != "train":
            raise UserError(f"{path} is not a training checkpoint")
        theirs = state.get("baseline")
        if self.baseline is not None and state.get("model_kind") == "baseline" and theirs != self.baseline:
            raise UserError(f"checkpoint {path} holds another baseline ({_baseline_name(theirs)}) "
                            f"than the one given ({_baseline_name(self.baseline)}): pass the same --baseline / "
                            "--width / train.baseline_depth, or choose another --name")
        if state.get("model_kind") != self.model_kind or state.get("arch") != _arch_key(self.arch) or (
            self.model_kind == "hrnet" and state.get("hrnet_preset") != self.cfg.train.hrnet_preset
        ):
            raise UserError(f"checkpoint {path} belongs to another architecture than the one given: "
                            "pass the same --arch / --model, or choose another --name")
        if [tuple(p) for p in state.get("phases", [])] != [(p.role, p.epochs) for p in self.phases]:
            raise UserError(f"checkpoint {path} was written by another training plan "
                            f"({state.get('phases')}): keep the same epochs and tutor settings to resume")
        saved_opt = state.get("optimizer_kind", "sgd")  # checkpoints from before train.optimizer are SGD
        if saved_opt != self.cfg.train.optimizer:
            raise UserError(f"checkpoint {path} was trained with train.optimizer={saved_opt}, not "
                            f"{self.cfg.train.optimizer}: resume with the same optimiser")
        self.finished = dict(state.get("finished", {}))
        self.rows = int(state["rows"])
        idx, epoch = int(state["phase"]), int(state["epoch"])
        if epoch >= self.phases[idx].epochs - 1:
            self.start_phase, self.start_epoch = idx + 1, 0
        else:
            self.start_phase, self.start_epoch = idx, epoch + 1
        self._resume = state

    def _restore(self, st: _PhaseState, state: dict[str, Any]) -> None:
        try:
            st.model.load_state_dict(state["model"])
            st.optimizer.load_state_dict(state["optimizer"])
            st.scaler.load_state_dict(state["scaler"])
            if st.criterion is not None:
                st.criterion.load_state_dict(state["criterion"])
            for k, m in st.adversarial:
                m.optimizer.load_state_dict(state["disc_optimizers"][k])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise UserError("the training checkpoint does not match this configuration: "
                            f"{str(exc).splitlines()[0][:160]}") from None

    # ------------------------------------------------------------------ the job
    def run_all(self) -> tuple[nn.Module, SegScores]:
        """Train the remaining phases; returns the last phase's model and its final val scores."""
        metrics = self.run.metrics
        if dist.is_main():
            metrics.truncate(self.rows)
        st: _PhaseState | None = None
        for idx in range(self.start_phase, len(self.phases)):
            phase = self.phases[idx]
            st = self._setup_phase(idx)
            first = 0
            if self._resume is not None and int(self._resume["phase"]) == idx:
                self._restore(st, self._resume)
                first = self.start_epoch
            log.info("phase %d/%d: %s for %d epochs%s", idx + 1, len(self.phases), phase.role, phase.epochs,
                     f" (from epoch {first})" if first else "")
            for epoch in range(first, phase.epochs):
                row = self._train_epoch(idx, st, epoch)
                self.rows += 1
                if dist.is_main():
                    metrics.append(row)
                    save_checkpoint(self.run.file(CHECKPOINT), self.state(idx, epoch, st))
                dist.dump_rank_state(self.run.path, phase.role, st.model)
                log.info("%s epoch %d/%d: %s", phase.role, epoch + 1, phase.epochs,
                         ", ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float)))
            if phase.role == "tutor":
                self.finished["tutor"] = st.model.state_dict()
        if st is None:  # resumed a finished job: rebuild its last model
            last = len(self.phases) - 1
            st = self._setup_phase(last)
            assert self._resume is not None
            self._restore(st, self._resume)
        if self.last_scores is None:
            self.last_scores = self._evaluate(st.model)
        return st.model, self.last_scores

    def write_outputs(self, model: nn.Module, scores: SegScores) -> TrainResult:
        """`model.pt` (deployable: an OKDDip group's leader only) and `scores.json`."""
        cfg, info = self.cfg, self.info
        model = leader_of(model)
        meta = {"config_hash": config_hash(cfg), "seed": cfg.run.seed, "role": self.phases[-1].role,
                "dataset": info.name, "dataset_version": dataset_version(cfg.data),
                "train_hw": list(cfg.data.image_size),
                "epochs": cfg.train.epochs, "kd": list(cfg.distill.losses), "tutor_path": self.tutor_path,
                "online": cfg.distill.online, "val_miou": scores.miou}
        model_path = self.run.file("model.pt")
        scores_path = self.run.file("scores.json")
        params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("aux"))
        files = tuple(self.run.file(n) for n in ("model.pt", "scores.json", "metrics.csv", CHECKPOINT,
                                                   "config.yaml", "log.txt"))
        if not dist.is_main():  # rank 0 writes the outputs
            return TrainResult(self.run, model_path, scores_path, scores, info.class_names, params, files)
        save_model(
            model_path, model, self.model_kind, info.num_classes,
            arch=self.arch.to_dict() if self.arch is not None else None,
            hrnet={"preset": cfg.train.hrnet_preset} if self.model_kind == "hrnet" else None,
            baseline=self.baseline,
            class_names=info.class_names, palette=info.palette, input_hw=self._deploy_hw(), meta=meta,
        )
        atomic_write_json(scores_path, {
            "miou": _nan_to_none(scores.miou),
            "pixel_acc": _nan_to_none(scores.pixel_acc),
            "per_class": {n: _nan_to_none(v) for n, v in zip(info.class_names, scores.iou)},
            "per_size": {b: _nan_to_none(v) for b, v in scores.size_miou.items()},
            "params": params,
            "model": str(model_path),
            **meta,
        })
        return TrainResult(self.run, model_path, scores_path, scores, info.class_names, params, files)


def _check_baseline(cfg: ExperimentConfig, arch_path: str | Path | None) -> None:
    """`--model baseline`: a registered family, finite multipliers > 0, no architecture file."""
    tc = cfg.train
    if tc.baseline not in BASELINES:
        raise UserError(f"train.baseline: unknown baseline family {tc.baseline!r} "
                        f"(known: {', '.join(BASELINES.names())})")
    for key, value in (("baseline_width", tc.baseline_width), ("baseline_depth", tc.baseline_depth)):
        if not (math.isfinite(value) and value > 0):
            raise UserError(f"train.{key} must be a finite number > 0, got {value}")
    if arch_path is not None:
        raise UserError("--arch was given but --model baseline trains a hand-designed network "
                        f"(train.baseline={tc.baseline}): leave --arch out, or use --model student")


def check_train_config(cfg: ExperimentConfig) -> None:
    """The training checks that need neither files nor data: schedule, KD losses and online KD settings."""
    tc, dc = cfg.train, cfg.distill
    info = dataset_info(cfg.data)
    if tc.epochs < 1:
        raise UserError(f"train.epochs must be positive, got {tc.epochs}")
    if tc.iters_per_epoch < 0:
        raise UserError(f"train.iters_per_epoch cannot be negative, got {tc.iters_per_epoch}")
    kd_terms(dc, info.num_classes, info.ignore_index)
    check_online(cfg)
    if tc.model == "baseline":
        _check_baseline(cfg, None)


def _validate(cfg: ExperimentConfig, arch_path: str | Path | None) -> tuple[Architecture | None, int | None]:
    """Check everything a job needs before it writes anything; returns (architecture, tutor path)."""
    tc, dc = cfg.train, cfg.distill
    info = dataset_info(cfg.data)
    check_train_config(cfg)
    if dc.losses and not dc.teacher:
        raise UserError(f"KD losses {list(dc.losses)} need a teacher model file: pass --teacher MODEL.pt "
                        "(distill.teacher), e.g. the model.pt of `nas train --model teacher`")
    arch = None
    if tc.model == "baseline":
        _check_baseline(cfg, arch_path)
    elif tc.model == "student" or tc.teacher_arch == "searched":
        if arch_path is None:
            raise UserError(f"training a {'student' if tc.model == 'student' else 'searched teacher'} needs "
                            "--arch ARCH.json")
        arch = load_architecture(arch_path)
        if arch.space.num_classes != info.num_classes:
            raise UserError(f"architecture {arch_path} has {arch.space.num_classes} classes but the dataset "
                            f"{info.name} has {info.num_classes}")
    elif arch_path is not None:
        raise UserError("--arch was given but train.teacher_arch is 'hrnet': set train.teacher_arch=searched to "
                        "train a searched teacher")
    elif tc.hrnet_preset not in HRNET_PRESETS:
        raise UserError(f"unknown train.hrnet_preset '{tc.hrnet_preset}' (known: {', '.join(HRNET_PRESETS)})")
    return arch, tutor_path_for(cfg, arch)


def run_train(cfg: ExperimentConfig, arch_path: str | Path | None = None, resume: bool = False) -> TrainResult:
    """Train (or resume) a student from `arch_path`, a teacher (`cfg.train.model == "teacher"`) or a baseline
    family (`"baseline"`: `train.baseline` at `train.baseline_width` / `baseline_depth`) in :func:`train_dir`;
    returns the deployable model's path and its final val scores.

    Refused with a one-line :class:`UserError` before anything is written: an invalid architecture file, an
    unknown baseline family or multiplier, KD losses without a teacher, a teacher or architecture for another
    number of classes, a checkpoint of another architecture (or baseline family / width), `resume` without a
    checkpoint, or a fresh start over an existing one.
    """
    dist.setup(cfg.run.device)
    arch, tutor_path = _validate(cfg, arch_path)
    info = dataset_info(cfg.data)
    teacher = None
    if cfg.distill.losses:
        teacher, _ = load_teacher(cfg.distill.teacher, info.num_classes,  # type: ignore[arg-type]
                                  class_names=info.class_names, dataset_version=dataset_version(cfg.data))
    path = train_dir(cfg)
    ckpt = path / CHECKPOINT
    state = dist.from_main(lambda: resume_checkpoint(ckpt, resume, "a training run"))
    if cfg.distill.teacher and not cfg.distill.losses:
        log.warning("a teacher is given but distill.losses is empty: training without distillation")
    run = RunDir(path)
    job = TrainJob(cfg, run, arch, teacher, tutor_path)
    if state is not None:
        job.load(state, ckpt)
    if dist.is_main():  # written only once the job and its checkpoint are accepted: a refusal leaves no trace
        RunDir.create(cfg, root=path.parent, name=path.name)
    if state is not None:
        if state.get("config_hash") != config_hash(cfg):
            log.warning("resuming with a configuration that differs from the checkpoint's")
        log.info("resuming %s at phase %d epoch %d", run.path, job.start_phase, job.start_epoch)
    model, scores = job.run_all()
    return job.write_outputs(model, scores)


def train_or_reuse(cfg: ExperimentConfig, arch_path: str | Path | None = None) -> dict[str, Any]:
    """The val scores (``scores.json``) of the run `cfg` names: read when it finished before, else trained,
    resuming an interrupted run from its checkpoint. What benchmarks and ablations call per row."""
    out = train_dir(cfg)
    if (out / "scores.json").is_file():
        return json.loads((out / "scores.json").read_text())
    result = run_train(cfg, arch_path, resume=(out / CHECKPOINT).is_file())
    return json.loads(result.scores_path.read_text())
