DROP TABLE export_members;
DROP TABLE export_jobs;
