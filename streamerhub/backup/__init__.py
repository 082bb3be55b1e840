"""Backups of the database with PostgreSQL's own pg_dump / pg_restore: taken daily and before
every schema upgrade, each verified by restoring it into a scratch database, pruned by
retention, and restored onto a fresh data dir by `streamerhub backup restore`."""
