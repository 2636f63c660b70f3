DROP TABLE assertion_jti;
DROP TABLE clients;
