-- Orchestrator: Orleans ADO.NET grain storage for PostgreSQL.
-- Used by AddAdoNetGrainStorage(..., Invariant = "Npgsql"). Requires 01-main.sql. Idempotent.
--
-- Contract (Orleans 10.4.x, Microsoft.Orleans.Persistence.AdoNet):
--  * A grain state is identified by @ServiceId, @GrainTypeString, @GrainIdN0, @GrainIdN1,
--    @GrainIdExtensionString (string keys travel here), plus two hashes of them
--    (@GrainIdHash, @GrainTypeHash) that Orleans computes for indexing.
--  * Orleans serialises the state itself and always sends bytes in @PayloadBinary
--    (we plug in a MessagePack serializer); JSON/XML columns are not used by 10.4.
--  * The etag is the integer Version. @GrainStateVersion is NULL when the grain has never
--    seen a stored row.
--  * Read returns zero or one row with the columns PayloadBinary and Version. A row whose
--    PayloadBinary is NULL (after a clear) means "no state", but keeps its Version.
--  * Write returns exactly one row with the column NewGrainStateVersion: the new version on
--    success, NULL on a version conflict (Orleans then throws InconsistentStateException).
--  * Clear (and the optional Delete, used when DeleteStateOnClear = true) return exactly one
--    row whose first column is the new version, or NULL on conflict.
-- Returning a NULL row rather than no row matters: with zero rows and a non-null etag
-- Orleans 10.4 would not detect the conflict.

BEGIN;
SET LOCAL client_min_messages = warning;
SELECT pg_advisory_xact_lock(5219783477020160001);

CREATE TABLE IF NOT EXISTS OrleansStorage
(
    GrainIdHash            integer     NOT NULL,
    GrainIdN0              bigint      NOT NULL,
    GrainIdN1              bigint      NOT NULL,
    GrainTypeHash          integer     NOT NULL,
    GrainTypeString        text        NOT NULL,
    GrainIdExtensionString text        NULL,
    ServiceId              text        NOT NULL,
    PayloadBinary          bytea       NULL,
    ModifiedOn             timestamptz NOT NULL DEFAULT now(),
    Version                integer     NOT NULL
);

-- One row per grain state. Unlike a plain index this makes the first insert race-free:
-- two activations writing a new state at once cannot both create a row.
-- A NULL key extension and an empty one are treated as the same key (no Orleans grain id
-- produces both for the same grain type).
CREATE UNIQUE INDEX IF NOT EXISTS UX_OrleansStorage_Grain ON OrleansStorage
(
    GrainIdHash, GrainTypeHash, ServiceId, GrainIdN0, GrainIdN1, GrainTypeString,
    (COALESCE(GrainIdExtensionString, ''))
);

-- Room in every page for the next version of its rows: a write replaces the row (PostgreSQL's MVCC), and with free
-- space in the same page the new version is a heap-only tuple (HOT): no new entry in the unique index above, less WAL
-- and less for autovacuum. Every state row is rewritten often (a backup writes its VM's row several times), so
-- almost every write is such an update. Applies to pages written from now on; no rewrite of existing data.
ALTER TABLE OrleansStorage SET (fillfactor = 50);

INSERT INTO OrleansQuery (QueryKey, QueryText) VALUES

('ReadFromStorageKey', $q$
    SELECT PayloadBinary, Version
    FROM OrleansStorage
    WHERE GrainIdHash = @GrainIdHash
      AND GrainTypeHash = @GrainTypeHash
      AND ServiceId = @ServiceId
      AND GrainIdN0 = @GrainIdN0
      AND GrainIdN1 = @GrainIdN1
      AND GrainTypeString = @GrainTypeString
      AND COALESCE(GrainIdExtensionString, '') = COALESCE(@GrainIdExtensionString, '')
    LIMIT 1;
$q$),

-- Optimistic concurrency in one statement:
--  * known etag  -> update only the row still at that version, version + 1;
--  * no etag     -> insert version 1 only if no row exists (unique index, DO NOTHING).
-- Exactly one row comes back; NewGrainStateVersion is NULL when nothing was written.
('WriteToStorageKey', $q$
    WITH updated AS (
        UPDATE OrleansStorage
        SET PayloadBinary = @PayloadBinary,
            Version = Version + 1,
            ModifiedOn = now()
        WHERE @GrainStateVersion IS NOT NULL
          AND GrainIdHash = @GrainIdHash
          AND GrainTypeHash = @GrainTypeHash
          AND ServiceId = @ServiceId
          AND GrainIdN0 = @GrainIdN0
          AND GrainIdN1 = @GrainIdN1
          AND GrainTypeString = @GrainTypeString
          AND COALESCE(GrainIdExtensionString, '') = COALESCE(@GrainIdExtensionString, '')
          AND Version = @GrainStateVersion
        RETURNING Version
    ),
    inserted AS (
        INSERT INTO OrleansStorage
            (GrainIdHash, GrainIdN0, GrainIdN1, GrainTypeHash, GrainTypeString,
             GrainIdExtensionString, ServiceId, PayloadBinary, ModifiedOn, Version)
        SELECT @GrainIdHash, @GrainIdN0, @GrainIdN1, @GrainTypeHash, @GrainTypeString,
               @GrainIdExtensionString, @ServiceId, @PayloadBinary, now(), 1
        WHERE @GrainStateVersion IS NULL
        ON CONFLICT DO NOTHING
        RETURNING Version
    )
    SELECT (SELECT Version FROM updated
            UNION ALL
            SELECT Version FROM inserted
            LIMIT 1) AS NewGrainStateVersion;
$q$),

-- Clear keeps the row (payload NULL) and bumps the version, so a stale activation still
-- conflicts afterwards.
('ClearStorageKey', $q$
    WITH cleared AS (
        UPDATE OrleansStorage
        SET PayloadBinary = NULL,
            Version = Version + 1,
            ModifiedOn = now()
        WHERE GrainIdHash = @GrainIdHash
          AND GrainTypeHash = @GrainTypeHash
          AND ServiceId = @ServiceId
          AND GrainIdN0 = @GrainIdN0
          AND GrainIdN1 = @GrainIdN1
          AND GrainTypeString = @GrainTypeString
          AND COALESCE(GrainIdExtensionString, '') = COALESCE(@GrainIdExtensionString, '')
          AND Version = @GrainStateVersion
        RETURNING Version
    )
    SELECT (SELECT Version FROM cleared) AS NewGrainStateVersion;
$q$),

-- Optional (only read when AdoNetGrainStorageOptions.DeleteStateOnClear = true): removes
-- the row. Returns the would-be next version (any non-NULL value other than the old etag
-- means success), NULL on conflict.
('DeleteStorageKey', $q$
    WITH removed AS (
        DELETE FROM OrleansStorage
        WHERE GrainIdHash = @GrainIdHash
          AND GrainTypeHash = @GrainTypeHash
          AND ServiceId = @ServiceId
          AND GrainIdN0 = @GrainIdN0
          AND GrainIdN1 = @GrainIdN1
          AND GrainTypeString = @GrainTypeString
          AND COALESCE(GrainIdExtensionString, '') = COALESCE(@GrainIdExtensionString, '')
          AND Version = @GrainStateVersion
        RETURNING Version + 1 AS NextVersion
    )
    SELECT (SELECT NextVersion FROM removed) AS NewGrainStateVersion;
$q$)

ON CONFLICT (QueryKey) DO UPDATE SET QueryText = EXCLUDED.QueryText;

COMMIT;
