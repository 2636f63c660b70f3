DROP TABLE resource_creators;
