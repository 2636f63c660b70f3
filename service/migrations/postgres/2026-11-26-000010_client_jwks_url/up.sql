-- A client may publish its keys at a URL instead (fetched behind an SSRF
-- guard and cached); jwks is then empty.
ALTER TABLE clients ADD COLUMN jwks_url TEXT;
