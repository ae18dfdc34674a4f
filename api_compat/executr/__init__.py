"""The executr job-queue API (specs/executr-api.md) under /api/v1: jobs submitted here, claimed, run
and reported by worker processes (the reference's executor, `stepflow worker`)."""
