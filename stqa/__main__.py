"""``python -m stqa`` is the same as the ``stqa`` command."""

from stqa.cli import main

raise SystemExit(main())
