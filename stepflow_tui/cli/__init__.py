"""The `stepflow` command's views and parts: running and following executions, history, targets,
plain output, errors. The program itself (its arguments, and the composition root that builds the
layers and hands them in) is the `stepflow` package, which imports this one, never the reverse."""
