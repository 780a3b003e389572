"""Orchestration: what the Airflow DAG files share (assets, the data interval of a run) and running them locally.

``assets``: the Airflow Assets the DAGs produce and consume; ``context``: a task's data interval from its run
(partition key, manual conf, or data interval); ``local``: ``airflow dags test`` on SQLite metadata.
"""
