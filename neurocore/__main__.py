"""``python -m neurocore ...`` runs the command line (:mod:`neurocore.cli`)."""

import sys

from neurocore.cli import main

sys.exit(main())
