-- Orchestrator: Orleans ADO.NET base schema for PostgreSQL (run first).
--
-- Every Orleans ADO.NET provider (clustering, grain storage, reminders) starts by running
--     SELECT QueryKey, QueryText FROM OrleansQuery
-- and then executes the SQL text stored under the keys it needs, binding its own named
-- parameters (@DeploymentId, @GrainIdHash, ...). This file only creates that lookup table;
-- 02..04 fill it. Idempotent: safe to run on every silo start.
--
-- Apply each file as ONE command (psql -f, or a single NpgsqlCommand) and not inside an
-- outer transaction: the file manages its own transaction.

BEGIN;
SET LOCAL client_min_messages = warning;
-- Serialise concurrent runs (several silos starting at once): DDL below is not race-free
-- on its own. Same lock key in every Orchestrator schema file.
SELECT pg_advisory_xact_lock(5219783477020160001);

CREATE TABLE IF NOT EXISTS OrleansQuery
(
    QueryKey  varchar(64) NOT NULL,
    QueryText text        NOT NULL,
    CONSTRAINT PK_OrleansQuery PRIMARY KEY (QueryKey)
);

COMMIT;
