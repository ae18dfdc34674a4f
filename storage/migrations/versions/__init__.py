"""Alembic revisions (the package marker lets setuptools ship them; Alembic skips this file)."""
