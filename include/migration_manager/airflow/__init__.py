"""Thin Airflow adapters over the engine: connections, the migration store, operators, DAG wiring.

Only this subpackage imports Airflow; the engine above it does not.
"""
