-- Orchestrator: Orleans ADO.NET clustering (membership) for PostgreSQL.
-- Used by UseAdoNetClustering (silos) and the ADO.NET gateway list provider (clients),
-- Invariant = "Npgsql". Requires 01-main.sql. Idempotent.
--
-- Contract (Orleans 10.4.x, Microsoft.Orleans.Clustering.AdoNet):
--  * One row per cluster in OrleansMembershipVersionTable; its Version is the table etag.
--    Every membership change must bump it, and must fail (return 0) when the caller's
--    @Version is stale.
--  * ClusterOptions.ClusterId is passed as @DeploymentId.
--  * Read queries must return the version row even when no silo row matches (LEFT JOIN),
--    with the column names Address, Port, Generation, SiloName, HostName, Status,
--    ProxyPort, SuspectTimes, StartTime, IAmAliveTime, Version.
--  * Insert/Update/InsertVersion return one row with one column, read as a boolean.
--  * Timestamps arrive as UTC DateTime (DbType.DateTime, which Npgsql sends as timestamptz).
-- All queries are plain SQL; the multi-step ones are single statements with data-modifying
-- CTEs, so each one is atomic without a stored function.

BEGIN;
SET LOCAL client_min_messages = warning;
SELECT pg_advisory_xact_lock(5219783477020160001);

CREATE TABLE IF NOT EXISTS OrleansMembershipVersionTable
(
    DeploymentId text        NOT NULL,
    Timestamp    timestamptz NOT NULL DEFAULT now(),
    Version      integer     NOT NULL DEFAULT 0,
    CONSTRAINT PK_OrleansMembershipVersionTable PRIMARY KEY (DeploymentId)
);

CREATE TABLE IF NOT EXISTS OrleansMembershipTable
(
    DeploymentId text        NOT NULL,
    Address      varchar(45) NOT NULL,
    Port         integer     NOT NULL,
    Generation   integer     NOT NULL,
    SiloName     text        NOT NULL,
    HostName     text        NOT NULL,
    Status       integer     NOT NULL,
    ProxyPort    integer     NULL,
    SuspectTimes text        NULL,
    StartTime    timestamptz NOT NULL,
    IAmAliveTime timestamptz NOT NULL,
    CONSTRAINT PK_OrleansMembershipTable PRIMARY KEY (DeploymentId, Address, Port, Generation),
    CONSTRAINT FK_OrleansMembershipTable_Version FOREIGN KEY (DeploymentId)
        REFERENCES OrleansMembershipVersionTable (DeploymentId) ON DELETE CASCADE
);

INSERT INTO OrleansQuery (QueryKey, QueryText) VALUES

-- Creates the cluster's version row if missing. Returns 1 when created, 0 when it existed.
('InsertMembershipVersionKey', $q$
    WITH created AS (
        INSERT INTO OrleansMembershipVersionTable (DeploymentId)
        VALUES (@DeploymentId)
        ON CONFLICT (DeploymentId) DO NOTHING
        RETURNING 1
    )
    SELECT count(*)::integer AS Created FROM created;
$q$),

-- Adds a silo row and bumps the table version, both or neither. The version row is
-- updated first (row lock), so concurrent writers with the same @Version serialise and
-- only one of them passes the Version check. Returns 1 on success, 0 otherwise.
('InsertMembershipKey', $q$
    WITH bumped AS (
        UPDATE OrleansMembershipVersionTable AS v
        SET Version = v.Version + 1,
            Timestamp = now()
        WHERE v.DeploymentId = @DeploymentId
          AND v.Version = @Version
          AND NOT EXISTS (
              SELECT 1 FROM OrleansMembershipTable AS m
              WHERE m.DeploymentId = @DeploymentId
                AND m.Address = @Address
                AND m.Port = @Port
                AND m.Generation = @Generation)
        RETURNING v.DeploymentId
    ),
    added AS (
        INSERT INTO OrleansMembershipTable
            (DeploymentId, Address, Port, Generation, SiloName, HostName,
             Status, ProxyPort, StartTime, IAmAliveTime)
        SELECT b.DeploymentId, @Address, @Port, @Generation, @SiloName, @HostName,
               @Status, @ProxyPort, @StartTime, @IAmAliveTime
        FROM bumped AS b
        ON CONFLICT DO NOTHING
        RETURNING 1
    )
    SELECT count(*)::integer AS Inserted FROM added;
$q$),

