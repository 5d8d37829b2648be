"""The ``attrbench`` command line. Subcommands stay thin and import heavy
modules only when they run, so ``attrbench --help`` is instant.

Configuration errors (unknown names, bad options, missing files) print one line and exit 2;
``compare`` exits 1 on a regression.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _kv_options(items: list[str] | None, what: str) -> dict[str, dict[str, Any]]:
    """``--method-option rise.num_masks=500`` -> {"rise": {"num_masks": 500}} (JSON values).

    NAME is split from KEY at the last ``.`` before the first ``=``: a KEY is a Python keyword
    argument and never contains a dot, while a NAME may (``constant_0.5``, an import path such
    as ``mypkg.saliency:MyMethod``, an entry point named ``acme.sal``).
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        left, eq, value = item.partition("=")
        name, dot, key = left.rpartition(".")
        if not eq or not dot or not name or not key.isidentifier():
            raise ValueError(f"--{what}-option expects NAME.KEY=VALUE (KEY a keyword argument "
                             f"name), got '{item}'")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(name, {})[key] = parsed
    return out


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="run methods x metrics on a dataset and print the table")
    p.add_argument("--preset", default="synthetic", help="preset name (attrbench list presets)")
    p.add_argument("--data-root", help="dataset folder (VOC or COCO layout)")
    p.add_argument("--format", choices=["voc", "coco", "auto"], help="dataset format (default: preset's, or detected)")
    p.add_argument("--model", help="classifier: registry name or pkg.module:factory")
    p.add_argument("--checkpoint", help="classifier weights file")
    p.add_argument("--explainer-checkpoint", help="Explainer weights file")
    p.add_argument("--methods", help="comma-separated method names (default: all)")
    p.add_argument("--metrics", help="comma-separated metric names (default: all default metrics)")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--out", help="run folder (default results/runs/<preset>-<time>); an existing one is resumed")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--split", help="dataset split (default: the preset's, usually test)")
    p.add_argument("--image-size", type=int,
                   help="network input side (default: the preset's; 224 with --data-root/--model)")
    p.add_argument("--classes", help="class names of a VOC-layout dataset in id order, "
                                     "comma-separated (instead of its classes.txt)")
    p.add_argument("--method-option", action="append", metavar="NAME.KEY=VALUE",
                   help="override a method option, e.g. rise.num_masks=500 (repeatable)")
    p.add_argument("--metric-option", action="append", metavar="NAME.KEY=VALUE",
                   help="override a metric option, e.g. deletion_auc.steps=16 (repeatable)")
    p.add_argument("--reference", default="explainer",
                   help="method the paired comparison tests against (default: explainer)")
    p.add_argument("--no-report", action="store_true", help="skip figures and report.html")
    p.add_argument("--columns", metavar="all|a,b,c",
                   help="metrics of the printed table (default: the headline metrics, fitted to "
                        "100 columns); the run's files always hold every metric")
    p.add_argument("--devices", type=int, default=1,
                   help="evaluate on N processes (Lightning Fabric; gloo on CPU, NCCL on GPUs)")
    p.add_argument("--no-progress", action="store_true")


def _cmd_run(args) -> int:
    from .runner import RunConfig, format_summary, run

    cfg = RunConfig(
        preset=args.preset, data_root=args.data_root, format=args.format, model=args.model,
        checkpoint=args.checkpoint, explainer_checkpoint=args.explainer_checkpoint,
        methods=args.methods.split(",") if args.methods else None,
        metrics=args.metrics.split(",") if args.metrics else None, limit=args.limit,
        out=args.out, device=args.device, seed=args.seed, batch_size=args.batch_size,
        split=args.split, image_size=args.image_size,
        classes=args.classes.split(",") if args.classes else None,
        method_options=_kv_options(args.method_option, "method"),
        metric_options=_kv_options(args.metric_option, "metric"),
        progress=not args.no_progress, reference=args.reference, report=not args.no_report,
        devices=args.devices,
    )
    if args.columns and args.columns != "all":  # names that cannot be shown fail before the run
        from .catalog import METRICS

        for k in args.columns.split(","):
            METRICS.get(k.strip())
            if cfg.metrics and k.strip() not in cfg.metrics:
                raise ValueError(f"--columns names '{k.strip()}', which --metrics leaves out")
    out = run(cfg)
    print(format_summary(out, args.columns))
    print(f"\nrun folder: {out}")
    return 0


