"""Test setup (tests/ mirrors mlc/: tests/ir, tests/passes, ...): a private compile cache per test session, so tests neither read nor
pollute the user's cache; the IR verifier runs after every compiler pass."""
import os
import sys
import tempfile

# the shared helpers (gradcheck, numerics, processes, ...) sit here; tests in tests/<package>/ import them
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

_CACHE = tempfile.mkdtemp(prefix="mlc-test-cache-")
os.environ["MLC_CACHE_DIR"] = _CACHE
os.environ.setdefault("MLC_VERIFY", "1")


def pytest_configure(config):
    # CI runs slow tests like the others; a quick local run may leave them out with -m "not slow"
    config.addinivalue_line("markers", "slow: whole-model tests that take seconds each")
