//! Property tests: whatever a client sends to the chat and embeddings routes, parsing ends
//! in a request or a 4xx with a message, never a panic or a 500.

use axum::response::IntoResponse;
use proptest::prelude::*;
use serde_json::Value;

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
    tokaroo_actors::test_support::json_value(NAMES)
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
