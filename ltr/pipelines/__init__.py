"""Task functions of the Airflow DAGs (feature pipeline, retrain, promotion).

DAG files in ``dags/`` stay thin and call these; the same functions run from a shell.
"""
