//! Table definitions shared by both backends (the migrations keep them equal).

diesel::table! {
    resource_versions (seq) {
        seq -> BigInt,
        res_type -> Text,
        res_id -> Text,
        version -> Integer,
        last_updated -> Text,
        method -> Text,
        body -> Nullable<Text>,
        tick -> Nullable<BigInt>,
    }
}

diesel::table! {
    feed_clock (id) {
        id -> Integer,
        last -> BigInt,
    }
}

diesel::table! {
    resources (res_type, res_id) {
        res_type -> Text,
        res_id -> Text,
        version -> Integer,
        last_updated -> Text,
        deleted -> Bool,
        body -> Text,
        tick -> BigInt,
    }
}

diesel::table! {
    search_token (res_type, res_id, param, system, code) {
        res_type -> Text,
        res_id -> Text,
        param -> Text,
        system -> Text,
        code -> Text,
        syscode -> Text,
    }
}

// The typed index tables have no primary key of their own; diesel needs
// one named, so each names its owner columns (never used to find a row).
diesel::table! {
    search_string (res_type, res_id, param, norm) {
        res_type -> Text,
        res_id -> Text,
        param -> Text,
        norm -> Text,
        exact -> Text,
    }
}

diesel::table! {
    search_date (res_type, res_id, param, low) {
        res_type -> Text,
        res_id -> Text,
        param -> Text,
        low -> Text,
        high -> Text,
    }
}

diesel::table! {
    search_reference (res_type, res_id, param, target_id) {
        res_type -> Text,
        res_id -> Text,
        param -> Text,
        target_type -> Text,
        target_id -> Text,
        url -> Text,
    }
}

diesel::table! {
    search_uri (res_type, res_id, param, uri) {
        res_type -> Text,
        res_id -> Text,
        param -> Text,
        uri -> Text,
    }
}

diesel::table! {
    search_number (res_type, res_id, param, value) {
        res_type -> Text,
        res_id -> Text,
        param -> Text,
        value -> Double,
    }
}

diesel::table! {
    search_quantity (res_type, res_id, param, value) {
        res_type -> Text,
        res_id -> Text,
        param -> Text,
        value -> Double,
        system -> Text,
        code -> Text,
    }
}

diesel::table! {
    server_secrets (name) {
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    clients (id) {
        id -> Text,
        organization -> Text,
        role -> Text,
        scopes -> Text,
        jwks -> Text,
        disabled -> Bool,
        created -> Text,
        jwks_url -> Nullable<Text>,
    }
}

diesel::table! {
    assertion_jti (client_id, jti) {
        client_id -> Text,
        jti -> Text,
        expires -> BigInt,
    }
}

diesel::table! {
    resource_creators (res_type, res_id) {
        res_type -> Text,
        res_id -> Text,
        organization -> Text,
    }
}

diesel::table! {
    audit_log (seq) {
        seq -> BigInt,
        recorded -> Text,
        request_id -> Text,
        client_id -> Text,
        organization -> Text,
        method -> Text,
        path -> Text,
        query -> Text,
        written -> Text,
        status -> Integer,
        prev_hash -> Text,
        hash -> Text,
    }
}

diesel::table! {
    audit_head (id) {
        id -> Integer,
        seq -> BigInt,
        hash -> Text,
    }
}

diesel::table! {
    rate_counts (client_id, window_start) {
        client_id -> Text,
        window_start -> BigInt,
        count -> BigInt,
    }
}

diesel::table! {
    subscriptions (id) {
        id -> Text,
        organization -> Text,
        role -> Text,
        res_type -> Text,
        criteria -> Text,
        endpoint -> Text,
        headers -> Text,
        full_resource -> Bool,
        secret -> Text,
        status -> Text,
        events -> BigInt,
        failures -> Integer,
        next_attempt -> Text,
        leased_until -> Text,
        last_error -> Text,
    }
}

diesel::table! {
    outbox (seq) {
        seq -> BigInt,
        subscription_id -> Text,
        delivery_id -> Text,
        kind -> Text,
        event_number -> BigInt,
        res_type -> Text,
        res_id -> Text,
        version -> Integer,
        created -> Text,
    }
}

diesel::table! {
    export_jobs (id) {
        id -> Text,
        client_id -> Text,
        organization -> Text,
        role -> Text,
        request -> Text,
        transaction_time -> Text,
        tick -> BigInt,
        since -> Nullable<Text>,
        group_id -> Nullable<Text>,
        types -> Text,
        counts -> Text,
        state -> Text,
        error -> Nullable<Text>,
        lease_until -> BigInt,
        expires -> BigInt,
    }
}

diesel::table! {
    export_members (job_id, patient_id) {
        job_id -> Text,
        patient_id -> Text,
    }
}
