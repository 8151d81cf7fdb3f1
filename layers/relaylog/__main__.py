"""`python -m relaylog` is the `relaylog` command."""

from .cli import main

raise SystemExit(main())
