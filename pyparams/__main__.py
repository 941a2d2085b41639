"""``python -m pyparams``: the same entry point as the ``pyparams`` console script."""

from pyparams.cli import main

raise SystemExit(main())
