-- Run once by the postgres image on an empty volume, as POSTGRES_USER, after it created
-- POSTGRES_DB (optuna: the study). MLflow's tracking store and its basic-auth store each
-- get a database of their own: both manage their schema with alembic, as Optuna does,
-- and alembic keeps one version table per database.
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
