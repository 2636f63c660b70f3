DROP TABLE outbox;
DROP TABLE subscriptions;
