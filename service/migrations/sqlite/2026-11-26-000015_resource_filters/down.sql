DROP INDEX resources_filter;
