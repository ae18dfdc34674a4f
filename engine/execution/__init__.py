"""The machinery of one running execution: its run, its state, the pump of each command's output,
the marker tree and the table of status transitions."""
