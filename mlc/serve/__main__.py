"""``python -m mlc.serve ...``: the same as ``mlc serve ...``."""
import sys

from ..cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
