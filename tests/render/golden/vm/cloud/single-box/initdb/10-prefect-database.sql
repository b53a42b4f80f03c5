-- Runs once, when the single-box Postgres volume is first created: a database for the
-- Prefect server next to the pipeline's own (PGDATABASE).
CREATE DATABASE prefect;
