"""Workflow files: reading and validating them (`load`), their model, and planning a run of one (`plan`)."""
