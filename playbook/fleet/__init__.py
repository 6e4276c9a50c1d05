"""`playbook fleet`: one playbook run per database, as Dask tasks, and one page over all of them.

targets.py reads and checks TARGETS.yaml (on the client); job.py is what a Dask worker executes for
one target; run.py drives the cluster and writes fleet.json and index.html.
"""
