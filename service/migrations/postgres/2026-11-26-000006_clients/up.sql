-- The client registry (SMART backend services): who may ask for a token,
-- on behalf of which organisation, in which role, with which scopes, and
-- the public keys its client assertions are checked against.
CREATE TABLE clients (
    id TEXT PRIMARY KEY,
    organization TEXT NOT NULL,
    role TEXT NOT NULL,
    scopes TEXT NOT NULL,
    -- A JSON Web Key Set, given at registration.
    jwks TEXT NOT NULL,
    disabled BOOLEAN NOT NULL,
    created TEXT NOT NULL
);

-- Every client assertion's `jti`, kept until the assertion expires, so a
-- replay is refused by whichever replica sees it.
CREATE TABLE assertion_jti (
    client_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX assertion_jti_expires ON assertion_jti (expires);
