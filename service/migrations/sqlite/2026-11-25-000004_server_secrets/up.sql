-- Secrets every replica must share (e.g. the key that signs paging
-- cursors), created on first start.
CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
