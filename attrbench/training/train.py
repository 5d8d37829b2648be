"""Training of classifiers and Explainers on PyTorch Lightning (one training path for every
preset; ``--devices/--strategy/--precision`` go straight to the Lightning ``Trainer``).

* Classifier: BCE-with-logits, Adam, early stopping on ``val_loss`` (patience and min_delta of the
  preset), best-``val_loss`` checkpoint; test-split mAP reported.
* Explainer: the paper's loss (:func:`attrbench.training.losses.explainer_loss`) or the adapted
  Real-Time Saliency loss, against a frozen classifier kept in eval mode throughout.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data import open_dataset
from ..models import (
    build_classifier,
    build_explainer_net,
    fingerprint,
    load_classifier,
    save_classifier,
    save_explainer,
)
from ..presets import Preset, resolve_weights
from .losses import explainer_loss, rt_saliency_alternative, rt_saliency_loss


def _collate_xy(samples):
    return torch.stack([s.image for s in samples]), torch.stack([s.labels for s in samples])


def _loaders(preset: Preset, data_root: str | None, batch_size: int, limit: int | None = None):
    train = open_dataset(preset, "train", data_root=data_root, segmentation="none", cache=True,
                         limit=limit)
    val = open_dataset(preset, "val", data_root=data_root, segmentation="none", cache=True,
                       limit=None if limit is None else max(limit // 5, 8))
    g = torch.Generator().manual_seed(preset.classifier_train.seed)
    tl = DataLoader(train, batch_size=batch_size, shuffle=True, collate_fn=_collate_xy,
                    generator=g, num_workers=0)
    vl = DataLoader(val, batch_size=batch_size * 2, shuffle=False, collate_fn=_collate_xy)
    return train, tl, vl


def _lightning():
    return pl


def mean_average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Macro mean over classes of average precision (classes without positives skipped)."""
    aps = []
    for k in range(labels.shape[1]):
        y = labels[:, k] > 0.5
        if not y.any():
            continue
        order = torch.argsort(scores[:, k], descending=True, stable=True)
        yk = y[order].float()
        tp = yk.cumsum(0)
        precision = tp / torch.arange(1, len(yk) + 1)
        aps.append(float((precision * yk).sum() / yk.sum()))
    return sum(aps) / len(aps) if aps else float("nan")


def _optimizers(module, params, settings):
    opt = torch.optim.Adam(params, lr=settings.lr)
    if getattr(settings, "schedule", "constant") == "onecycle":
        total = int(module.trainer.estimated_stepping_batches)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
    return opt


class ClassifierModule(pl.LightningModule):
    """BCE-with-logits training of a multi-label classifier (horizontal-flip augmentation only
    for the synthetic preset, whose labels are flip-invariant; the paper uses none)."""

    def __init__(self, model: nn.Module, settings, flip: bool = True) -> None:
        super().__init__()
        self.model = model
        self.settings = settings
        self.flip = flip
        self.loss_fn = nn.BCEWithLogitsLoss()

    def forward(self, x):
        return self.model(x)

    def _step(self, batch, stage):
        x, y = batch
        if stage == "train" and self.flip:
            flip = torch.rand(x.shape[0], device=x.device) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = self.loss_fn(self.model(x), y)
        self.log(f"{stage}_loss", loss, prog_bar=True, on_epoch=True, on_step=stage == "train",
                 batch_size=x.shape[0], sync_dist=stage != "train")
        return loss

    def training_step(self, batch, _):
        return self._step(batch, "train")

    def validation_step(self, batch, _):
        return self._step(batch, "val")

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        return _optimizers(self, params, self.settings)


def _trainer(out: Path, settings, devices, strategy, precision, max_epochs, max_steps,
             progress: bool, accelerator: str = "auto"):
    pl = _lightning()
    if strategy and "spawn" in str(strategy):
        # spawned workers receive the module's tensors; fd passing fails in some sandboxes
        torch.multiprocessing.set_sharing_strategy("file_system")
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", monitor="val_loss", mode="min",
                           save_top_k=1, save_last=True, filename="best")
    es = EarlyStopping(monitor="val_loss", patience=settings.patience, min_delta=settings.min_delta,
                       mode="min", check_on_train_epoch_end=False)
    return pl.Trainer(
        default_root_dir=str(out), max_epochs=max_epochs or settings.max_epochs,
        max_steps=max_steps if max_steps else -1, callbacks=[ckpt, es],
        logger=CSVLogger(str(out), name="logs"), devices=devices, strategy=strategy,
        precision=precision, accelerator=accelerator, enable_progress_bar=progress,
        enable_model_summary=False, deterministic=False, log_every_n_steps=10,
        num_sanity_val_steps=0,
    ), ckpt


