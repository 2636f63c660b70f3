-- Push notifications (R4 Subscription, rest-hook). A Subscription resource
-- is stored like any other; what delivering it needs lives here, kept in
-- step with the resource by the write path.
CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    -- The subscriber's view: its organisation id ('' for an admin client)
    -- and role; the criteria match only what that view may read.
    organization TEXT NOT NULL,
    role TEXT NOT NULL,
    res_type TEXT NOT NULL,
    -- The criteria's query string, after the type and '?'.
    criteria TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    -- JSON array of "Name: value" headers sent with every notification.
    headers TEXT NOT NULL,
    full_resource BOOLEAN NOT NULL,
    -- The HMAC-SHA256 key that signs each delivery; never in the resource.
    secret TEXT NOT NULL,
    -- requested, active, error or off: the resource's status.
    status TEXT NOT NULL,
    -- events-since-subscription-start: the last event number handed out.
    events BIGINT NOT NULL,
    -- Consecutive failed deliveries, and when the next may be tried.
    failures INTEGER NOT NULL,
    next_attempt TEXT NOT NULL,
    -- A replica delivering for this subscription holds it until then.
    leased_until TEXT NOT NULL,
    last_error TEXT NOT NULL
);
CREATE INDEX subscriptions_by_type ON subscriptions (res_type, status);

-- Notifications not yet delivered, written in the transaction of the change
-- they announce; deleted once the endpoint has accepted them.
CREATE TABLE outbox (
    seq BIGSERIAL PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    -- handshake or event-notification
    kind TEXT NOT NULL,
    event_number BIGINT NOT NULL,
    res_type TEXT NOT NULL,
    res_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX outbox_by_subscription ON outbox (subscription_id, seq);
