//! Property tests: whatever a client sends to the chat and embeddings routes, parsing ends
//! in a request or a 4xx with a message, never a panic or a 500.

use axum::response::IntoResponse;
use proptest::prelude::*;
use serde_json::{Map, Value};

use super::{chat, embeddings, error::ApiError, extract::parse_json_object};

/// Field names the parsers look for, so generated bodies reach their deeper paths.
const NAMES: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "image_url",
    "url",
    "detail",
    "tools",
    "function",
    "name",
    "description",
    "parameters",
    "tool_choice",
    "tool_calls",
    "tool_call_id",
    "id",
    "arguments",
    "response_format",
    "json_schema",
    "schema",
    "strict",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "seed",
    "user",
    "stream",
    "stream_options",
    "include_usage",
    "input",
    "dimensions",
    "encoding_format",
    "system",
    "user",
    "assistant",
    "tool",
    "auto",
    "none",
    "required",
    "json_object",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        proptest::sample::select(NAMES).prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(NAMES), inner), 0..6).prop_map(|fields| Value::Object(
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<Map<_, _>>()
            )),
        ]
    })
}

fn assert_client_error(error: ApiError) {
    let status = error.into_response().status();
    assert!(status.is_client_error(), "a bad body must be a 4xx, got {status}");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_body_parser(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        match parse_json_object(&bytes) {
            Ok(v) => {
                if let Err(e) = chat::parse_request(&v) { assert_client_error(e) }
                if let Err(e) = embeddings::parse(&v) { assert_client_error(e) }
            }
            Err(e) => assert_client_error(e),
        }
    }

    #[test]
    fn arbitrary_json_bodies_parse_or_get_a_4xx(body in json_value(), model in proptest::sample::select(&["auto", "fast", "max", "gpt-4o-mini", ""][..])) {
        let mut body = body;
        // Half the time, make it look like a real request so the deeper fields are reached.
        if let Value::Object(map) = &mut body {
            map.entry("model").or_insert_with(|| Value::from(model));
        }
        if let Err(e) = chat::parse_request(&body) { assert_client_error(e) }
        if let Err(e) = embeddings::parse(&body) { assert_client_error(e) }
    }
}
