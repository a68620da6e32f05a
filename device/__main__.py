"""``python -m spusim.device``: the device daemon's command line (see device/cli.py)."""

import sys

from spusim.device.cli import main

sys.exit(main())
