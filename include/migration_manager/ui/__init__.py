"""The Migrations page (Airflow plugin UI): run logs, executed SQL, migration files and backups.

``app.create_app()`` builds the FastAPI app that ``plugins/migrations_plugin.py`` mounts;
``catalog`` reads the migration store; ``charts`` draws the process timeline.
"""
