"""Persistence adapter: SQLAlchemy models, sessions, migrations and repositories."""
