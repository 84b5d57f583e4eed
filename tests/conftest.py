"""Test setup: a private compile cache per test session, so tests neither read nor
pollute the user's cache."""
import os
import tempfile

_CACHE = tempfile.mkdtemp(prefix="mlc-test-cache-")
os.environ["MLC_CACHE_DIR"] = _CACHE
