"""schema.setup_alembic: Alembic's loggers and comparator plugin are set up when needed, not at import."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from migration_manager.schema import setup_alembic

NOISY = ("alembic.runtime.migration", "alembic.runtime.plugins", "alembic.ddl.postgresql")


def test_importing_the_engine_changes_no_logger_and_loads_no_alembic() -> None:
    code = (
        "import logging, sys\n"
        "import migration_manager.schema, migration_manager.execute\n"
        f"print([logging.getLogger(n).level for n in {NOISY!r}], 'alembic' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    )
    assert out.stdout.strip() == "[0, 0, 0] False"


def test_setup_quiets_alembic_and_may_be_called_again() -> None:
    setup_alembic()
    setup_alembic()
    assert all(logging.getLogger(n).level == logging.WARNING for n in NOISY)
