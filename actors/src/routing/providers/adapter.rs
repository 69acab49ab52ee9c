//! What the HTTP adapters share beyond sending bytes ([`super::http`]): the [`HttpAdapter`]
//! shape every one of them fills in (build the request, read the answer, decode the stream),
//! the one [`ChatProvider`] implementation that drives it, the [`StreamDecoder`] trait and the
//! [`delta_stream`] that drives any decoder, and `data:` URL parsing. Provider-neutral: the
//! wire formats stay in the adapters' own files.

use eventsource_stream::Event;
use futures_util::{future::BoxFuture, stream::BoxStream, StreamExt};
use serde_json::{json, Map, Value};

use super::{http, ChatProvider, Connection, DeltaStream, ProviderError};
use crate::chat::{ChatDelta, ChatRequest, ChatResponse};

/// The SSE events of one streamed answer ([`http::sse`]).
pub type Events = BoxStream<'static, Result<Event, ProviderError>>;

/// Turns the events of one streamed answer into deltas. Pure: it is fed each SSE event's name
/// and data in order, then [`StreamDecoder::finish`] once the body has ended.
pub trait StreamDecoder {
    /// The deltas carried by one SSE event (`event_name` is its `event:` field, empty when it
    /// has none).
    fn on_event(&mut self, event_name: &str, data: &str) -> Result<Vec<ChatDelta>, ProviderError>;

    /// Called when the body ends: the deltas held back until then (usage), or `StreamBroken`
    /// when the answer had not ended properly.
    fn finish(&mut self) -> Result<Vec<ChatDelta>, ProviderError>;

    /// The provider's end marker was seen: nothing after it is read.
    fn is_done(&self) -> bool {
        false
    }
}

/// Drives `decoder` over `events`: yields its deltas (events with none are skipped), ends after
/// its end marker or with its verdict on the body's end, and ends at the first error.
pub fn delta_stream<D: StreamDecoder + Send + 'static>(events: Events, decoder: D) -> DeltaStream {
    futures_util::stream::unfold((events, decoder, false), |(mut events, mut decoder, done)| async move {
        if done {
            return None;
        }
        loop {
            let (step, ended) = match events.next().await {
                None => (decoder.finish(), true),
                Some(Err(e)) => (Err(e), true),
                Some(Ok(event)) => (decoder.on_event(&event.event, &event.data), false),
            };
            match step {
                Err(e) => return Some((vec![Err(e)], (events, decoder, true))),
                Ok(deltas) => {
                    let done = ended || decoder.is_done();
                    if deltas.is_empty() && !done {
                        continue;
                    }
                    return Some((deltas.into_iter().map(Ok).collect::<Vec<_>>(), (events, decoder, done)));
                }
            }
        }
    })
    .flat_map(futures_util::stream::iter)
    .boxed()
}

/// One chat call as [`ChatProvider`] receives it. `max_output_tokens` is the bound the
/// request's hold assumed: always sent upstream.
pub struct ChatCall<'a> {
    pub model: &'a str,
    pub req: &'a ChatRequest,
    pub max_output_tokens: u32,
    pub stream: bool,
}

/// One HTTP chat API: how to ask it and how to read its answers. Every `HttpAdapter` is a
/// [`ChatProvider`]: whole answers are sent with the connection's deadline and parsed; streams
/// are opened (only the wait for headers and the gaps between events are bounded, never the
/// whole, possibly long, stream) and decoded by a fresh [`HttpAdapter::Decoder`].
pub trait HttpAdapter: Send + Sync {
    type Decoder: StreamDecoder + Default + Send + 'static;

    /// Reads a whole answer's JSON body.
    const PARSE_RESPONSE: fn(&Value) -> Result<ChatResponse, ProviderError>;

    /// Turns a failed answer into the error: by default its status and the usual message shapes.
    const READ_ERROR: fn(http::ErrorResponse) -> ProviderError = http::ErrorResponse::into_error;

    /// The upstream request for a call, streamed or whole.
    fn request(conn: &Connection, call: &ChatCall<'_>) -> Result<reqwest::RequestBuilder, ProviderError>;
}

impl<A: HttpAdapter> ChatProvider for A {
    fn chat<'a>(
        &'a self,
        conn: &'a Connection,
        model: &'a str,
        req: &'a ChatRequest,
        max_output_tokens: u32,
    ) -> BoxFuture<'a, Result<ChatResponse, ProviderError>> {
        Box::pin(async move {
            let request = A::request(conn, &ChatCall { model, req, max_output_tokens, stream: false })?;
            let response = http::send_with(conn, request, A::READ_ERROR).await?;
            (A::PARSE_RESPONSE)(&http::json_body(response).await?)
        })
    }

    fn chat_stream<'a>(
        &'a self,
        conn: &'a Connection,
        model: &'a str,
        req: &'a ChatRequest,
        max_output_tokens: u32,
    ) -> BoxFuture<'a, Result<DeltaStream, ProviderError>> {
        Box::pin(async move {
            let request = A::request(conn, &ChatCall { model, req, max_output_tokens, stream: true })?;
            let events = http::open_stream_checked(conn, request, A::READ_ERROR).await?;
            Ok(delta_stream(events, A::Decoder::default()))
        })
    }
}

