DROP INDEX resources_type_tick;
DROP INDEX resource_versions_type_tick;
DROP INDEX resource_versions_tick;
ALTER TABLE resources DROP COLUMN tick;
ALTER TABLE resource_versions DROP COLUMN tick;
DROP TABLE feed_clock;
