DROP TABLE search_token;
DROP TABLE resources;
DROP TABLE resource_versions;
