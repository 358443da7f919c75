"""The Migrations page inside the Airflow UI.

Mounts the FastAPI app of ``migration_manager.ui`` at ``/migrations`` (every route requires an
authenticated Airflow user: plugin apps are public unless they say otherwise) and adds a
**Migrations** entry to the UI's navigation, which shows the page inside the UI at
``/plugin/migrations``.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from migration_manager.ui.lazy import PREFIX, LazyApp


def _icon(color: str) -> str:
    """The nav icon (two opposed arrows: source -> target), as an SVG data URL."""
    return (
        "data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24'>"
        f"<path d='M4 7h11l-3-3m3 3-3 3M20 17H9l3 3m-3-3 3-3' fill='none' stroke='{color}' "
        "stroke-width='2' stroke-linecap='round' stroke-linejoin='round'/></svg>"
    )


class MigrationsPlugin(AirflowPlugin):
    name = "migration_manager"
    fastapi_apps = [
        {
            # built on the first request: tasks import plugins too, and never serve the page
            "app": LazyApp("migration_manager.ui.app:create_app", prefix=PREFIX),
            "url_prefix": PREFIX,
            "name": "Migrations",
        }
    ]
    external_views = [
        {
            "name": "Migrations",
            "href": f"{PREFIX}/",
            "destination": "nav",
            "url_route": "migrations",
            "icon": _icon("%232d3748"),
            "icon_dark_mode": _icon("%23e2e8f0"),
        }
    ]
