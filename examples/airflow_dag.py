"""An Airflow DAG that runs the playbook every hour; the task fails when the status is critical
(exit 2) or nothing could be diagnosed (exit 3); with --fail-on critical a warning exits 0.

Copy into the DAGs folder of a worker that has the playbook installed (`make install` in
/opt/pg-session-playbook) and can reach the database; the DSN and webhook come from Airflow
Variables, the password from the worker's ~/.pgpass.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

PLAYBOOK = "/opt/pg-session-playbook/.venv/bin/playbook"
COMMAND = (
    f"{PLAYBOOK} run --dsn '{{{{ var.value.playbook_dsn }}}}' --duration 60 --since last"
    " --out /var/lib/pg-session-playbook/reports/latest --history /var/lib/pg-session-playbook/history"
    " --notify '{{ var.value.playbook_webhook }}' --fail-on critical"
    f" && {PLAYBOOK} history /var/lib/pg-session-playbook/history --keep 200 --keep-days 30"
)

with DAG(
    dag_id="pg_session_playbook",
    start_date=datetime(2026, 1, 1),
    schedule=timedelta(hours=1),
    catchup=False,
    max_active_runs=1,
    tags=["postgresql"],
) as dag:
    BashOperator(
        task_id="diagnose",
        bash_command=COMMAND,
        append_env=True,
    )
