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

diesel::allow_tables_to_appear_in_same_query!(resource_versions, resources, search_token);
