"""``python -m ife_platform.bench``."""

import sys

from ife_platform.bench.command import main

sys.exit(main(sys.argv[1:]))
