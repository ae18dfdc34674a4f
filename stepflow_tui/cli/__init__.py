"""The `stepflow` command line: `main` parses it, `wiring` (the composition root)
builds the layers; the rest are its subcommands' parts."""
