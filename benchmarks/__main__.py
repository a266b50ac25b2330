"""Run every ``benchmarks/bench_*.py`` and write ``benchmarks/RESULTS.md``.

Usage: ``python -m benchmarks [--quick [NAME ...]] [--only NAME ...] [--no-write]``
(``--quick`` alone: every module quick; with names: only those).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import pkgutil
import platform
import sys
from pathlib import Path

import torch

from benchmarks.harness import HEADER, Row, fmt_row

HERE = Path(__file__).resolve().parent


def machine() -> str:
    """One line describing this machine and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{dev}, Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", nargs="*", default=None, metavar="NAME",
                    help="fewer repeats, smaller cases (all modules, or the named ones)")
    ap.add_argument("--only", nargs="*", help="module names, e.g. unet losses")
    ap.add_argument("--no-write", action="store_true", help="print only, do not write RESULTS.md")
    ap.add_argument("--results", default=str(HERE / "RESULTS.md"),
                    help="the Markdown file to write (e.g. RESULTS_gpu.md for a GPU run)")
    args = ap.parse_args(argv)
    mods = sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))
    if args.only:
        mods = [m for m in mods if m.removeprefix("bench_") in args.only]
    sections: list[str] = []
    for name in mods:
        mod = importlib.import_module(f"benchmarks.{name}")
        print(f"## {name}", flush=True)
        short = name.removeprefix("bench_")
        quick = args.quick is not None and (not args.quick or short in args.quick)
        rows: list[Row] = mod.run(quick)
        lines = [HEADER] + [fmt_row(r) for r in rows]
        text = "\n".join(lines)
        print(text, flush=True)
        notes = getattr(mod, "NOTES", "")
        mode = " (quick mode)" if quick else ""
        sections.append(f"## {short}{mode}\n\n{(mod.__doc__ or '').strip()}\n\n{text}\n\n{notes}".rstrip())
    if not args.no_write:
        stamp = datetime.date.today().isoformat()
        header = (
            f"# Benchmark results\n\nMeasured {stamp} on: {machine()}.\n"
            "Each case runs densemed and the reference alternately in one process; times are "
            "min / median over the repeats; ratio = reference median / densemed median (> 1: densemed faster).\n"
        )
        out = Path(args.results)
        if args.only and out.exists():  # replace only the re-run sections, keep the others
            old = out.read_text().split("\n## ")
            kept = {sec.split("\n", 1)[0].split(" ")[0]: "## " + sec.rstrip() for sec in old[1:]}
            for sec in sections:
                kept[sec.split("\n", 1)[0][3:].split(" ")[0]] = sec
            sections = [kept[k] for k in sorted(kept)]
            header += f"(Sections re-run on {stamp}: {', '.join(sorted(args.only))}.)\n"
        out.write_text(header + "\n" + "\n\n".join(sections) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
