ALTER TABLE clients DROP COLUMN jwks_url;
