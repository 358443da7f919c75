"""Promote application configuration between PostgreSQL databases.

The engine is plain Python: it imports neither Airflow nor anything that needs a
scheduler. ``migration_manager.airflow`` holds the thin Airflow adapters.
"""

from __future__ import annotations

__version__ = "0.1.0"
