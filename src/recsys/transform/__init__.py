"""Transform stage: build the dbt project (raw lake -> staging -> marts) in-process, and read its marts."""

from recsys.transform.dbt import DbtBuildResult, NodeResult, build, dbt_project_dir
from recsys.transform.warehouse import mart_location, publish_embeddings, read_mart

__all__ = [
    "DbtBuildResult",
    "NodeResult",
    "build",
    "dbt_project_dir",
    "mart_location",
    "publish_embeddings",
    "read_mart",
]
