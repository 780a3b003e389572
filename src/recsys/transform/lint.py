"""SQL lint of the dbt project with sqlfluff (dbt templater), configured by the repository's ``.sqlfluff``."""

from __future__ import annotations

import os
from typing import Any

from recsys.config import Settings, project_dir
from recsys.transform.dbt import _temporary_env


def lint_sql(settings: Settings) -> list[dict[str, Any]]:
    """Lint every model, macro and test under ``dbt/``; returns the violations (empty when clean).

    The dbt templater compiles the project, so the env vars ``dbt/profiles.yml`` reads come from
    ``settings.tool_env()``; dbt's target folder goes under ``{home}/dbt/lint``.
    """
    from sqlfluff.core import FluffConfig, Linter

    root = project_dir()
    env = {**settings.tool_env(), "DBT_TARGET_PATH": str(settings.home / "dbt" / "lint" / "target")}
    cwd = os.getcwd()
    with _temporary_env(env):
        os.chdir(root)
        try:
            config = FluffConfig.from_path(str(root))
            result = Linter(config=config).lint_paths((str(root / "dbt" / "models"), str(root / "dbt" / "tests")))
        finally:
            os.chdir(cwd)
    return [
        {"file": record["filepath"], **violation}
        for record in result.as_records()
        for violation in record["violations"]
    ]
