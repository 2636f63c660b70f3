-- Distributes sp-hub's tables on a Citus cluster. See README.md next to this
-- file for why each table is placed where it is, and what does not work yet.
--
-- Run on the coordinator, as the owner of the tables, on a new database
-- right after `sp-hub migrate` has created them, before any sp-hub replica
-- starts (data from an existing server goes in afterwards, see README.md):
--
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f deploy/citus/distribute.sql
--
-- Needs the citus extension in that database (CREATE EXTENSION citus;).
-- Each statement commits on its own; the script stops at the first error.

-- 1. The one schema change. Citus requires the distribution column in
-- every primary key and unique constraint of a distributed table;
-- resource_versions is keyed on `seq` alone. (res_id, seq) is still unique
-- and keeps `seq` paging; UNIQUE (res_type, res_id, version) already holds
-- res_id. This belongs in a migration of its own before production use.
ALTER TABLE resource_versions DROP CONSTRAINT resource_versions_pkey;
ALTER TABLE resource_versions ADD PRIMARY KEY (res_id, seq);

-- 2. A resource's current row, its history and its index rows, all on the
-- shard of its id. Distributed on res_id alone (Citus takes one column):
-- ids are unique within a type, and Patient/x and Task/x sharing a shard
-- does no harm. Server-assigned ids are UUIDs, so the hash spreads evenly.
SELECT create_distributed_table('resources', 'res_id');
SELECT create_distributed_table('resource_versions', 'res_id', colocate_with => 'resources');
SELECT create_distributed_table('search_token', 'res_id', colocate_with => 'resources');
SELECT create_distributed_table('search_string', 'res_id', colocate_with => 'resources');
SELECT create_distributed_table('search_date', 'res_id', colocate_with => 'resources');
SELECT create_distributed_table('search_reference', 'res_id', colocate_with => 'resources');
SELECT create_distributed_table('search_uri', 'res_id', colocate_with => 'resources');
SELECT create_distributed_table('search_number', 'res_id', colocate_with => 'resources');
SELECT create_distributed_table('search_quantity', 'res_id', colocate_with => 'resources');
SELECT create_distributed_table('resource_creators', 'res_id', colocate_with => 'resources');

-- 3. Small tables every node may need: a full copy on each.
-- server_secrets: a few rows (signing keys), written once, read at start-up.
SELECT create_reference_table('server_secrets');
-- clients: the registered clients, read on every token request, rarely
-- written.
SELECT create_reference_table('clients');
-- assertion_jti: one row per token request, kept until the assertion
-- expires. Token requests are few (one per client every few minutes), so a
-- copy on every node costs little and a replay is refused on any of them.
SELECT create_reference_table('assertion_jti');
-- feed_clock: ONE row, updated by every writing transaction. As a reference
-- table each write also updates every node's copy (a two-phase commit). See
-- README.md, "The change feed": this is the part that needs work first.
SELECT create_reference_table('feed_clock');

-- 4. Notifications. subscriptions: one row per Subscription, updated when a
-- change matches it (its event count); outbox: what waits for delivery,
-- always read and cleared by subscription. Co-located on the subscription
-- id, so the outbox reads and writes of one subscription stay on one shard;
-- a write that notifies spans its resource's shard and the subscription's
-- (a two-phase commit). Not done yet: the delivery workers' claim looks at
-- every subscription with FOR UPDATE SKIP LOCKED, which Citus refuses on a
-- query over several shards; on Citus it must become a conditional update
-- of each candidate's lease.
SELECT create_distributed_table('subscriptions', 'id');
SELECT create_distributed_table('outbox', 'subscription_id', colocate_with => 'subscriptions');

-- __diesel_schema_migrations stays an ordinary table on the coordinator:
-- only `sp-hub migrate` and /readyz read it, through the coordinator.
