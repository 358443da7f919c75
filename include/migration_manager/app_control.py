"""The running application around the target database: restart it after a migration writes.

NocoBase keeps collections, fields, ACL and plugin state in memory; a running app does not see
what a migration wrote until it reloads. Its HTTP API has the action for it: the ``app``
resource's ``restart`` action (``@nocobase/plugin-client``, ``dist/server/server.js``:
``app.resourceManager.define({name: "app", actions: {restart(ctx) {ctx.app.runAsCLI(["restart"])}}})``,
guarded by the ACL snippet ``app`` that root and admin have), called as
``POST /api/app:restart``. It answers at once and restarts in the background; while it does,
``GET /api/__health_check`` (the gateway, ``@nocobase/server`` ``lib/gateway``) answers 503
with the app's state, and ``200 ok`` once it runs again.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from migration_manager.check_outcomes import AppRestart
from migration_manager.errors import AppRestartError, ConfigError

log = logging.getLogger(__name__)

HEALTH = "/api/__health_check"
RESTART = "/api/app:restart"
SIGN_IN = "/api/auth:signIn"


@dataclass(frozen=True)
class AppEndpoint:
    """Where the target app answers and how to sign in (from the target connection's extra)."""

    url: str
    token: str | None = None  # an API key (plugin-api-keys) or any bearer token
    account: str | None = None
    password: str | None = None
    authenticator: str = "basic"

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> AppEndpoint | None:
        """``app_url`` with ``app_api_token``, or ``app_account`` and ``app_password``.

        Never raises (every task reads the connection, the rollback too); :meth:`validate`
        says what is wrong, and the pre-flight check calls it before anything is written.
        """
        url = str(extra.get("app_url") or "").strip().rstrip("/")
        if not url:
            return None
        return cls(
            url=url,
            token=str(extra.get("app_api_token") or "").strip() or None,
            account=str(extra.get("app_account") or "").strip() or None,
            password=str(extra.get("app_password") or "") or None,
            authenticator=str(extra.get("app_authenticator") or "basic"),
        )

    def validate(self, conn_id: str = "the target connection") -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"{conn_id}: app_url {self.url!r} in the connection's extra must start with "
                "http:// or https://"
            )
        if self.token is None and not (self.account and self.password):
            raise ConfigError(
                f"{conn_id}: app_url is set but the app cannot be signed in to; add app_api_token "
                "(an API key of a user allowed app:restart) or app_account and app_password to "
                "the connection's extra"
            )


def _request(
    url: str,
    *,
    method: str = "GET",
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def health(app: AppEndpoint, timeout: float = 5.0) -> tuple[int, str]:
    """(HTTP status, body) of the health check; (0, reason) when nothing answers."""
    try:
        return _request(app.url + HEALTH, timeout=timeout)
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(getattr(exc, "reason", exc))


def _token(app: AppEndpoint) -> str:
    if app.token:
        return app.token
    try:
        code, text = _request(
            app.url + SIGN_IN,
            method="POST",
            body={"account": app.account, "password": app.password},
            headers={"X-Authenticator": app.authenticator},
        )
    except (urllib.error.URLError, OSError) as exc:
        raise AppRestartError(
            f"Signing in to the app at {app.url} failed ({getattr(exc, 'reason', exc)}); "
            "check app_url in the target connection's extra and that the app runs"
        ) from exc
    try:
        token = json.loads(text)["data"]["token"]
    except (ValueError, KeyError, TypeError):
        token = None
    if code != 200 or not token:
        raise AppRestartError(
            f"Signing in to the app at {app.url} as {app.account} failed (HTTP {code}); check "
            "app_account/app_password (or use app_api_token) in the target connection's extra"
        )
    return str(token)


def wait_healthy(
    app: AppEndpoint, timeout: float = 300.0, interval: float = 1.0
) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    code, body = health(app)
    while not (code == 200 and body.strip() == "ok"):
        if time.monotonic() > deadline:
            raise AppRestartError(
                f"The app at {app.url} did not answer its health check within {timeout:.0f} s "
                f"(last answer: {code or 'no answer'} {body[:200]}); look at the app's logs and "
                "restart it by hand"
            )
        time.sleep(interval)
        code, body = health(app)
    return code, body


def restart(app: AppEndpoint, *, timeout: float = 300.0, down_window: float = 15.0) -> AppRestart:
    """Ask the app to restart, then wait until its health check answers ``ok`` again.

    The request returns before the restart begins; the health check is polled for up to
    ``down_window`` seconds to see the app leave the running state (recorded as
    ``went_down``), then until it is healthy.
    """
    try:
        app.validate()
    except ConfigError as exc:
        raise AppRestartError(f"{exc}; restart the app by hand") from exc
    token = _token(app)
    started = time.monotonic()
    try:
        code, text = _request(
            app.url + RESTART,
            method="POST",
            body={},
            headers={"Authorization": f"Bearer {token}", "X-Authenticator": app.authenticator},
            timeout=30.0,
        )
    except (urllib.error.URLError, OSError) as exc:
        raise AppRestartError(
            f"Asking the app at {app.url} to restart failed ({getattr(exc, 'reason', exc)}); restart it by hand"
        ) from exc
    if code != 200:
        raise AppRestartError(
            f"The app at {app.url} refused to restart (HTTP {code}: {text[:300]}); the user needs "
            "the app:restart permission (root or admin), or restart it by hand"
        )
    went_down = False
    window = time.monotonic() + down_window
    while time.monotonic() < window:
        hc, body = health(app, timeout=2.0)
        if not (hc == 200 and body.strip() == "ok"):
            went_down = True
            break
        time.sleep(0.2)
    code, body = wait_healthy(app, timeout=timeout)
    seconds = round(time.monotonic() - started, 1)
    log.info(
        "The app at %s restarted and is healthy again after %.1f s%s",
        app.url,
        seconds,
        "" if went_down else " (it never looked down: the restart may have been instant)",
    )
    return AppRestart(
        url=app.url, status="restarted", went_down=went_down, seconds=seconds, health=body.strip()
    )
