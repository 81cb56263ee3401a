"""Alembic migrations; a package so setuptools ships them."""
