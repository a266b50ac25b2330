"""``densemed check DATA_DIR [--recipe R]``: list every problem of a dataset with its file, and a summary.

Runs :func:`densemed.data.check.check_dataset` over a dataset in any layout of
:mod:`densemed.data.layouts` and prints :func:`densemed.data.check.format_report`. Exit code 0 when
nothing would break training (warnings allowed), 2 when something would.

With ``--recipe`` the dataset is checked with the options training would use: ``data.layout``,
``data.num_classes`` and ``data.label_map`` (label values must be those classes), ``data.dims``,
``data.image_dir``/``data.label_dir``, and instance ids required when the recipe's task trains on
instance maps; ``DATA_DIR`` then defaults to ``data.root``. Without a recipe the classes come from
``dataset.json`` when there is one, else the values only have to be consecutive. ``densemed train``
refuses the same fatal problems while it reads the data (:func:`densemed.data.dataset.load_cases`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from densemed.errors import DensemedError


def register(subparsers: Any) -> None:
    """Add the ``check`` subcommand."""
    c = subparsers.add_parser(
        "check", help="check a dataset folder (images/labels, nnU-Net or MSD): every problem with its file, a summary"
    )
    c.add_argument("data_dir", nargs="?", help="dataset folder (default with --recipe: its data.root)")
    c.add_argument("--recipe", help="check with a recipe's data options (classes, label map, layout, task)")
    c.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override recipe keys")
    c.add_argument("--layout", help="auto, folders, nnunet or msd (default: the recipe's, else auto)")
    c.add_argument("--num-classes", type=int, help="declared class count (default: the recipe's, else dataset.json)")
    c.add_argument("--instances", action="store_true", help="labels must be instance ids (1..N per object)")
    c.add_argument("--label-dir", help="label folder of the images/ + labels/ layout (e.g. instances)")
    c.add_argument("--dims", type=int, choices=(2, 3), help="spatial dimensions every image must have")
    c.set_defaults(fn=run)


def _labels_are_instances(task: Any) -> bool:
    """Whether a task trains on instance ids (its labels must not be binary masks).

    A task may say so with a ``labels_are_instances`` attribute; without one, the instance task and
    its subclasses do.
    """
    from densemed.tasks.instances import Instances

    return bool(getattr(task, "labels_are_instances", isinstance(task, Instances)))


def options(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The dataset folder and the keyword arguments of ``check_dataset`` from the flags (and recipe)."""
    kwargs: dict[str, Any] = {"layout": "auto"}
    root = args.data_dir
    if args.recipe or args.set:
        from densemed import config, tasks

        cfg = config.load(args.recipe, args.set)
        task = tasks.build(cfg)
        if not task.needs_labels():
            raise DensemedError(f"{args.recipe or '--set'}: task {task.name!r} trains on images without labels; "
                                "`densemed check` checks labelled datasets (drop --recipe to check the images)")
        d = cfg.data
        if root is None:
            root = config.resolve_data_root(d.root)
        kwargs.update(layout=d.layout, num_classes=d.num_classes, instances=_labels_are_instances(task), dims=d.dims,
                      image_dir=d.image_dir, label_dir=d.label_dir, label_map=d.label_map)
    if root is None:
        raise DensemedError("check: give a dataset folder (or --recipe with data.root)")
    for flag, key in (("layout", "layout"), ("num_classes", "num_classes"), ("label_dir", "label_dir"),
                      ("dims", "dims")):
        if getattr(args, flag) is not None:
            kwargs[key] = getattr(args, flag)
    if args.instances:
        kwargs["instances"] = True
    return Path(root), kwargs


def run(args: argparse.Namespace) -> int:
    """Print the report; 2 when a problem would break training."""
    from densemed.data.check import check_dataset, format_report

    root, kwargs = options(args)
    if not root.is_dir():
        raise DensemedError(f"{root}: dataset folder not found")
    report = check_dataset(root, **kwargs)
    print(format_report(report))
    return 2 if report.fatal else 0
