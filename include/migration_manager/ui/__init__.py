"""The Migrations and rules pages (Airflow plugin UI): run logs, executed SQL, migration files,
backups, and configuring / starting migrations.

``app.create_app()`` builds the FastAPI app that ``plugins/migrations_plugin.py`` mounts, with the
routers ``migrations`` (runs, backups), ``files`` and ``rules``; ``deps`` holds their shared
dependencies, ``render`` the templates; ``catalog`` reads the migration store; ``charts`` draws
the process timeline.
"""
