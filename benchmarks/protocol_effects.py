"""The measured effects behind ``docs/protocol.md`` (not a test; prints figures).

On the synthetic preset's 100 test images with its shipped classifier, Explainer and
RT-Saliency and its method settings, for the methods named by ``--methods``:

* pointing game: the previous rule (segmentation region, distance <= tolerance, all-zero maps
  undefined), the same with the strict ``<``, and the protocol now used (union of the class's
  boxes, ``<``, every finite map scored);
* merge order: mean_f1 on the images with several classes, with the class maps rescaled before
  the max and with the max before the rescale (only differs for methods that rescale);
* saliency metric: the GT-probability sum over distinct classes and over objects;
* class specificity: the off-diagonal summary as a mean over images and as the paper's mean of
  the matrix cells (mean over classes);
* all-zero class maps: how many each method returns (they are scored now).

Usage: ``python benchmarks/protocol_effects.py [--methods gradcam,center] [--limit 100]``
"""

from __future__ import annotations

import argparse
import math

import torch

from attrbench.assemble import build_methods
from attrbench.catalog import METHODS
from attrbench.config import image_seed
from attrbench.data import collate_samples, open_dataset
from attrbench.evaluate import run_method_on_batch
from attrbench.interfaces import EvalBatch, minmax_rescale
from attrbench.metrics import pointing as P
from attrbench.metrics.localization import MeanF1
from attrbench.metrics.perturbation import SaliencyMetric
from attrbench.metrics.specificity import ClassSpecificityOffDiag
from attrbench.models import load_classifier
from attrbench.presets import SYNTHETIC, resolve_weights

DEFAULT = ("explainer,rt_saliency,gradcam,gradcam_pp,rise,extremal_perturbations,"
           "guided_backprop,igos_pp,center,random")


def _mean(vals) -> float:
    vals = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else math.nan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=DEFAULT)
    ap.add_argument("--limit", type=int, default=100)
    args = ap.parse_args()
    torch.manual_seed(0)
    ds = open_dataset(SYNTHETIC, "test", limit=args.limit)
    model, meta = load_classifier(resolve_weights(SYNTHETIC.classifier_weights))
    model.eval()
    names = METHODS.resolve_list(args.methods.split(","))
    methods = build_methods(names, model, SYNTHETIC, {}, meta, ds.num_classes)
    batch = collate_samples([ds[i] for i in range(len(ds))])
    tol = SYNTHETIC.data_metric_options["pointing_game"]["tolerance"]
    multi = ((batch.labels > 0.5).sum(1) > 1).nonzero().flatten()
    print(f"{len(ds)} images, {len(multi)} with several classes; tolerance {tol:.3f} px")
    header = ("method", "pg old", "pg <", "pg new", "f1 multi: rescale>max", "max>rescale",
              "sal classes", "sal objects", "offdiag per-image", "per-class", "zero maps")
    print(" | ".join(header))
    for name, method in methods.items():
        seeds = torch.tensor([image_seed(i, 0) for i in batch.image_ids])
        raw, errors, _ = run_method_on_batch(method, batch, seeds, torch.device("cpu"))
        assert all(e is None for e in errors), errors
        pi, pc = torch.nonzero(batch.labels > 0.5, as_tuple=True)
        cm, merged = method.merge_pairs(raw, pi, len(batch))
        eb = EvalBatch(images=batch.images, labels=batch.labels, pair_image=pi, pair_class=pc,
                       class_masks=cm, merged=merged, gt_masks=batch.masks, has_gt=batch.has_gt,
                       boxes=batch.boxes, originals=batch.originals, model=model, method=method,
                       method_name=name, seeds=seeds, image_ids=batch.image_ids)
        # pointing: previous rule (segmentation, <=, all-zero undefined) -> strict -> boxes
        seg = batch.masks[pi, pc]
        zero = (cm.flatten(1) == 0).all(1)
        old = P.pointing_game(cm, seg, tol + 1e-6)
        old[zero] = math.nan
        strict = P.pointing_game(cm, seg, tol)
        pg_old = P.PointingGame.aggregate(_per_image(old, pi, pc, len(batch)))
        pg_strict = P.PointingGame.aggregate(_per_image(strict, pi, pc, len(batch)))
        pg_new = P.PointingGame.aggregate(P.PointingGame(tolerance=tol).score(eb))
        # merge order on the multi-class images
        f1 = MeanF1()
        a = EvalBatch.merge(minmax_rescale(raw) if method.merge == "max_then_rescale" else raw,
                            pi, len(batch))
        b = minmax_rescale(EvalBatch.merge(raw, pi, len(batch))) \
            if method.merge == "max_then_rescale" else a
        f1_a = _mean([f1.score(_with_merged(eb, a))[i] for i in multi.tolist()])
        f1_b = _mean([f1.score(_with_merged(eb, b))[i] for i in multi.tolist()])
        sal_c = _mean(SaliencyMetric(count="classes").score(eb))
        sal_o = _mean(SaliencyMetric(count="objects").score(eb))
        if name in ("extremal_perturbations", "igos_pp"):
            off_img = off_cls = math.nan
        else:
            spec = ClassSpecificityOffDiag(thresholds=[0.5])
            vals = spec.score(eb)
            off_img = _mean([spec.image_value(v) for v in vals])
            off_cls = spec.aggregate(vals)
        row = (name, pg_old, pg_strict, pg_new, f1_a, f1_b, sal_c, sal_o, off_img, off_cls,
               int(zero.sum()))
        print(" | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row),
              flush=True)


def _per_image(values, pi, pc, n):
    return [{int(c): float(x) for c, x, p in zip(pc, values, pi) if p == b} for b in range(n)]


def _with_merged(eb: EvalBatch, merged: torch.Tensor) -> EvalBatch:
    import dataclasses

    return dataclasses.replace(eb, merged=merged, extras={})


if __name__ == "__main__":
    main()
