"""The `stepflow` program: its command line (`stepflow.main`) and its composition root
(`stepflow.wiring`), the one place that imports every layer (engine, storage, api_compat,
stepflow_tui) and hands them to one another. Nothing imports this package: the layers below know
nothing of one another but the engine (tests/test_layers.py)."""
