"""Transform stage: build the dbt project (raw lake -> staging -> marts) in-process."""

from recsys.transform.dbt import DbtBuildResult, NodeResult, build, dbt_project_dir

__all__ = ["DbtBuildResult", "NodeResult", "build", "dbt_project_dir"]
