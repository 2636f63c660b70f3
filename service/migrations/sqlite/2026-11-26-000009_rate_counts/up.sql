-- Requests per client per minute, shared by every replica (the per-client
-- request rate limit).
CREATE TABLE rate_counts (
    client_id TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (client_id, window_start)
);
CREATE INDEX rate_counts_window ON rate_counts (window_start);
