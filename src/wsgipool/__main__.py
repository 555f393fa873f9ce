"""``python -m wsgipool``: the same as the ``wsgipool`` command."""

from .cli import main

raise SystemExit(main())