def _cmd_list(args) -> int:
    from .catalog import METHODS, METRICS, MODELS, PRESETS

    if args.what == "methods":
        for n in METHODS.names():
            al = METHODS.aliases(n)
            print(f"{n:24s} {METHODS.meta(n).get('summary', '')}"
                  + (f"  (aliases: {', '.join(al)})" if al else ""))
        print("captum:<Name>            any captum.attr attribution class")
        print("gradcam-lib:<Name>       any CAM of the grad-cam package (optional extra)")
        print("<package.module>:<Attr>  your AttributionMethod subclass or saliency function")
    elif args.what == "metrics":
        from .registry import RegistryError

        for n in METRICS.names():
            try:
                cls = METRICS.get(n)
            except RegistryError as exc:  # a broken plugin must not hide the others
                print(f"{n:28s} ?  failed to load: {exc}")
                continue
            arrow = "↑" if cls.higher_is_better else "↓"
            off = "" if METRICS.meta(n).get("default", True) else "  [off by default]"
            print(f"{n:28s} {arrow}  {cls.definition}{off}")
        print("<package.module>:<Attr>        your Metric subclass")
    elif args.what == "presets":
        for n in PRESETS.names():
            print(f"{n:20s} {PRESETS.meta(n).get('summary', '')}")
    else:
        for n in MODELS.names():
            print(f"{n:16s} {MODELS.meta(n).get('summary', '')}")
    return 0


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a classifier or an Explainer (PyTorch Lightning)")
    p.add_argument("what", choices=["classifier", "explainer", "encoder"],
                   help="encoder: only the Explainer encoder's pretraining (written to "
                        "OUT/pretrain/ and reused by 'train explainer --out OUT')")
    p.add_argument("--preset", default="synthetic")
    p.add_argument("--data-root")
    p.add_argument("--out", required=True, help="output folder (checkpoints, logs, weights)")
    p.add_argument("--classifier-checkpoint", help="(explainer) the frozen classifier's weights")
    p.add_argument("--loss", choices=["explainer", "rt-saliency"], default="explainer")
    p.add_argument("--devices", default="1", help="passed to the Lightning Trainer")
    p.add_argument("--strategy", default="auto", help="e.g. ddp (passed to Lightning)")
    p.add_argument("--precision", default="32-true", help="e.g. bf16-mixed (passed to Lightning)")
    p.add_argument("--accelerator", default="auto")
    p.add_argument("--max-epochs", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--limit", type=int, help="use only the first N training images")
    p.add_argument("--resume", help="a Lightning checkpoint to resume from")
    p.add_argument("--imagenet-weights", help="ImageNet backbone weights file (paper presets)")
    g = p.add_argument_group("Explainer recipe (defaults: the preset's; recorded in the "
                             "checkpoint)")
    g.add_argument("--arch", help="Explainer network, e.g. unet_deep, unet_small")
    g.add_argument("--pretrain-epochs", type=int,
                   help="epochs of encoder pretraining on the training labels (0: none)")
    g.add_argument("--encoder-lr-scale", type=float,
                   help="encoder learning rate as a fraction of the Explainer's (0: frozen)")
    g.add_argument("--lr", type=float, help="peak learning rate of Explainer training")
    g.add_argument("--nontarget-area-weight", type=float,
                   help="weight of the mean area of the absent classes' masks")
    p.add_argument("--no-progress", action="store_true")


def _train_preset(args):
    """The preset with the command line's recipe overrides applied."""
    from dataclasses import replace

    from .catalog import PRESETS

    preset = PRESETS.get(args.preset)
    recipe = {k: v for k, v in (("pretrain_epochs", args.pretrain_epochs),
                                ("encoder_lr_scale", args.encoder_lr_scale)) if v is not None}
    if recipe.get("pretrain_epochs", 0) < 0 or recipe.get("encoder_lr_scale", 0) < 0:
        raise ValueError("--pretrain-epochs and --encoder-lr-scale must be >= 0")
    changes: dict[str, Any] = {"explainer_recipe": replace(preset.explainer_recipe, **recipe)}
    if args.arch:
        from .catalog import EXPLAINER_ARCHS

        EXPLAINER_ARCHS.get(args.arch)  # unknown names fail here, with suggestions
        changes["explainer_arch"] = args.arch
    if args.lr is not None:
        changes["explainer_train"] = replace(preset.explainer_train, lr=args.lr)
    if args.nontarget_area_weight is not None:
        changes["explainer_loss"] = replace(preset.explainer_loss,
                                            nontarget_area=args.nontarget_area_weight)
    return replace(preset, **changes)


def _cmd_train(args) -> int:
    from .training.train import train_classifier, train_explainer

    preset = _train_preset(args)
    devices: Any = int(args.devices) if args.devices.isdigit() else args.devices
    common = {"data_root": args.data_root, "devices": devices, "strategy": args.strategy,
              "precision": args.precision, "max_epochs": args.max_epochs,
              "max_steps": args.max_steps, "limit": args.limit, "resume": args.resume,
              "progress": not args.no_progress, "accelerator": args.accelerator,
              "imagenet_weights": args.imagenet_weights}
    if args.what == "classifier":
        summary = train_classifier(preset, args.out, **common)
    elif args.what == "encoder":
        from .training.train import train_encoder

        summary = train_encoder(preset, args.out, classifier_checkpoint=args.classifier_checkpoint,
                                data_root=args.data_root, limit=args.limit,
                                progress=not args.no_progress, accelerator=args.accelerator)
    else:
        summary = train_explainer(preset, args.out, classifier_checkpoint=args.classifier_checkpoint,
                                  loss=args.loss.replace("-", "_"), **common)
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_data(args) -> int:
    from .data.synthetic import SyntheticConfig, write_synthetic

    cfg = SyntheticConfig(seed=args.seed)
    out = write_synthetic(args.out, cfg, progress=not args.no_progress)
    print(f"synthetic dataset written to {out}")
    return 0


def _cmd_report(args) -> int:
    from .report import write_report

    path = write_report(args.run_dir)
    print(f"report written to {path}")
    return 0


def _cmd_table(args) -> int:
    from .paper_table import table_command

    return table_command(args)


def _cmd_compare(args) -> int:
    from .compare import compare_main

    return compare_main(args.baseline, args.run_dir, args.tolerance)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attrbench",
        description="Benchmark attribution (saliency) methods of image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    p = sub.add_parser("list", help="list registered methods, metrics, presets or models")
    p.add_argument("what", choices=["methods", "metrics", "presets", "models"])
    _add_train(sub)
    p = sub.add_parser("report", help="write report.html for a run folder")
    p.add_argument("run_dir")
    p = sub.add_parser("compare", help="compare a run with a baseline; exit 1 on a regression, "
                       "a new failure, another image count or another configuration")
    p.add_argument("baseline")
    p.add_argument("run_dir")
    p.add_argument("--tolerance", action="append", metavar="METRIC=VALUE",
                   help="replace a metric's tolerance value, in the unit of its own tolerance "
                        "kind (absolute, relative fraction or flips); 'none': report only "
                        "(repeatable)")
    p = sub.add_parser("table", help="join runs that differ only in the classifier into a "
                       "paper-style table (rows: metric x classifier, columns: methods)")
    from .paper_table import add_arguments

    add_arguments(p)
    # listed for --help only: main() hands "bench" to its own parser before argparse runs
    p = sub.add_parser("bench", help="speed ratios and where the time goes (attrbench bench "
                       "--help)", add_help=False)
    p.add_argument("bench_args", nargs=argparse.REMAINDER)
    p = sub.add_parser("readme-table", add_help=False,
                       help="write README.md's results table from results/baselines/"
                            "synthetic.json (--check: exit 1 when they differ)")
    p.add_argument("readme_args", nargs=argparse.REMAINDER)
    p = sub.add_parser("data", help="dataset utilities")
    p.add_argument("action", choices=["make-synthetic"])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from ._process import tune_allocator

    # glibc: reuse freed tensors instead of mapping, zeroing and unmapping them on every batch
    # (bit-identical results; ATTRBENCH_TUNE_ALLOCATOR=0 turns it off)
    tune_allocator()
    if argv and argv[0] == "bench":  # its own parser: every option passes through unchanged
        from .bench import bench_main

        return bench_main(argv[1:])
    if argv and argv[0] == "readme-table":
        from .readme_table import main as readme_main

        return readme_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"run": _cmd_run, "list": _cmd_list, "train": _cmd_train, "report": _cmd_report,
                "compare": _cmd_compare, "table": _cmd_table, "data": _cmd_data}
    from .data.voc import DataError
    from .models import CheckpointError
    from .registry import RegistryError
    from .results import ConfigMismatchError

    try:
        return handlers[args.command](args)
    except (RegistryError, DataError, CheckpointError, ConfigMismatchError, FileExistsError,
            FileNotFoundError, ValueError) as exc:
        print(f"attrbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attrbench: interrupted (rows written so far are kept; rerun the same command to "
              "resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
