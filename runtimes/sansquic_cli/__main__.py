"""``python -m sansquic_cli`` runs the ``sansquic`` command."""

from . import main

raise SystemExit(main())
