-- Typed search-index tables, one row per value a SearchParameter's
-- expression selects, written in the same transaction as the resource.
-- Every table is keyed for lookups by (type, param, value) and holds
-- (res_type, res_id) so a write can replace a resource's rows.

-- string: `norm` is lower-cased with accents removed (default and
-- :contains matching); `exact` is the value as written (:exact).
CREATE TABLE search_string (
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    param TEXT NOT NULL,
    norm TEXT NOT NULL,
    exact TEXT NOT NULL
);
CREATE INDEX search_string_lookup ON search_string (res_type, param, norm);
CREATE INDEX search_string_owner ON search_string (res_type, res_id);

-- date: every value is the range [low, high) its precision implies, as
-- fixed-width UTC instants (open Period ends are the extreme instants).
CREATE TABLE search_date (
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    param TEXT NOT NULL,
    low TEXT NOT NULL,
    high TEXT NOT NULL
);
CREATE INDEX search_date_low ON search_date (res_type, param, low);
CREATE INDEX search_date_high ON search_date (res_type, param, high);
CREATE INDEX search_date_owner ON search_date (res_type, res_id);

-- reference: local references as (target_type, target_id); anything else
-- (absolute URLs, canonicals) in `url`.
CREATE TABLE search_reference (
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    param TEXT NOT NULL,
    target_type TEXT NOT NULL,
    target_id TEXT NOT NULL,
    url TEXT NOT NULL
);
CREATE INDEX search_reference_lookup ON search_reference (res_type, param, target_id, target_type);
CREATE INDEX search_reference_target ON search_reference (target_type, target_id);
CREATE INDEX search_reference_owner ON search_reference (res_type, res_id);

CREATE TABLE search_uri (
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    param TEXT NOT NULL,
    uri TEXT NOT NULL
);
CREATE INDEX search_uri_lookup ON search_uri (res_type, param, uri);
CREATE INDEX search_uri_owner ON search_uri (res_type, res_id);

-- number and quantity: the value as a double; quantities also keep their
-- system and code (UCUM or other) for `value|system|code` searches.
CREATE TABLE search_number (
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    param TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL
);
CREATE INDEX search_number_lookup ON search_number (res_type, param, value);
CREATE INDEX search_number_owner ON search_number (res_type, res_id);

CREATE TABLE search_quantity (
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    param TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    system TEXT NOT NULL,
    code TEXT NOT NULL
);
CREATE INDEX search_quantity_lookup ON search_quantity (res_type, param, value);
CREATE INDEX search_quantity_owner ON search_quantity (res_type, res_id);
