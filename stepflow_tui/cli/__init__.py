"""The `stepflow` command line: `main` is the composition root; the rest are its subcommands' parts."""
