"""The reason a one-shot `airflow dags test` run failed is read back from its log into the error users see."""

from recsys.orchestration.local import failure_reasons

TRACEBACK = """\
{t}Z [error    ] Task failed with exception     [task] loc=task_runner.py:1676
Traceback (most recent call last):
  File "/x/airflow/sdk/execution_time/task_runner.py", line 1579, in _run_task_and_map_outcome
    result = _execute_task(context=context, ti=ti, log=log)
  File "/x/dags/recsys_training.py", line 66, in training_set
    return training_set_stage(get_settings(), *_week(context))
{error}
{t}Z [info     ] ::group::Post Execute          [task] loc=task_runner.py:1677
"""


def _start(task: str, t: str) -> str:
    return f"{t}Z [info     ] [DAG TEST] starting task_id={task} map_index=-1 [airflow.sdk.definitions.dag]\n"


def test_each_failed_task_gets_its_last_attempts_exception() -> None:
    log = (
        _start("training_set", "2026-12-03T22:17:48.838365")
        + "2026-12-03T22:17:50.000000Z [info     ] stage training_set: 3.2 s [recsys.timing]\n"
        + _start("train", "2026-12-03T22:17:51.000000")
        + TRACEBACK.format(t="2026-12-03T22:17:52.000000", error="ValueError: first attempt")
        + _start("train", "2026-12-03T22:22:56.308938")  # the retry
        + TRACEBACK.format(
            t="2026-12-03T22:22:57.000000",
            error="recsys.errors.TrainingError: no positive interactions before 2020-01-12; extract more history",
        )
    )
    assert failure_reasons(log) == {
        "train": "recsys.errors.TrainingError: no positive interactions before 2020-01-12; extract more history"
    }


def test_a_multi_line_message_is_kept_whole_and_clipped() -> None:
    error = "recsys.errors.ValidationFailedError: raw events refused\n- 3 of 317 rows unexpected\n  result: r.json"
    log = _start("validate_raw", "2026-12-03T22:17:48.0") + TRACEBACK.format(t="2026-12-03T22:17:49.0", error=error)
    assert failure_reasons(log) == {
        "validate_raw": "recsys.errors.ValidationFailedError: raw events refused\n    - 3 of 317 rows unexpected"
        "\n      result: r.json"
    }
    assert failure_reasons(log, max_lines=1)["validate_raw"].endswith("raw events refused\n    ...")


def test_a_log_without_a_task_failure_gives_no_reason() -> None:
    log = _start("extract", "2026-12-03T22:17:48.838365") + "2026-12-03T22:17:49.0Z [info     ] done\n"
    assert failure_reasons(log) == {}
