#!/usr/bin/env python
"""Compare training / test runs: one table of what differs and what they reach, and their training curves.

    .venv/bin/python tools/summarize_runs.py logs/demo/tsd_tiny logs/demo/vit_tiny [--out logs/demo/summary]
    .venv/bin/python tools/summarize_runs.py logs/demo/* --out logs/demo/summary   # folders that are no runs
                                                                                   # (data_cache) are skipped

Each argument is an ``OUTPUT_DIR`` of ``train.py`` and / or ``test.py``. From each run it reads what
exists — ``config.yaml``, ``metrics.jsonl`` (or, in runs written before it existed, ``train_log.txt``),
``val_results.json`` (validation during training) and
``results.json`` of ``test.py``, in the folder itself or in a sub-folder (``test.py`` tests a run into
``test_occ_duke/``, ``test_new_occ_duke/``, ``test_occ_duke_rerank/`` ...) — so a run still training, or
one never evaluated, has blanks instead of failing. Given several folders, those that are not runs (no such file,
e.g. the data cache) are skipped with a line saying so. It writes to ``--out`` (default ``logs/summary``):

* ``runs.md`` and ``runs.csv``: a row per run; a column per config key whose value differs between
  the runs (``OUTPUT_DIR`` aside; a key absent from an older run's config is shown as ``-``); ``epochs``
  (last finished epoch), ``best epoch`` and ``best mAP`` (validation); then Rank-1 / mAP / mINP
  (percent) of the standard protocol and, where any run has them, of the new benchmark's ALL / NPO /
  NTP splits, and of both with k-reciprocal re-ranking (``rr`` columns, ``TEST.RE_RANKING True``).
  Metrics come from ``test.py``'s ``results.json`` when there is one, else from the last validation;
  ``runs.md`` lists the sources.
* ``seeds.md`` and ``seeds.csv`` (when two or more runs differ only in ``SOLVER.SEED``): a row per
  config, ``mean ± std`` of every metric over its seeds (sample standard deviation) and their count
  ``n``, so that a difference between configs can be read against the spread between seeds.
* ``curves.png``: every loss term, the total loss, training accuracy, the learning rate and the
  validation mAP against fractional epochs, one panel each, all runs overlaid. Training curves come
  from ``metrics.jsonl`` (:class:`processor.events.JSONWriter`: means over each ``SOLVER.LOG_PERIOD``
  iterations); an older run without it is read from the log lines of ``train_log.txt`` (running
  averages since the start of each epoch).
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import csv
import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Any

import yaml
from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

from config import diff
from utils.cli import ArgumentParser, run_main
from utils.errors import DataError

__all__ = ["Run", "NotARunError", "read_run", "parse_metrics", "parse_train_log", "differing_keys", "table_rows",
           "write_table", "seed_groups", "seed_rows", "write_seed_table", "plot_curves", "main"]

# LoggingHook (processor/hooks.py): "Epoch[e] Iter[i/n] loss: <total> <term>: <v> ... acc: <a> lr: <lr> ..."
_ITER_LINE = re.compile(r"Epoch\[(\d+)\] Iter\[(\d+)/(\d+)\] loss: (\S+) (.*?)\s*acc: (\S+) lr: (\S+)")
_TERM = re.compile(r"(\w+): (\S+)")
# ... and at the end of each epoch "Epoch <e> done in <s>s (<x> img/s), loss <total>, acc <a>".
_EPOCH_LINE = re.compile(r"Epoch (\d+) done in .*?, loss (\S+), acc (\S+)")
SPLITS = ("ALL", "NPO", "NTP")
METRICS = (("rank1", "R1"), ("mAP", "mAP"), ("mINP", "mINP"))
NOT_COMPARED = {"OUTPUT_DIR"}  # differs between any two runs by construction; the run column names them
SEED_KEY = "SOLVER.SEED"
# Result kinds: (protocol, re-ranked); their column groups: (kind, label prefix, splits).
PROTOCOLS = (("standard", False), ("standard", True), ("new", False), ("new", True))
_PREFIX = {("standard", False): "", ("standard", True): "rr ", ("new", False): "new ", ("new", True): "new rr "}


class NotARunError(DataError):
    """A folder that holds none of the files of a run (skipped when several folders are given)."""


@dataclasses.dataclass
class Run:
    """What one run folder holds (every part optional but at least one present).

    Attributes:
        path: the folder as given; name: the label in the table and the legend (the folder's name;
            :func:`main` uses the paths when two names clash).
        config: flattened ``config.yaml`` (``{'MODEL.ARCH': 'tsd', ...}``).
        curves: ``{series: [(fractional epoch, value), ...]}`` from ``metrics.jsonl`` or ``train_log.txt``
            (loss terms, ``loss``, ``acc``, ``lr``).
        epochs: the last finished epoch (0 when none).
        validation: ``{epoch: {split: {rank1, mAP, mINP, ...}}}`` from ``val_results.json``.
        tests: ``{(protocol 'standard' | 'new', re-ranked): (results.json path, {split: {...}})}`` from
            ``test.py``.
        notes: problems met while reading (unreadable files), shown in ``runs.md``.
    """

    path: str
    name: str = ""
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    curves: dict[str, list[tuple[float, float]]] = dataclasses.field(default_factory=dict)
    epochs: int = 0
    validation: dict[int, dict] = dataclasses.field(default_factory=dict)
    tests: dict[tuple[str, bool], tuple[str, dict]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)


def _series_name(key: str) -> str | None:
    """The curve of a ``metrics.jsonl`` key: ``loss/total`` -> ``loss``, ``loss/<term>`` -> ``<term>``,
    ``acc`` and ``lr`` as they are; None for the others (pace, validation)."""
    if key == "loss/total":
        return "loss"
    if key.startswith("loss/"):
        return key[5:]
    return key if key in ("acc", "lr") else None


def parse_metrics(lines: Sequence[str]) -> tuple[dict[str, list[tuple[float, float]]], int]:
    """Training curves and the last finished epoch from ``metrics.jsonl`` lines.

    Points sit at fractional epochs ``epoch - 1 + iter / iters_per_epoch``: the ``iter`` lines (means
    over each log period), or the ``epoch`` lines (epoch means, at whole epochs) when a run's log period
    exceeds an epoch. Where an (epoch, iteration) occurs twice (a resumed run not yet restarted cuts the
    file), the later line wins; lines that are not JSON (one being written) are skipped.

    Returns:
        ``(curves, epochs)``: ``{series: sorted [(x, value)]}`` and the last finished epoch.
    """
    points: dict[str, dict[str, dict[float, float]]] = {"iter": {}, "epoch": {}}
    epochs = 0
    for line in lines:
        try:
            record = json.loads(line)
            kind, x = record["kind"], record["epoch"] - 1 + record["iter"] / record["iters_per_epoch"]
        except (ValueError, KeyError, TypeError, ZeroDivisionError):
            continue
        if kind == "epoch":
            epochs = record["epoch"]  # after a resume the epochs restart below the previous maximum
        for key, value in record.items():
            name = _series_name(key)
            if name is not None and isinstance(value, (int, float)) and kind in points:
                points[kind].setdefault(name, {})[x] = float(value)
    chosen = points["iter"] or points["epoch"]
    return {k: sorted(v.items()) for k, v in chosen.items()}, epochs


def parse_train_log(lines: Sequence[str]) -> tuple[dict[str, list[tuple[float, float]]], int]:
    """Training curves and the last finished epoch from ``train_log.txt`` lines (runs written before
    ``metrics.jsonl`` existed).

    Points sit at fractional epochs ``e - 1 + i / n``. A resumed run appends to the same log and
    repeats the epochs after its last checkpoint: the later line of an (epoch, iteration) wins. Runs
    whose log period exceeds an epoch have no iteration lines; their per-epoch summaries give
    ``loss`` and ``acc`` at whole epochs instead.

    Returns:
        ``(curves, epochs)``: ``{series: sorted [(x, value)]}`` and the last finished epoch.
    """
    points: dict[str, dict[float, float]] = {}
    summaries: dict[str, dict[float, float]] = {"loss": {}, "acc": {}}
    epochs = 0
    for line in lines:
        m = _ITER_LINE.search(line)
        if m:
            e, i, n = int(m[1]), int(m[2]), int(m[3])
            x = e - 1 + i / n
            values = {"loss": m[4], **dict(_TERM.findall(m[5])), "acc": m[6], "lr": m[7]}
            for name, v in values.items():
                try:
                    points.setdefault(name, {})[x] = float(v)
                except ValueError:  # a term the format does not know how to read: leave it out
                    continue
            continue
        m = _EPOCH_LINE.search(line)
        if m:
            epochs = int(m[1])  # after a resume the epochs restart below the previous maximum
            summaries["loss"][float(epochs)] = float(m[2])
            summaries["acc"][float(epochs)] = float(m[3])
    if not points:
        points = {k: v for k, v in summaries.items() if v}
    return {k: sorted(v.items()) for k, v in points.items()}, epochs


def _read_json(path: str, run: Run) -> Any | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:  # e.g. being rewritten by a running training right now
        run.notes.append(f"{path} unreadable ({type(e).__name__}), left out")
        return None


def read_run(path: str) -> Run:
    """Read one run folder (see the module docstring for the files).

    Raises:
        DataError: ``path`` does not exist.
        NotARunError: ``path`` is a file, or a folder that holds none of the files of a run.
    """
    if os.path.isfile(path):
        raise NotARunError(f"{path} is a file, not a run folder; pass OUTPUT_DIRs of train.py / test.py")
    if not os.path.isdir(path):
        raise DataError(f"run folder {path} does not exist; pass OUTPUT_DIRs of train.py / test.py")
    run = Run(path, name=os.path.basename(os.path.normpath(path)))
    found = False
    cfg_path = os.path.join(path, "config.yaml")
    if os.path.isfile(cfg_path):
        found = True
        try:
            with open(cfg_path) as f:
                run.config = {k: v for k, v in diff.flatten(yaml.safe_load(f) or {}).items() if k not in NOT_COMPARED}
        except yaml.YAMLError as e:
            raise DataError(f"{cfg_path} is not valid YAML ({str(e).splitlines()[0]}); "
                            "train.py writes it, restore it from the run") from e
    metrics_path, log_path = os.path.join(path, "metrics.jsonl"), os.path.join(path, "train_log.txt")
    for curves_path, parse in ((metrics_path, parse_metrics), (log_path, parse_train_log)):
        if os.path.isfile(curves_path):
            found = True
            with open(curves_path, errors="replace") as f:
                run.curves, run.epochs = parse(f.readlines())
            break
    val_path = os.path.join(path, "val_results.json")
    if os.path.isfile(val_path):
        found = True
        data = _read_json(val_path, run) or {}
        run.validation = {int(e): r for e, r in data.items()}
        run.epochs = max([run.epochs, *run.validation])
    result_files = [os.path.join(path, "results.json")]
    if found:  # a training run's tests may sit in sub-folders; a folder of test folders is no run
        result_files += sorted(os.path.join(path, d, "results.json")
                               for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    for res_path in filter(os.path.isfile, result_files):
        found = True
        data = _read_json(res_path, run)
        if not data or "results" not in data:
            continue
        kind = ("new" if data.get("new_metric") or "NPO" in data["results"] else "standard",
                bool(data.get("re_ranking")))
        if kind in run.tests:
            run.notes.append(f"{res_path}: another {_kind_name(kind)} result besides {run.tests[kind][0]}, left out")
            continue
        run.tests[kind] = (res_path, data["results"])
    if not found:
        runs_below = sorted(d for d in os.listdir(path) if any(
            os.path.isfile(os.path.join(path, d, f)) for f in ("config.yaml", "results.json")))
        hint = (f" (its sub-folders {', '.join(runs_below[:4])}{' ...' if len(runs_below) > 4 else ''} are runs: "
                f"pass {os.path.join(path, '*')})" if runs_below else "")
        raise NotARunError(f"{path} is not a run folder: it has no config.yaml, train_log.txt, val_results.json or "
                           f"results.json; pass OUTPUT_DIRs of train.py / test.py{hint}")
    return run


def _kind_name(kind: tuple[str, bool]) -> str:
    """'standard', 'new', 'standard re-ranked', 'new re-ranked'."""
    return kind[0] + (" re-ranked" if kind[1] else "")


def _run_names(paths: Sequence[str]) -> list[str]:
    """Folder names when they tell the runs apart, else the paths as given."""
    names = [os.path.basename(os.path.normpath(p)) for p in paths]
    return names if len(set(names)) == len(names) else [os.path.normpath(p) for p in paths]


def differing_keys(runs: Sequence[Run]) -> list[str]:
    """Config keys whose value differs between the runs that have a config (sorted); none for one run.

    A key missing from some configs (written before the key existed) is compared among the others
    (:func:`config.diff.differing_keys`)."""
    return diff.differing_keys([r.config for r in runs if r.config])


def _protocol_results(run: Run, kind: tuple[str, bool]) -> tuple[dict | None, str]:
    """``(results by split, source)`` of ``kind`` (protocol, re-ranked): test.py's results.json, else
    the last validation when it was run that way (re-ranked when the run's config says
    ``TEST.RE_RANKING``)."""
    if kind in run.tests:
        path, results = run.tests[kind]
        return results, os.path.relpath(path, run.path)
    if run.validation:
        epoch = max(run.validation)
        results = run.validation[epoch]
        if ("NPO" in results) == (kind[0] == "new") and bool(run.config.get("TEST.RE_RANKING")) == kind[1]:
            return results, f"val_results.json, epoch {epoch}"
    return None, ""


def _best_epoch(run: Run) -> tuple[int, float] | None:
    """(epoch, mAP of the first split) of the validation with the highest mAP; the earlier epoch on ties."""
    if not run.validation:
        return None
    scored = [(next(iter(r.values()))["mAP"], -e) for e, r in run.validation.items() if r]
    if not scored:
        return None
    m, neg_e = max(scored)
    return -neg_e, m


def table_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[Any]], list[str]]:
    """The comparison table: ``(header, rows of raw values (None = blank), source notes)``.

    Metrics are fractions in [0, 1] here; :func:`write_table` shows them in percent."""
    keys = differing_keys(runs)
    # The standard protocol always (blanks say "not evaluated"); the other kinds where a run has them.
    kinds = [k for k in PROTOCOLS if k == ("standard", False) or any(_protocol_results(r, k)[0] for r in runs)]
    header = ["run", *keys, "epochs", "best epoch", "best mAP"]
    for kind in kinds:
        for split in SPLITS if kind[0] == "new" else ("ALL",):
            label = _PREFIX[kind] + (split + " " if kind[0] == "new" else "")
            header += [label + short for _, short in METRICS]
    rows, sources = [], []
    for run in runs:
        best = _best_epoch(run)
        row: list[Any] = [run.name, *(run.config.get(k) if run.config else None for k in keys), run.epochs or None,
                          best[0] if best else None, best[1] if best else None]
        for kind in kinds:
            results, source = _protocol_results(run, kind)
            for split in SPLITS if kind[0] == "new" else ("ALL",):
                r = (results or {}).get(split)
                row += [r.get(key) if r else None for key, _ in METRICS]
            if source:
                sources.append(f"{run.name}: {_kind_name(kind)} protocol from {source}")
        rows.append(row)
        sources += [f"{run.name}: {note}" for note in run.notes]
    return header, rows, sources


def _cell(value: Any, percent: bool) -> str:
    if value is None:
        return "-"
    if percent and isinstance(value, float):
        return f"{100 * value:.1f}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _csv_cell(value: Any) -> Any:
    """A CSV cell: empty for None, JSON for a list or dict (config values), else the value itself."""
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def write_table(runs: Sequence[Run], out: str) -> tuple[str, str, str]:
    """Write ``out/runs.md`` (percent, one decimal) and ``out/runs.csv`` (raw fractions).

    Returns:
        ``(markdown table text, md path, csv path)``.
    """
    header, rows, sources = table_rows(runs)
    first_metric = header.index("best mAP")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(v, i >= first_metric) for i, v in enumerate(row)) + " |")
    text = "\n".join(lines)
    md_path, csv_path = os.path.join(out, "runs.md"), os.path.join(out, "runs.csv")
    with open(md_path, "w") as f:
        f.write(text + "\n\nRank-1 / mAP / mINP in percent; "
                       "best epoch / best mAP from the validation during training.\n")
        if sources:
            f.write("\nSources:\n\n" + "".join(f"- {s}\n" for s in sources))
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([[_csv_cell(v) for v in row] for row in rows])
    return text, md_path, csv_path


def seed_groups(runs: Sequence[Run]) -> list[list[int]]:
    """Indices of the runs with a config, grouped by their config without ``SOLVER.SEED`` (in first-seen
    order); runs without a config (test-only folders) are in no group."""
    groups: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        if run.config:
            key = json.dumps({k: v for k, v in run.config.items() if k != SEED_KEY}, sort_keys=True, default=str)
            groups.setdefault(key, []).append(i)
    return list(groups.values())


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1 in the denominator; None for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def seed_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[Any]]] | None:
    """The over-seeds table: a row per config (:func:`seed_groups`) with the runs' names, their seeds,
    ``n``, the config keys that differ between the groups, then for every metric column of
    :func:`table_rows` (best mAP onwards) ``(mean, std, count)`` over the group's runs that have it
    (``None`` when none has it; std None for one value).

    Returns:
        ``(header, rows)``, or None when no two runs differ only in ``SOLVER.SEED``.
    """
    groups = seed_groups(runs)
    if not any(len(g) > 1 for g in groups):
        return None
    header, rows, _ = table_rows(runs)
    first_metric = header.index("best mAP")
    keys = [k for k in differing_keys([runs[g[0]] for g in groups]) if k != SEED_KEY] if len(groups) > 1 else []
    out_header = ["runs", *keys, "seeds", "n", *header[first_metric:]]
    out_rows = []
    for group in groups:
        first = runs[group[0]]
        row: list[Any] = [", ".join(runs[i].name for i in group), *(first.config.get(k) for k in keys),
                          ", ".join(str(runs[i].config.get(SEED_KEY, "-")) for i in group), len(group)]
        for col in range(first_metric, len(header)):
            values = [rows[i][col] for i in group if isinstance(rows[i][col], (int, float))]
            row.append((*_mean_std(values), len(values)) if values else None)
        out_rows.append(row)
    return out_header, out_rows


def _stat_cell(value: Any, n: int) -> str:
    """``mean ± std`` in percent (one decimal); ``(k of n)`` when only k runs have the metric."""
    if not isinstance(value, tuple):
        return _cell(value, False)
    mean, std, count = value
    text = f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if std is not None else "")
    return text + (f" ({count} of {n})" if count != n else "")


def write_seed_table(runs: Sequence[Run], out: str) -> tuple[str, str, str] | None:
    """Write ``out/seeds.md`` (``mean ± std`` in percent) and ``out/seeds.csv`` (raw fractions: a mean
    and a std column per metric) when some runs differ only in ``SOLVER.SEED``.

    Returns:
        ``(markdown table text, md path, csv path)``, or None (nothing written) without such runs.
    """
    table = seed_rows(runs)
    if table is None:
        return None
    header, rows = table
    first_metric = header.index("n") + 1
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        n = row[first_metric - 1]
        lines.append("| " + " | ".join(_stat_cell(v, n) if i >= first_metric else _cell(v, False)
                                       for i, v in enumerate(row)) + " |")
    text = "\n".join(lines)
    md_path, csv_path = os.path.join(out, "seeds.md"), os.path.join(out, "seeds.csv")
    with open(md_path, "w") as f:
        f.write(text + "\n\nMean ± sample standard deviation over the seeds of each config (n - 1 in the "
                "denominator), Rank-1 / mAP / mINP in percent; n runs per config.\n")
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header[:first_metric]
                        + [f"{h} {stat}" for h in header[first_metric:] for stat in ("mean", "std")])
        for row in rows:
            stats = [("" if v is None or v[i] is None else v[i]) for v in row[first_metric:] for i in (0, 1)]
            writer.writerow([_csv_cell(v) for v in row[:first_metric]] + stats)
    return text, md_path, csv_path


def _series(runs: Sequence[Run]) -> list[str]:
    """Panel order: total loss, the loss terms (first-seen order over the runs), accuracy, lr, val mAP."""
    terms: list[str] = []
    for run in runs:
        terms += [k for k in run.curves if k not in ("loss", "acc", "lr") and k not in terms]
    panels = [k for k in ("loss", *terms, "acc", "lr") if any(k in r.curves for r in runs)]
    if any(r.validation for r in runs):
        panels.append("val mAP")
    return panels


def plot_curves(runs: Sequence[Run], path: str, cols: int = 4) -> str | None:
    """Draw ``curves.png``: one panel per series, every run in its own colour, shared epoch axis.

    Returns:
        ``path``, or None when no run has a curve (nothing is written).
    """
    panels = _series(runs)
    if not panels:
        return None
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(3.6 * cols, 2.5 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, sharex=True, squeeze=False).ravel()
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for ax, name in zip(axes, panels):
        for run, colour in zip(runs, colours):
            if name == "val mAP":
                pts = sorted((float(e), 100 * next(iter(r.values()))["mAP"]) for e, r in run.validation.items() if r)
            else:
                pts = run.curves.get(name, [])
            if pts:
                xs, ys = zip(*pts)
                # Markers: validation has a few points (every EVAL_PERIOD epochs), a line alone could hide them.
                ax.plot(xs, ys, color=colour, marker="o", ms=4 if name == "val mAP" else 1.5, lw=1.2, label=run.name)
        ax.set_title(name + (" (%)" if name == "val mAP" else ""), fontsize=10)
        ax.grid(alpha=0.3)
        if name == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax in axes[max(0, len(panels) - cols):len(panels)]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_tick_params(labelbottom=True)
    handles = [h for ax in axes[:len(panels)] for h in ax.get_lines()]
    labels = {h.get_label(): h for h in handles}
    fig.legend(list(labels.values()), list(labels), loc="outside upper center", ncols=min(len(labels), 6))
    fig.savefig(path, dpi=100)
    return path


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="OUTPUT_DIR", help="run folders of train.py / test.py")
    parser.add_argument("--out", metavar="DIR", default=os.path.join("logs", "summary"),
                        help="where runs.md, runs.csv and curves.png go (default logs/summary)")
    args = parser.parse_args(argv)
    runs, paths, skipped = [], [], []
    out = os.path.normpath(args.out)
    for path in args.runs:
        try:
            runs.append(read_run(path))
            paths.append(path)
        except NotARunError:
            if len(args.runs) == 1:
                raise
            skipped.append(path)
            if os.path.normpath(path) != out:  # the summary folder itself, e.g. in logs/demo/*: no news
                print(f"skipped {path}: not a run folder (no config.yaml, train_log.txt, val_results.json or "
                      f"results.json)" if os.path.isdir(path) else f"skipped {path}: a file, not a run folder")
    if not runs:
        raise DataError(f"none of the {len(args.runs)} folders given is a run folder ({', '.join(skipped[:4])}"
                        f"{' ...' if len(skipped) > 4 else ''}); pass OUTPUT_DIRs of train.py / test.py")
    for run, name in zip(runs, _run_names(paths)):
        run.name = name
    os.makedirs(args.out, exist_ok=True)
    text, md_path, csv_path = write_table(runs, args.out)
    seeds = write_seed_table(runs, args.out)
    png = plot_curves(runs, os.path.join(args.out, "curves.png"))
    print(text)
    print(f"\ntable: {md_path}, {csv_path}")
    if seeds:
        print(f"\nover seeds (mean ± std, n runs per config):\n\n{seeds[0]}\n\ntable: {seeds[1]}, {seeds[2]}")
    print(f"curves: {png}" if png
          else "curves: none (no run has loss values in metrics.jsonl / train_log.txt or a validation)")
    return 0


if __name__ == "__main__":
    run_main(main)
