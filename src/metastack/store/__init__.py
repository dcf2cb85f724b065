"""The store: SQLAlchemy models, migrations and repositories. It knows nothing of HTTP."""
