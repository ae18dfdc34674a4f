"""`python -m stepflow`: the `stepflow` command."""

from stepflow.main import main

raise SystemExit(main())
