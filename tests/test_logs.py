"""Logging through Python's logging (MLC_LOG), and progress on long work (mlc compile -v)."""
import io
import logging
import subprocess
import sys

import numpy as np
import pytest

import mlc
from mlc import logs
from mlc.cli import main
from mlc.runtime import graph_cache


def test_a_compile_logs_per_stage(caplog):
    caplog.set_level(logging.DEBUG, logger="mlc")
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    mlc.compile(lambda x: mlc.exp(x) * 3.0 + 1.5, x)
    graph_cache.wait_for_stores()   # the entry's write (and its debug line) ends within the test
    by = {(r.name, r.levelno) for r in caplog.records}
    assert ("mlc.driver", logging.INFO) in by                      # the summary
    assert ("mlc.codegen.llvm", logging.INFO) in by                # LLVM's time
    assert any(n == "mlc.runtime.cache" and lv == logging.DEBUG for n, lv in by)
    summary = [r.getMessage() for r in caplog.records if r.name == "mlc.driver" and r.levelno == logging.INFO]
    assert "kernels in" in summary[0] and "codegen" in summary[0]


def test_level_spec_sets_the_named_loggers():
    before = {n: logging.getLogger(n).level for n in ("mlc", "mlc.passes")}
    stream = io.StringIO()
    try:
        logs.configure("warning,passes=debug", stream=stream)
        assert logging.getLogger("mlc").level == logging.WARNING
        assert logging.getLogger("mlc.passes").level == logging.DEBUG
        logging.getLogger("mlc.passes.manager").debug("seen")
        logging.getLogger("mlc.driver").info("not seen")
        assert "mlc.passes.manager DEBUG: seen" in stream.getvalue() and "not seen" not in stream.getvalue()
    finally:
        for n, lv in before.items():
            logging.getLogger(n).setLevel(lv)
        logs.configure("warning", stream=sys.stderr)
    with pytest.raises(ValueError, match="unknown level 'loud'"):
        logs.configure("loud")


def test_a_bad_mlc_log_warns_instead_of_breaking_the_import():
    r = subprocess.run([sys.executable, "-c", "import mlc; print('imported')"], capture_output=True, text=True,
                       env={"MLC_LOG": "loud", "PATH": ""}, timeout=120)
    assert r.returncode == 0 and "imported" in r.stdout and "unknown level 'loud'" in r.stderr


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_lines_otherwise():
    tty = _Tty()
    with logs.Progress("schedule", 4, stream=tty) as p:
        for n in range(4):
            p.advance(detail=f"k{n}")
    out = tty.getvalue()
    assert out.count("\r") == 5 and "[" + "#" * 24 + "] 4/4" in out and out.endswith("\n")
    plain = io.StringIO()
    with logs.Progress("schedule", 4, stream=plain, min_interval=3600) as p:
        for n in range(4):
            p.advance()
    lines = plain.getvalue().splitlines()
    assert "\r" not in plain.getvalue() and lines[0].startswith("schedule: 1/4") and lines[-1].startswith(
        "schedule: 4/4") and len(lines) == 2   # the first, then at most one a second, then the last


def test_cli_compile_verbose_shows_the_stages(capsys, monkeypatch):
    monkeypatch.setenv("MLC_GRAPH_CACHE", "off")   # (a graph compiled before would load without its stages)
    assert main(["compile", "mlp", "-v"]) == 0
    err = capsys.readouterr().err
    assert "mlc: graph passes, fuse and lower: 3 kernels done" in err
    assert "schedule: 3/3" in err and "mlc: codegen: LLVM, 3 kernels" in err and "mlc: codegen done" in err
    monkeypatch.delenv("MLC_GRAPH_CACHE")
    assert main(["compile", "mlp", "-v"]) == 0 and main(["compile", "mlp", "-v"]) == 0
    assert "mlc: @mlp loaded from the compile cache" in capsys.readouterr().err


def test_cli_export_verbose_shows_the_library_build(tmp_path, capsys):
    assert main(["compile", "mlp", "-v", "-o", str(tmp_path / "m.so")]) == 0
    err = capsys.readouterr().err
    assert f"mlc: export: building {tmp_path / 'm.so'}" in err and "mlc: export done in" in err


def test_the_default_stream_is_stderr_at_the_time_of_each_record(monkeypatch):
    """A server configured in-process (mlc serve under a test's capture) must not keep a
    stderr that is closed later, while a background thread still logs."""
    before = logging.getLogger("mlc").level
    first, later = io.StringIO(), io.StringIO()
    try:
        monkeypatch.setattr(sys, "stderr", first)
        logs.configure("info")
        first.close()   # the stderr of configure time goes away
        monkeypatch.setattr(sys, "stderr", later)
        logging.getLogger("mlc.driver").info("after the swap")
        assert "mlc.driver INFO: after the swap" in later.getvalue()
    finally:
        logging.getLogger("mlc").setLevel(before)
