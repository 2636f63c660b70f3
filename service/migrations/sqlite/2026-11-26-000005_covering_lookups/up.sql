-- Lookup indexes end with res_id, so the lookup that drives a search reads
-- the ids it needs from the index alone (an index-only scan) instead of
-- visiting one table row per entry. The reverse reference index also names
-- the source type and parameter, for `_has` and `_revinclude`.
DROP INDEX search_token_syscode;
DROP INDEX search_token_code;
DROP INDEX search_token_system;
DROP INDEX search_string_lookup;
DROP INDEX search_date_low;
DROP INDEX search_date_high;
DROP INDEX search_reference_lookup;
DROP INDEX search_reference_target;
DROP INDEX search_uri_lookup;
DROP INDEX search_number_lookup;
DROP INDEX search_quantity_lookup;

CREATE INDEX search_token_syscode ON search_token (res_type, param, syscode, res_id);
CREATE INDEX search_token_code ON search_token (res_type, param, code, res_id);
CREATE INDEX search_token_system ON search_token (res_type, param, system, res_id);
CREATE INDEX search_string_lookup ON search_string (res_type, param, norm, res_id);
CREATE INDEX search_date_low ON search_date (res_type, param, low, res_id);
CREATE INDEX search_date_high ON search_date (res_type, param, high, res_id);
CREATE INDEX search_reference_lookup ON search_reference (res_type, param, target_id, target_type, res_id);
CREATE INDEX search_reference_target ON search_reference (target_type, target_id, res_type, param, res_id);
CREATE INDEX search_uri_lookup ON search_uri (res_type, param, uri, res_id);
CREATE INDEX search_number_lookup ON search_number (res_type, param, value, res_id);
CREATE INDEX search_quantity_lookup ON search_quantity (res_type, param, value, res_id);
