"""``python -m device``: the device daemon's command line (see device/cli.py)."""

import sys

from device.cli import main

sys.exit(main())
