"""``python -m nertron.cli``: the ``nertron`` command."""

import sys

from nertron.cli import main

sys.exit(main())
