"""`python -m daemon` runs the caseloop command."""

from daemon.cli import main

raise SystemExit(main())
