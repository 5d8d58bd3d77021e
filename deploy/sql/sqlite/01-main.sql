-- Orchestrator: Orleans ADO.NET base schema for SQLite (embedded single-host mode; run first).
--
-- Orleans' ADO.NET grain storage reads its SQL from this table at start:
--     SELECT QueryKey, QueryText FROM OrleansQuery WHERE QueryKey = 'WriteToStorageKey' OR ...
-- Provider invariant: exactly "System.Data.SQLite" (Orleans maps it to
-- Microsoft.Data.Sqlite's factory). Idempotent: safe to run on every start.
--
-- Connection settings (journal_mode=WAL, synchronous=NORMAL, busy_timeout) belong to the
-- connection, not to this file and never to a stored query: set them when each connection
-- opens (AdoNetGrainStorageOptions.DataSource). journal_mode=WAL is persistent, so running
-- it once here is harmless, but we leave it to the host.

CREATE TABLE IF NOT EXISTS OrleansQuery
(
    QueryKey  TEXT NOT NULL PRIMARY KEY,
    QueryText TEXT NOT NULL
);