-- Changes a silo row (status, suspicions, liveness) and bumps the table version, both or
-- neither. Returns 1 on success, 0 when @Version is stale or the row does not exist.
('UpdateMembershipKey', $q$
    WITH bumped AS (
        UPDATE OrleansMembershipVersionTable AS v
        SET Version = v.Version + 1,
            Timestamp = now()
        WHERE v.DeploymentId = @DeploymentId
          AND v.Version = @Version
          AND EXISTS (
              SELECT 1 FROM OrleansMembershipTable AS m
              WHERE m.DeploymentId = @DeploymentId
                AND m.Address = @Address
                AND m.Port = @Port
                AND m.Generation = @Generation)
        RETURNING v.DeploymentId
    ),
    changed AS (
        UPDATE OrleansMembershipTable AS m
        SET Status = @Status,
            SuspectTimes = @SuspectTimes,
            IAmAliveTime = GREATEST(m.IAmAliveTime, @IAmAliveTime)
        FROM bumped AS b
        WHERE m.DeploymentId = b.DeploymentId
          AND m.Address = @Address
          AND m.Port = @Port
          AND m.Generation = @Generation
        RETURNING 1
    )
    SELECT count(*)::integer AS Updated FROM changed;
$q$),

-- Heartbeat. Does not touch the table version; never moves the time backwards.
('UpdateIAmAlivetimeKey', $q$
    UPDATE OrleansMembershipTable
    SET IAmAliveTime = GREATEST(IAmAliveTime, @IAmAliveTime)
    WHERE DeploymentId = @DeploymentId
      AND Address = @Address
      AND Port = @Port
      AND Generation = @Generation;
$q$),

-- One silo (or none) plus the table version, in one snapshot.
('MembershipReadRowKey', $q$
    SELECT v.DeploymentId,
           m.Address, m.Port, m.Generation, m.SiloName, m.HostName, m.Status,
           m.ProxyPort, m.SuspectTimes, m.StartTime, m.IAmAliveTime,
           v.Version
    FROM OrleansMembershipVersionTable AS v
    LEFT JOIN OrleansMembershipTable AS m
           ON m.DeploymentId = v.DeploymentId
          AND m.Address = @Address
          AND m.Port = @Port
          AND m.Generation = @Generation
    WHERE v.DeploymentId = @DeploymentId;
$q$),

-- All silos of the cluster plus the table version, in one snapshot.
('MembershipReadAllKey', $q$
    SELECT v.DeploymentId,
           m.Address, m.Port, m.Generation, m.SiloName, m.HostName, m.Status,
           m.ProxyPort, m.SuspectTimes, m.StartTime, m.IAmAliveTime,
           v.Version
    FROM OrleansMembershipVersionTable AS v
    LEFT JOIN OrleansMembershipTable AS m
           ON m.DeploymentId = v.DeploymentId
    WHERE v.DeploymentId = @DeploymentId;
$q$),

-- Gateways for clients: silos with the given status (Orleans passes 3 = Active) and a proxy port.
('GatewaysQueryKey', $q$
    SELECT Address, ProxyPort, Generation
    FROM OrleansMembershipTable
    WHERE DeploymentId = @DeploymentId
      AND Status = @Status
      AND ProxyPort > 0;
$q$),

-- Drops the whole cluster (rows and version).
('DeleteMembershipTableEntriesKey', $q$
    DELETE FROM OrleansMembershipTable WHERE DeploymentId = @DeploymentId;
    DELETE FROM OrleansMembershipVersionTable WHERE DeploymentId = @DeploymentId;
$q$),

-- Bulk clean-up (used only when CleanupDefunctSiloEntryKey is absent): dead silos
-- (Status 6) that started and last answered before the cut-off and carry no suspicions.
('CleanupDefunctSiloEntriesKey', $q$
    DELETE FROM OrleansMembershipTable
    WHERE DeploymentId = @DeploymentId
      AND Status = 6
      AND IAmAliveTime < @IAmAliveTime
      AND StartTime < @IAmAliveTime
      AND COALESCE(SuspectTimes, '') = '';
$q$),

-- Per-row clean-up (Orleans 10.4 prefers it): Orleans reads all rows, picks dead ones older
-- than the cut-off, and deletes each only if it is still exactly as read.
('CleanupDefunctSiloEntryKey', $q$
    DELETE FROM OrleansMembershipTable
    WHERE DeploymentId = @DeploymentId
      AND Address = @Address
      AND Port = @Port
      AND Generation = @Generation
      AND Status = 6
      AND StartTime = @StartTime
      AND IAmAliveTime = @IAmAliveTime
      AND COALESCE(SuspectTimes, '') = COALESCE(@SuspectTimes, '');
$q$)

ON CONFLICT (QueryKey) DO UPDATE SET QueryText = EXCLUDED.QueryText;

COMMIT;
