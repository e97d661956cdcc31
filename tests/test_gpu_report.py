"""``tools/gpu_report.py --device cpu --smoke``: every row of the GPU report runs (on the tiny model and
the tiny set), so the report cannot rot while no GPU is at hand. About 30 s on 2 cores."""
from __future__ import annotations

import pytest
import torch

from tools import gpu_report


@pytest.mark.slow
def test_smoke_report_fills_every_row(tmp_path, capsys):
    out = tmp_path / "report.md"
    threads = torch.get_num_threads()
    try:
        assert gpu_report.main(["--device", "cpu", "--smoke", "--budget", "1200", "--root", str(tmp_path / "data"),
                                "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # the smoke run uses one; later tests keep the session's setting
    table = out.read_text()
    assert table.strip() in capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| measurement")]
    assert len(rows) == 15, table
    assert "failed:" not in table and "skipped:" not in table, table
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        assert cells[2] or cells[4], r  # a throughput or a time
    assert table.count("x eager; compile") == 3
    assert "ok: gloo" in table


@pytest.mark.slow
def test_a_failing_row_is_reported_and_the_report_goes_on(tmp_path):
    report = gpu_report.Report(budget_s=60, out=str(tmp_path / "r.md"), header=["title"])

    def boom():
        raise ValueError("no | GPU")

    report.run("a", "first", boom)
    report.run("b", "second", lambda: {"img/s": "12"})
    report.run("c", "third", lambda: {"img/s": "1"}, needs_s=1e9)
    table = (tmp_path / "r.md").read_text()
    assert "| a | first |  |  |  | failed: ValueError: no / GPU |" in table
    assert "| b | second | 12 |" in table
    assert "| c | third |  |  |  | skipped: time budget" in table