def _fit(module, tl, vl, out, settings, devices, strategy, precision, max_epochs, max_steps,
         progress, accelerator, resume):
    """Fit with early stopping, then load the best-val-loss weights back into ``module``."""
    trainer, ckpt = _trainer(out, settings, devices, strategy, precision, max_epochs, max_steps,
                             progress, accelerator)
    t0 = time.perf_counter()
    trainer.fit(module, tl, vl, ckpt_path=resume, weights_only=True)
    seconds = time.perf_counter() - t0
    if ckpt.best_model_path:
        best = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(best["state_dict"])
    return trainer, seconds, ckpt


def train_classifier(
    preset: Preset, out: str | Path, *, data_root: str | None = None, devices: Any = 1,
    strategy: str = "auto", precision: str = "32-true", max_epochs: int | None = None,
    max_steps: int | None = None, limit: int | None = None, resume: str | None = None,
    progress: bool = True, accelerator: str = "auto", imagenet_weights: str | None = None,
) -> dict[str, Any]:
    """Train the preset's classifier; writes ``classifier.pt`` and ``train_summary.json``.

    The paper's classifiers (``vgg16``, ``resnet50``) need ImageNet weights: from
    ``imagenet_weights`` or the local torch hub cache; a clear error names the file otherwise.
    """
    pl = _lightning()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = preset.classifier_train
    pl.seed_everything(s.seed, workers=True)
    train, tl, vl = _loaders(preset, data_root, s.batch_size, limit)
    kwargs: dict[str, Any] = {}
    if preset.classifier in ("vgg16", "resnet50"):
        kwargs = {"imagenet_weights": imagenet_weights, "require_imagenet": True}
    model = build_classifier(preset.classifier, train.num_classes, **kwargs)
    module = ClassifierModule(model, s, flip=preset.dataset == "synthetic")
    trainer, seconds, ckpt = _fit(module, tl, vl, out, s, devices, strategy, precision,
                                  max_epochs, max_steps, progress, accelerator, resume)
    model = module.model.cpu().eval()
    summary: dict[str, Any] = {"train_seconds": round(seconds, 1),
                               "epochs": trainer.current_epoch,
                               "best_val_loss": float(ckpt.best_model_score or float("nan"))}
    if trainer.is_global_zero:
        test = open_dataset(preset, preset.split, data_root=data_root, segmentation="none",
                            limit=limit)
        summary["test_map"] = evaluate_map(model, test)
        save_classifier(model, out / "classifier.pt", preset.classifier, list(train.classes),
                        preset=preset.name, **summary)
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


@torch.no_grad()
def evaluate_map(model: nn.Module, dataset, batch_size: int = 256) -> float:
    model.eval()
    scores, labels = [], []
    for x, y in DataLoader(dataset, batch_size=batch_size, collate_fn=_collate_xy):
        scores.append(model(x))
        labels.append(y)
    return mean_average_precision(torch.cat(scores), torch.cat(labels))


