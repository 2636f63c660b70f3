-- Bulk Data export jobs (`GET /$export`, `GET /Group/{id}/$export`). A job
-- lives here, not in a replica's memory, so any replica answers its status,
-- serves its files and cancels it. The files are not stored: they are read
-- from the resources as of `tick` (the change feed's position at kick-off)
-- when they are downloaded.
CREATE TABLE export_jobs (
    id TEXT PRIMARY KEY,
    -- Only this client sees the job (others get 404).
    client_id TEXT NOT NULL,
    -- Whose view the counts take: the client's organisation and role.
    organization TEXT NOT NULL,
    role TEXT NOT NULL,
    -- The kick-off URL, for the manifest's `request`.
    request TEXT NOT NULL,
    transaction_time TEXT NOT NULL,
    tick BIGINT NOT NULL,
    -- `_since` in the stored instant form, if given.
    since TEXT,
    -- The Group of a Group export (its members are in export_members).
    group_id TEXT,
    -- The resource types to export, comma-separated.
    types TEXT NOT NULL,
    -- JSON object: resource type -> number of resources, filled type by
    -- type by the counting step (its progress).
    counts TEXT NOT NULL,
    -- 'counting', 'done' or 'failed'.
    state TEXT NOT NULL,
    error TEXT,
    -- Unix seconds until which a replica's counting step holds the job;
    -- past it, the next status request on any replica takes it over.
    lease_until BIGINT NOT NULL,
    -- Unix seconds after which the job is gone.
    expires BIGINT NOT NULL
);
CREATE INDEX export_jobs_client ON export_jobs (client_id, state);
CREATE INDEX export_jobs_expires ON export_jobs (expires);

-- The Patients of a Group export, as the Group was at kick-off.
CREATE TABLE export_members (
    job_id TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    PRIMARY KEY (job_id, patient_id)
);