/// Where an API takes the account's key.
#[derive(Debug, Clone, Copy)]
pub enum KeyIn {
    /// `Authorization: Bearer {key}`.
    Bearer,
    /// A header of this name.
    Header(&'static str),
}

/// `request` with the connection's key, when it has one, where `key_in` says.
pub fn with_key(request: reqwest::RequestBuilder, conn: &Connection, key_in: KeyIn) -> reqwest::RequestBuilder {
    match (&conn.api_key, key_in) {
        (None, _) => request,
        (Some(key), KeyIn::Bearer) => request.bearer_auth(key),
        (Some(key), KeyIn::Header(name)) => request.header(name, key),
    }
}

/// One embeddings call: `inputs` with a provider's `model`; `dims` asks for shortened vectors.
#[derive(Debug, Clone, Copy)]
pub struct EmbedCall<'a> {
    pub model: &'a str,
    pub inputs: &'a [String],
    pub dims: Option<u32>,
}

/// Sets the sampling parameters `req` gives (temperature, top-p, stop sequences, seed: in that
/// order) in `fields`, under the names `names` one API gives them in the same order.
pub fn insert_sampling(fields: &mut Map<String, Value>, req: &ChatRequest, names: [&str; 4]) {
    let [temperature, top_p, stop, seed] = names;
    if let Some(t) = req.temperature {
        fields.insert(temperature.into(), json!(t));
    }
    if let Some(p) = req.top_p {
        fields.insert(top_p.into(), json!(p));
    }
    if !req.stop.is_empty() {
        fields.insert(stop.into(), json!(req.stop));
    }
    if let Some(s) = req.seed {
        fields.insert(seed.into(), json!(s));
    }
}

/// Splits a `data:` URL into its media type and base64 payload (`image/png` when it names
/// none); `None` for anything else.
pub fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((if media_type.is_empty() { "image/png" } else { media_type }, data))
}

/// Helpers the adapters' unit tests share.
#[cfg(test)]
pub mod testing {
    use std::time::Duration;

    use eventsource_stream::Event;
    use futures_util::StreamExt;

    use super::{Events, StreamDecoder};
    use crate::chat::{
        ChatDelta, ChatRequest, ChatResponse, ContentPart, FinishReason, Message, ModelChoice, Role, ToolCall, Usage,
    };
    use crate::routing::providers::{Connection, ProviderError, ProviderKind};

    pub fn request(messages: Vec<Message>) -> ChatRequest {
        ChatRequest::new(ModelChoice::Native("test-model".into()), messages)
    }

    /// A request of text turns.
    pub fn conversation(turns: &[(Role, &str)]) -> ChatRequest {
        request(turns.iter().map(|(role, text)| Message::text(*role, *text)).collect())
    }

    pub fn assistant_calls(calls: Vec<ToolCall>) -> Message {
        Message { role: Role::Assistant, content: Vec::new(), tool_calls: calls, tool_call_id: None, name: None }
    }

    pub fn tool_result(id: &str, text: &str) -> Message {
        Message {
            role: Role::Tool,
            content: vec![ContentPart::Text(text.into())],
            tool_calls: Vec::new(),
            tool_call_id: Some(id.into()),
            name: None,
        }
    }

    /// A user turn of these parts.
    pub fn user_parts(content: Vec<ContentPart>) -> Message {
        Message { role: Role::User, content, tool_calls: Vec::new(), tool_call_id: None, name: None }
    }

    /// A connection to `base_url` with key `api_key` and no guard.
    pub fn connection(provider: ProviderKind, base_url: &str, api_key: &str) -> Connection {
        Connection {
            provider,
            base_url: base_url.into(),
            api_key: Some(api_key.into()),
            extra_headers: Vec::new(),
            http: crate::routing::client::client(),
            timeout: Duration::from_secs(5),
            chat_url: Default::default(),
            guard: None,
        }
    }

    /// Feeds `(event, data)` pairs to a fresh decoder and collects every delta, then the
    /// end-of-body verdict.
    pub fn run<D: StreamDecoder + Default>(
        events: &[(&str, &str)],
    ) -> (Vec<ChatDelta>, Result<Vec<ChatDelta>, ProviderError>) {
        let mut decoder = D::default();
        let mut out = Vec::new();
        for (name, data) in events {
            out.extend(decoder.on_event(name, data).unwrap());
        }
        let end = decoder.finish();
        (out, end)
    }

    /// Asserts a whole answer's text, finish reason and usage, and that it calls no tool.
    pub fn assert_text_answer(
        answer: &ChatResponse,
        content: Option<&str>,
        finish_reason: FinishReason,
        usage: Option<Usage>,
    ) {
        assert_eq!(answer.content.as_deref(), content);
        assert!(answer.tool_calls.is_empty());
        assert_eq!(answer.finish_reason, finish_reason);
        assert_eq!(answer.usage, usage);
    }

    /// Asserts that `stream` yields the text `text`, a `Stop` and `usage`, and nothing else.
    pub async fn assert_text_stop_usage(stream: crate::routing::providers::DeltaStream, text: &str, usage: Usage) {
        let out: Vec<_> = stream.collect().await;
        let expected = vec![
            Ok(ChatDelta::Text(text.into())),
            Ok(ChatDelta::Finish(FinishReason::Stop)),
            Ok(ChatDelta::Usage(usage)),
        ];
        assert_eq!(out, expected);
    }

    /// Asserts that `stream` yields the text `text`, then breaks.
    pub async fn assert_text_then_broken(stream: crate::routing::providers::DeltaStream, text: &str) {
        let out: Vec<_> = stream.collect().await;
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], Ok(ChatDelta::Text(text.into())));
        assert!(matches!(out[1], Err(ProviderError::StreamBroken(_))));
    }

    /// A stream of `(event, data)` SSE events and transport errors.
    pub fn events(items: Vec<Result<(&str, &str), ProviderError>>) -> Events {
        let items: Vec<Result<Event, ProviderError>> = items
            .into_iter()
            .map(|r| r.map(|(name, data)| Event { event: name.into(), data: data.into(), ..Event::default() }))
            .collect();
        futures_util::stream::iter(items).boxed()
    }
}
