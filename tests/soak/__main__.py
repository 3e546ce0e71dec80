"""`python -m tests.soak`: see tests/soak/__init__.py (or --help)."""

from tests.soak import main

raise SystemExit(main())
