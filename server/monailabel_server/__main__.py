"""``python -m monailabel_server ...`` runs the ``monailabel`` command line."""

from monailabel_server.cli import main

raise SystemExit(main())
