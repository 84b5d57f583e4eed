"""Test setup: a private compile cache per test session, so tests neither read nor
pollute the user's cache; the IR verifier runs after every compiler pass."""
import os
import tempfile

_CACHE = tempfile.mkdtemp(prefix="mlc-test-cache-")
os.environ["MLC_CACHE_DIR"] = _CACHE
os.environ.setdefault("MLC_VERIFY", "1")
