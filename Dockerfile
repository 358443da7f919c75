# Image for docker-compose.yaml: the official Airflow image plus what this project needs.
# Versions match requirements.txt (tests/test_compose.py checks the pins).
FROM apache/airflow:3.3.2

USER root
# pg_dump / pg_restore / psql for backups of the target before a migration is applied.
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

USER airflow
# Pin apache-airflow too, so pip cannot up- or downgrade the image's Airflow.
RUN pip install --no-cache-dir \
    "apache-airflow==3.3.2" \
    "apache-airflow-providers-postgres==7.1.1" \
    "zstandard==0.25.0"
