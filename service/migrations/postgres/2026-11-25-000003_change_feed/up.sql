-- The change feed. `seq` is handed out when a row is inserted, and on
-- PostgreSQL transactions commit in another order than they insert, so a
-- poller following `seq` can pass a change that commits later. `tick` is
-- taken from the one row of feed_clock as the last step of each writing
-- transaction; that row stays locked until the commit, so ticks are handed
-- out in commit order and a reader that sees tick n has seen all below it.
CREATE TABLE feed_clock (
    id INTEGER PRIMARY KEY,
    last BIGINT NOT NULL
);
INSERT INTO feed_clock (id, last) VALUES (1, 0);

ALTER TABLE resource_versions ADD COLUMN tick BIGINT;
ALTER TABLE resources ADD COLUMN tick BIGINT NOT NULL DEFAULT 0;

-- Data written before the feed existed is in the past of every poller.
UPDATE resource_versions SET tick = seq;
UPDATE resources SET tick = COALESCE(
    (SELECT MAX(v.seq) FROM resource_versions v
     WHERE v.res_type = resources.res_type AND v.res_id = resources.res_id), 0);
UPDATE feed_clock SET last = COALESCE((SELECT MAX(seq) FROM resource_versions), 0);

CREATE INDEX resource_versions_tick ON resource_versions (tick);
CREATE INDEX resource_versions_type_tick ON resource_versions (res_type, tick);
CREATE INDEX resources_type_tick ON resources (res_type, tick);
