"""``python -m gateway`` is the ``gridpeer`` command (for systems without the console script)."""

import sys

from gateway.cli import main

sys.exit(main())
