"""`python -m mcpmqtt` runs the same command line as the `mcpmqtt` script."""

from mcpmqtt.cli import main

raise SystemExit(main())
