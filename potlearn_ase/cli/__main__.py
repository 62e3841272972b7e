"""``python -m potlearn_ase.cli``: the ``potlearn`` command."""

from potlearn_ase.cli import main

raise SystemExit(main())
