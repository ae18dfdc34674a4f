"""`python -m stepflow_tui.cli`."""

from stepflow_tui.cli.main import main

raise SystemExit(main())
