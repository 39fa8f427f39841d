"""``python -m gpuad ...`` runs the ``gpuad`` command line (see :mod:`gpuad.cli`)."""

import sys

from gpuad.cli import main

sys.exit(main())
