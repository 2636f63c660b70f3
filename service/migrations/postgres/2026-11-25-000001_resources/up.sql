-- Every version ever written, in commit order (seq). A delete is a version
-- with no body. UNIQUE(res_type, res_id, version) is what makes two writers
-- of the same next version collide: exactly one insert can succeed.
CREATE TABLE resource_versions (
    seq BIGSERIAL PRIMARY KEY,
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    method TEXT NOT NULL,
    body TEXT,
    UNIQUE (res_type, res_id, version)
);
CREATE INDEX resource_versions_type_seq ON resource_versions (res_type, seq);
CREATE INDEX resource_versions_last_updated ON resource_versions (last_updated);

-- The current version of each resource: reads and searches never touch history.
CREATE TABLE resources (
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    last_updated TEXT NOT NULL,
    deleted BOOLEAN NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (res_type, res_id)
);
CREATE INDEX resources_type_last_updated ON resources (res_type, last_updated);

-- Token search index, written in the same transaction as the resource.
CREATE TABLE search_token (
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    param TEXT NOT NULL,
    system TEXT NOT NULL,
    code TEXT NOT NULL,
    -- system|code in one column, so "this system and this code" is one
    -- IN-list lookup, like "any system, this code" on `code`.
    syscode TEXT NOT NULL,
    PRIMARY KEY (res_type, res_id, param, system, code)
);
CREATE INDEX search_token_syscode ON search_token (res_type, param, syscode);
CREATE INDEX search_token_code ON search_token (res_type, param, code);
CREATE INDEX search_token_system ON search_token (res_type, param, system);
