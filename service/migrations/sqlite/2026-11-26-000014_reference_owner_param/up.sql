-- The access checks ask "does resource (type, id) refer through `param` to
-- …" once per candidate row. With only (res_type, res_id) in the owner
-- index, SQLite (no statistics) preferred the covering lookup index on
-- (res_type, param, …) and scanned every owner reference of every Task for
-- each candidate: a VCS poll took 300 ms at 10k referrals and minutes once
-- one owner held thousands of Tasks. With param and the target in the
-- owner index, the check is one index descent, index-only.
DROP INDEX search_reference_owner;
CREATE INDEX search_reference_owner ON search_reference (res_type, res_id, param, target_type, target_id);
