"""`python -m streams` is the `cdrstream` command line."""

from streams.cli import main

raise SystemExit(main())
