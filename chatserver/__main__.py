"""`python -m chatserver` is the `chatserver` command."""

from chatserver.entrypoints.cli import main

raise SystemExit(main())
