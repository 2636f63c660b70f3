-- A search's candidates arrive as (res_type, res_id) from the index tables,
-- and most are then filtered on the resource row itself: not deleted, tick
-- after the feed cursor, last updated in range. Through the primary key each
-- candidate cost a second descent, into the table, even when it was then
-- dropped; a count visited the table for every match. With the filtered
-- columns in the index, SQLite filters and counts from the index alone and
-- visits the table only for rows it returns (a feed page at 1M referrals:
-- about 90 table descents instead of 360). PostgreSQL plans these with its
-- own statistics and needs no such index.
CREATE INDEX resources_filter ON resources (res_type, res_id, deleted, tick, last_updated);
