"""``python -m densemed`` = the ``densemed`` command."""

from densemed.cli import main

raise SystemExit(main())