class EncoderClassifier(nn.Module):
    """An Explainer network's encoder + global average pool + linear layer: the multi-label
    classifier used to pretrain the encoder (:class:`~attrbench.presets.ExplainerRecipe`)."""

    def __init__(self, net: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.net = net
        self.fc = nn.Linear(net.widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net.encode(x)[-1].mean(dim=(2, 3)))


def pretrain_encoder(net: nn.Module, preset: Preset, out: Path, data_root: str | None,
                     limit: int | None, progress: bool, accelerator: str) -> dict[str, Any]:
    """Pretrain ``net``'s encoder as a multi-label classifier of the training split's labels
    (in place). Reuses ``out/encoder.pt`` when a previous run already wrote it."""
    from ..presets import TrainSettings

    r = preset.explainer_recipe
    if not hasattr(net, "encode"):
        raise ValueError(f"encoder pretraining needs a network with an encode() method; "
                         f"'{preset.explainer_arch}' has none (set pretrain_epochs=0)")
    out.mkdir(parents=True, exist_ok=True)
    done = out / "encoder.pt"
    wrapper = EncoderClassifier(net, net.num_classes)
    if done.exists():
        wrapper.load_state_dict(torch.load(done, map_location="cpu", weights_only=True))
        return json.loads((out / "pretrain_summary.json").read_text())
    s = TrainSettings(lr=r.pretrain_lr, batch_size=r.pretrain_batch_size,
                      max_epochs=r.pretrain_epochs, patience=r.pretrain_epochs,
                      seed=preset.explainer_train.seed, schedule="onecycle")
    _, tl, vl = _loaders(preset, data_root, s.batch_size, limit)
    module = ClassifierModule(wrapper, s, flip=preset.dataset == "synthetic")
    trainer, seconds, _ = _fit(module, tl, vl, out, s, 1, "auto", "32-true", None, None,
                               progress, accelerator, None)
    val = open_dataset(preset, "val", data_root=data_root, segmentation="none",
                       limit=None if limit is None else max(limit // 5, 8))
    summary = {"pretrain_seconds": round(seconds, 1), "pretrain_epochs": trainer.current_epoch,
               "pretrain_val_map": evaluate_map(wrapper.eval(), val)}
    torch.save(wrapper.state_dict(), done)
    (out / "pretrain_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _explainer_setup(preset: Preset, classifier_checkpoint: str | None, data_root: str | None,
                     batch_size: int, limit: int | None, imagenet_weights: str | None):
    """Seed, data loaders, the frozen classifier and a new Explainer network, in this order
    (the order fixes the random stream, so training is reproducible run to run)."""
    pl = _lightning()
    pl.seed_everything(preset.explainer_train.seed, workers=True)
    train, tl, vl = _loaders(preset, data_root, batch_size, limit)
    ck_path = classifier_checkpoint or resolve_weights(preset.classifier_weights)
    if ck_path is None:
        raise ValueError(f"preset '{preset.name}' has no classifier checkpoint; pass "
                         f"--classifier-checkpoint FILE")
    classifier, _ = load_classifier(ck_path, None, train.num_classes)
    net = build_explainer_net(preset.explainer_arch, train.num_classes, **(
        {"backbone_weights": imagenet_weights} if preset.explainer_arch == "deeplabv3_resnet50"
        else {}))
    return train, tl, vl, classifier, net


def train_encoder(preset: Preset, out: str | Path, *, classifier_checkpoint: str | None = None,
                  data_root: str | None = None, limit: int | None = None,
                  progress: bool = True, accelerator: str = "auto") -> dict[str, Any]:
    """Only the encoder pretraining of the preset's Explainer recipe, into ``out/pretrain``,
    where :func:`train_explainer` with the same ``out`` (or a copy of that folder) finds and
    reuses it; the same random stream as the pretraining inside :func:`train_explainer`."""
    if preset.explainer_recipe.pretrain_epochs <= 0:
        raise ValueError(f"preset '{preset.name}' pretrains no encoder (pretrain_epochs=0); "
                         f"pass --pretrain-epochs N")
    *_, net = _explainer_setup(preset, classifier_checkpoint, data_root,
                               preset.explainer_train.batch_size, limit, None)
    return pretrain_encoder(net, preset, Path(out) / "pretrain", data_root, limit, progress,
                            accelerator)


class ExplainerModule(pl.LightningModule):
    """Trains an Explainer network against a frozen classifier kept in eval mode throughout.

    ``encoder_lr_scale`` (:class:`~attrbench.presets.ExplainerRecipe`) scales the learning rate
    of the network's encoder; 0 freezes it, batch-norm statistics included.
    """

    def __init__(self, net: nn.Module, classifier: nn.Module, loss_weights, loss: str,
                 settings, encoder_lr_scale: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.classifier = classifier
        self.w = loss_weights
        self.loss = loss
        self.settings = settings
        self.encoder_lr_scale = encoder_lr_scale
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self.classifier.eval()
        if encoder_lr_scale == 0:
            for p in self._encoder_params():
                p.requires_grad_(False)

    def _encoder_params(self) -> list[nn.Parameter]:
        if self.encoder_lr_scale != 1.0 and not hasattr(self.net, "encoder_parameters"):
            raise ValueError("encoder_lr_scale != 1 needs a network with encoder_parameters()")
        return self.net.encoder_parameters() if self.encoder_lr_scale != 1.0 else []

    def train(self, mode: bool = True):  # the Explanandum (and a frozen encoder) stay in eval
        super().train(mode)
        self.classifier.eval()
        if self.encoder_lr_scale == 0:
            for m in self.net.enc:
                m.eval()
        return self

    def _step(self, batch, stage):
        x, y = batch
        seg = self.net(x)
        w = self.w
        if self.loss == "explainer":
            terms = explainer_loss(
                seg, x, y, self.classifier, entropy=w.entropy, tv=w.tv,
                area_constraint=w.area_constraint, target_area=w.target_area,
                nontarget_area=w.nontarget_area, class_min_area=w.class_min_area,
                class_max_area=w.class_max_area)
        else:
            terms = rt_saliency_loss(seg, x, y, self.classifier, alt=rt_saliency_alternative(x))
        for k, v in terms.items():
            self.log(f"{stage}_{k}" if k != "loss" else f"{stage}_loss", v,
                     prog_bar=k == "loss", on_epoch=True,
                     on_step=stage == "train" and k == "loss",
                     batch_size=x.shape[0], sync_dist=stage != "train")
        return terms["loss"]

    def training_step(self, batch, _):
        return self._step(batch, "train")

    def validation_step(self, batch, _):
        return self._step(batch, "val")

    def configure_optimizers(self):
        enc = {id(p) for p in self._encoder_params()}
        rest = [p for p in self.net.parameters() if id(p) not in enc]
        if not enc:
            return _optimizers(self, rest, self.settings)
        groups = [{"params": rest}]
        if self.encoder_lr_scale > 0:
            groups.append({"params": self._encoder_params(),
                           "lr": self.settings.lr * self.encoder_lr_scale})
        return _optimizers(self, groups, self.settings)


def train_explainer(
    preset: Preset, out: str | Path, *, classifier_checkpoint: str | None = None,
    loss: str = "explainer", data_root: str | None = None, devices: Any = 1,
    strategy: str = "auto", precision: str = "32-true", max_epochs: int | None = None,
    max_steps: int | None = None, limit: int | None = None, resume: str | None = None,
    progress: bool = True, accelerator: str = "auto", imagenet_weights: str | None = None,
) -> dict[str, Any]:
    """Train an Explainer (``loss="explainer"``) or RT-Saliency (``loss="rt_saliency"``)."""
    if loss not in ("explainer", "rt_saliency"):
        raise ValueError(f"loss must be 'explainer' or 'rt_saliency', got {loss!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    s = preset.explainer_train
    train, tl, vl, classifier, net = _explainer_setup(preset, classifier_checkpoint, data_root,
                                                      s.batch_size, limit, imagenet_weights)
    recipe = preset.explainer_recipe
    pre: dict[str, Any] = {}
    if recipe.pretrain_epochs > 0:
        pre = pretrain_encoder(net, preset, out / "pretrain", data_root, limit, progress,
                               accelerator)
    module = ExplainerModule(net, classifier, preset.explainer_loss, loss, s,
                             encoder_lr_scale=recipe.encoder_lr_scale)
    trainer, seconds, ckpt = _fit(module, tl, vl, out, s, devices, strategy, precision,
                                  max_epochs, max_steps, progress, accelerator, resume)
    summary = {"train_seconds": round(seconds, 1), "epochs": trainer.current_epoch,
               "best_val_loss": float(ckpt.best_model_score or float("nan")), "loss": loss,
               "recipe": dataclasses.asdict(recipe), **pre}
    if trainer.is_global_zero:
        name = "explainer.pt" if loss == "explainer" else "rt_saliency.pt"
        save_explainer(module.net.cpu(), out / name, preset.explainer_arch, train.num_classes,
                       fingerprint(classifier), loss, preset=preset.name,
                       **{k: v for k, v in summary.items() if k != "loss"})
        (out / f"train_summary_{loss}.json").write_text(json.dumps(summary, indent=2))
        log = Path(trainer.logger.log_dir) / "metrics.csv"
        if log.exists():
            from ..plots import plot_mask_areas

            plot_mask_areas(log, out / "figures", key=f"mask_areas_{loss}")
    return summary
