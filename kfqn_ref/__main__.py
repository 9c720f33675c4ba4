"""``python -m kfqn_ref``: the ``kfqn-ref`` command line (:mod:`kfqn_ref.cli`)."""

import sys

from kfqn_ref.cli import main

sys.exit(main())
