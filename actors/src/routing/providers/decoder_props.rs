//! Property tests: whatever bytes an upstream sends, each provider's decoders answer with
//! deltas or a clear error, never a panic.

use proptest::prelude::*;
use serde_json::Value;

use super::adapter::StreamDecoder;
use super::{anthropic, gemini, openai};

/// Field names the decoders look for, so generated JSON reaches their deeper paths.
const NAMES: &[&str] = &[
    "choices",
    "delta",
    "content",
    "role",
    "tool_calls",
    "index",
    "id",
    "function",
    "name",
    "arguments",
    "finish_reason",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "type",
    "message",
    "content_block",
    "text",
    "input_json_delta",
    "partial_json",
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "error",
    "candidates",
    "parts",
    "functionCall",
    "args",
    "finishReason",
    "usageMetadata",
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "promptFeedback",
    "blockReason",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "message_delta",
    "message_stop",
    "tool_use",
    "text_delta",
];

fn json_value() -> impl Strategy<Value = Value> {
    crate::test_support::json_value(NAMES)
}

/// Raw text, JSON text, and JSON with a stray byte cut off.
fn event_data() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,200}",
        json_value().prop_map(|v| v.to_string()),
        json_value().prop_map(|v| {
            let s = v.to_string();
            s.chars().take(s.chars().count() / 2).collect()
        }),
    ]
}

proptest! {
    #[test]
    fn openai_decoders_never_panic(data in event_data(), body in json_value()) {
        let _ = openai::parse_chunk(&data);
        let mut state = openai::StreamState::new();
        let _ = state.on_event("", &data);
        let _ = state.finish();
        let _ = openai::parse_response(&body);
    }

    #[test]
    fn anthropic_decoders_never_panic(
        events in proptest::collection::vec((proptest::sample::select(NAMES), event_data()), 0..8),
        body in json_value(),
    ) {
        let mut state = anthropic::StreamState::new();
        for (name, data) in &events {
            let _ = state.on_event(name, data);
        }
        let _ = state.finish();
        let _ = anthropic::parse_response(&body);
    }

    #[test]
    fn gemini_decoders_never_panic(events in proptest::collection::vec(event_data(), 0..8), body in json_value()) {
        let mut state = gemini::StreamState::new();
        for data in &events {
            let _ = state.on_event("", data);
        }
        let _ = state.finish();
        let _ = gemini::parse_response(&body);
    }
}
