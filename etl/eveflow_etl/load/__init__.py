"""Loading validated frames into PostgreSQL: DDL, binary COPY staging, upsert, order books, ledger."""
