# Image for docker-compose.yaml: the official Airflow image plus what this project needs.
# Versions match requirements.txt (tests/test_compose.py checks the pins).
FROM apache/airflow:3.3.2

USER root
# pg_dump / pg_restore / psql for backups of the target before a migration is applied. They
# must be of the servers' major version (or newer): Debian 12's postgresql-client is 15, the
# demo servers' version; for other servers install postgresql-client-<major> from PGDG here.
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

USER airflow
# Pin apache-airflow too, so pip cannot up- or downgrade the image's Airflow.
# celery + the celery provider: CeleryExecutor; the amazon provider + s3fs: an s3:// store.
RUN pip install --no-cache-dir \
    "apache-airflow==3.3.2" \
    "apache-airflow-providers-postgres==7.1.1" \
    "apache-airflow-providers-celery==3.26.0" \
    "celery==5.6.3" \
    "apache-airflow-providers-amazon==9.39.0" \
    "s3fs==2026.9.0" \
    "zstandard==0.25.0"
