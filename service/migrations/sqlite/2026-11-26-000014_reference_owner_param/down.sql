DROP INDEX search_reference_owner;
CREATE INDEX search_reference_owner ON search_reference (res_type, res_id);
