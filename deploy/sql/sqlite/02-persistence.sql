-- Orchestrator: Orleans ADO.NET grain storage for SQLite. Requires 01-main.sql. Idempotent.
-- (Single-host mode uses localhost clustering and in-memory reminders: no tables for those.)
--
-- Same contract as ../postgresql/03-persistence.sql:
--  * Read: zero or one row, columns PayloadBinary, Version.
--  * Write: exactly one row, column NewGrainStateVersion = new version, or NULL on conflict.
--  * Clear / Delete: exactly one row, first column = new version, or NULL on conflict.
-- Traps: every row that any statement of a stored query returns is read as a result, so
-- no PRAGMA (or other row-returning statement) may appear in these queries. SQLite has no
-- data-modifying CTEs, so each query is one atomic DML statement with RETURNING (SQLite
-- >= 3.35; Microsoft.Data.Sqlite bundles a newer one), followed by a SELECT that yields
-- the NULL "conflict" row only when that statement changed nothing (changes() = 0).

CREATE TABLE IF NOT EXISTS OrleansStorage
(
    GrainIdHash            INTEGER NOT NULL,
    GrainIdN0              INTEGER NOT NULL,
    GrainIdN1              INTEGER NOT NULL,
    GrainTypeHash          INTEGER NOT NULL,
    GrainTypeString        TEXT    NOT NULL,
    GrainIdExtensionString TEXT    NULL,
    ServiceId              TEXT    NOT NULL,
    PayloadBinary          BLOB    NULL,
    ModifiedOn             TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    Version                INTEGER NOT NULL
);

-- One row per grain state (NULL and empty key extension count as the same key). Also the
-- conflict target of the write below.
CREATE UNIQUE INDEX IF NOT EXISTS UX_OrleansStorage_Grain ON OrleansStorage
(
    GrainIdHash, GrainTypeHash, ServiceId, GrainIdN0, GrainIdN1, GrainTypeString,
    ifnull(GrainIdExtensionString, '')
);

INSERT OR REPLACE INTO OrleansQuery (QueryKey, QueryText) VALUES
('ReadFromStorageKey', '
    SELECT PayloadBinary, Version
    FROM OrleansStorage
    WHERE GrainIdHash = @GrainIdHash
      AND GrainTypeHash = @GrainTypeHash
      AND ServiceId = @ServiceId
      AND GrainIdN0 = @GrainIdN0
      AND GrainIdN1 = @GrainIdN1
      AND GrainTypeString = @GrainTypeString
      AND ifnull(GrainIdExtensionString, '''') = ifnull(@GrainIdExtensionString, '''')
    LIMIT 1;
');

-- One upsert decides everything atomically:
--  * no etag, no row       -> the SELECT yields the new row, inserted with version 1;
--  * etag, row at the etag -> the SELECT yields it, the unique index conflicts, DO UPDATE
--                             bumps the version;
--  * no etag but a row, or a row at another version -> the DO UPDATE WHERE is false: nothing;
--  * etag but no row       -> the SELECT yields nothing (EXISTS is false): nothing.
-- RETURNING gives the row on success; the second SELECT gives NULL when nothing changed.
INSERT OR REPLACE INTO OrleansQuery (QueryKey, QueryText) VALUES
('WriteToStorageKey', '
    INSERT INTO OrleansStorage
        (GrainIdHash, GrainIdN0, GrainIdN1, GrainTypeHash, GrainTypeString,
         GrainIdExtensionString, ServiceId, PayloadBinary, ModifiedOn, Version)
    SELECT @GrainIdHash, @GrainIdN0, @GrainIdN1, @GrainTypeHash, @GrainTypeString,
           @GrainIdExtensionString, @ServiceId, @PayloadBinary,
           strftime(''%Y-%m-%dT%H:%M:%fZ'', ''now''), 1
    WHERE @GrainStateVersion IS NULL
       OR EXISTS (
           SELECT 1 FROM OrleansStorage
           WHERE GrainIdHash = @GrainIdHash
             AND GrainTypeHash = @GrainTypeHash
             AND ServiceId = @ServiceId
             AND GrainIdN0 = @GrainIdN0
             AND GrainIdN1 = @GrainIdN1
             AND GrainTypeString = @GrainTypeString
             AND ifnull(GrainIdExtensionString, '''') = ifnull(@GrainIdExtensionString, ''''))
    ON CONFLICT (GrainIdHash, GrainTypeHash, ServiceId, GrainIdN0, GrainIdN1, GrainTypeString,
                 ifnull(GrainIdExtensionString, ''''))
    DO UPDATE SET
        PayloadBinary = excluded.PayloadBinary,
        ModifiedOn = excluded.ModifiedOn,
        Version = OrleansStorage.Version + 1
    WHERE OrleansStorage.Version = @GrainStateVersion
    RETURNING Version AS NewGrainStateVersion;

    SELECT NULL AS NewGrainStateVersion WHERE changes() = 0;
');

-- Clear keeps the row (payload NULL) and bumps the version.
INSERT OR REPLACE INTO OrleansQuery (QueryKey, QueryText) VALUES
('ClearStorageKey', '
    UPDATE OrleansStorage
    SET PayloadBinary = NULL,
        ModifiedOn = strftime(''%Y-%m-%dT%H:%M:%fZ'', ''now''),
        Version = Version + 1
    WHERE GrainIdHash = @GrainIdHash
      AND GrainTypeHash = @GrainTypeHash
      AND ServiceId = @ServiceId
      AND GrainIdN0 = @GrainIdN0
      AND GrainIdN1 = @GrainIdN1
      AND GrainTypeString = @GrainTypeString
      AND ifnull(GrainIdExtensionString, '''') = ifnull(@GrainIdExtensionString, '''')
      AND Version = @GrainStateVersion
    RETURNING Version AS NewGrainStateVersion;

    SELECT NULL AS NewGrainStateVersion WHERE changes() = 0;
');

-- Optional (AdoNetGrainStorageOptions.DeleteStateOnClear = true): removes the row.
INSERT OR REPLACE INTO OrleansQuery (QueryKey, QueryText) VALUES
('DeleteStorageKey', '
    DELETE FROM OrleansStorage
    WHERE GrainIdHash = @GrainIdHash
      AND GrainTypeHash = @GrainTypeHash
      AND ServiceId = @ServiceId
      AND GrainIdN0 = @GrainIdN0
      AND GrainIdN1 = @GrainIdN1
      AND GrainTypeString = @GrainTypeString
      AND ifnull(GrainIdExtensionString, '''') = ifnull(@GrainIdExtensionString, '''')
      AND Version = @GrainStateVersion
    RETURNING Version + 1 AS NewGrainStateVersion;

    SELECT NULL AS NewGrainStateVersion WHERE changes() = 0;
');
