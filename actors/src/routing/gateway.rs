//! Executing a routed chat request: try the planned routes in order, fall back on retryable
//! failures, escalate once on a weak `auto` answer, and price what was used.

use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;

use crate::{
    chat::{ChatRequest, ChatResponse, FinishReason, Mode, ModelChoice, ResponseFormat, Usage},
    error::EngineError,
    routing::catalog::CatalogModel,
    routing::health::Blame,
    routing::providers::{adapter, DeltaStream, ProviderError, ProviderKind},
    routing::router::{Route, Router, Scope},
    routing::upstreams::{BillingMode, Upstream},
};

/// Routes tried for one request before it fails.
pub const MAX_ATTEMPTS: usize = 3;

/// How a request was served; the admin view of the route taken and why.
#[derive(Debug, Clone, Serialize)]
pub struct RouteRecord {
    pub provider: &'static str,
    pub execution_source: &'static str,
    pub billing_mode: BillingMode,
    pub upstream: String,
    pub model: String,
    pub reason: String,
    /// Earlier routes that failed: `upstream/model: code (the upstream's words, truncated)`.
    /// For the operator only (`/admin/usage`): the words can name the provider's account.
    pub failed_attempts: Vec<String>,
    pub escalated: bool,
    /// What earlier answers of this request cost (a weak answer before escalation): the
    /// provider billed them, so the request pays for them.
    pub earlier_attempts_usd: f64,
    /// The output bound sent upstream (what the request's hold assumed).
    pub max_output_tokens: u32,
    #[serde(skip)]
    pub priced_as: CatalogModel,
    #[serde(skip)]
    pub baseline: Option<CatalogModel>,
}

impl RouteRecord {
    pub fn cost_usd(&self, usage: Usage) -> f64 {
        self.priced_as.cost(usage.prompt_tokens, usage.completion_tokens)
    }

    pub fn baseline_usd(&self, usage: Usage) -> f64 {
        self.baseline
            .as_ref()
            .map_or_else(|| self.cost_usd(usage), |b| b.cost(usage.prompt_tokens, usage.completion_tokens))
    }
}

pub struct ChatOutcome {
    pub response: ChatResponse,
    /// The provider's usage, or our own count when it reported none.
    pub usage: Usage,
    pub route: RouteRecord,
    pub latency_ms: u64,
}

/// A chat no route could serve. `owed` is set when an upstream accepted the request before
/// failing (its answer timed out after its head arrived): it worked on the prompt and bills
/// it, so the request still pays for that prompt. Its `earlier_attempts_usd` carries the
/// prompts of any other such attempts.
pub struct ChatFailure {
    pub error: EngineError,
    pub owed: Option<RouteRecord>,
}

impl From<EngineError> for ChatFailure {
    fn from(error: EngineError) -> Self {
        Self { error, owed: None }
    }
}

/// The prompts of attempts an upstream accepted but never answered in full.
#[derive(Default)]
struct Owed {
    route: Option<RouteRecord>,
    usd: f64,
}

impl Owed {
    fn add(&mut self, route: &Route, req: &ChatRequest, failed: &[String], baseline: &Option<CatalogModel>) {
        // Only the operator's own provider accounts bill us for it: a BYOK key bills its
        // owner directly, and a self-hosted server bills nobody.
        if route.upstream.billing_mode() != BillingMode::Managed {
            return;
        }
        let this = record(route, req, failed, baseline);
        self.usd += this.cost_usd(Usage { prompt_tokens: req.prompt_tokens(), completion_tokens: 0 });
        self.route.get_or_insert(this);
    }

    fn failure(self, req: &ChatRequest, error: EngineError) -> ChatFailure {
        let owed = self.route.map(|mut route| {
            let own = route.cost_usd(Usage { prompt_tokens: req.prompt_tokens(), completion_tokens: 0 });
            route.earlier_attempts_usd = (self.usd - own).max(0.0);
            route
        });
        ChatFailure { error, owed }
    }
}

pub struct StreamOutcome {
    pub route: RouteRecord,
    /// Starts with the first upstream delta already received, so fallback stayed invisible.
    pub stream: DeltaStream,
    pub started: Instant,
}

pub fn record(route: &Route, req: &ChatRequest, failed: &[String], baseline: &Option<CatalogModel>) -> RouteRecord {
    RouteRecord {
        provider: route.upstream.kind.as_str(),
        execution_source: route.upstream.execution_source(),
        billing_mode: route.upstream.billing_mode(),
        upstream: route.upstream.name.clone(),
        model: route.model.id.clone(),
        reason: route.reason.clone(),
        failed_attempts: failed.to_vec(),
        escalated: false,
        earlier_attempts_usd: 0.0,
        max_output_tokens: req.output_bound(route.model.max_output_tokens),
        priced_as: route.model.clone(),
        baseline: baseline.clone(),
    }
}

/// The routes a request has tried so far, and whether to try the next.
#[derive(Default)]
struct Attempts {
    /// `upstream/model: code (detail)` of each failure, for the route record.
    failed: Vec<String>,
    tried_upstreams: Vec<String>,
    last_error: Option<ProviderError>,
}

enum Next {
    Try,
    Skip,
    Stop,
}

impl Attempts {
    /// At most [`MAX_ATTEMPTS`] failures; an upstream that failed is not tried again with
    /// another model (the hold priced one route per upstream); connections, and models on a
    /// connection, that are cooling down are passed over.
    fn next(&self, route: &Route) -> Next {
        if self.failed.len() >= MAX_ATTEMPTS {
            Next::Stop
        } else if !route.upstream.usable_for(&route.model.id)
            || (self.tried_upstreams.contains(&route.upstream.name) && route.upstream.kind != ProviderKind::Simulator)
        {
            Next::Skip
        } else {
            Next::Try
        }
    }

    /// The next of `pending` worth trying, or `None` when the request should stop.
    fn next_route<'r>(&self, pending: &mut std::slice::Iter<'r, Route>) -> Option<&'r Route> {
        loop {
            let route = pending.next()?;
            match self.next(route) {
                Next::Stop => return None,
                Next::Skip => continue,
                Next::Try => return Some(route),
            }
        }
    }

    async fn record_failure(&mut self, route: &Route, work: RequestWork<'_>, error: ProviderError) {
        note_failure(&route.upstream, &route.model.id, work, &error, &mut self.failed).await;
        self.tried_upstreams.push(route.upstream.name.clone());
        self.last_error = Some(error);
    }

    fn exhausted(self) -> EngineError {
        upstream_error(self.last_error.unwrap_or(ProviderError::Connect("every route is cooling down".into())))
    }
}

/// Failures that move a request to its next route.
pub(crate) fn moves_on(error: &ProviderError) -> bool {
    error.is_retryable() || matches!(error, ProviderError::Status { status: 401 | 403 | 404, .. })
}

/// Above this many tokens of work (prompt, plus the output bound when the whole answer is
/// awaited), a request's own size explains its timeout, and no breaker counts it.
///
/// Why a fixed size: providers decode some 30–150 tokens a second and prefill a few thousand,
/// so 32k tokens of work can outlast the default 60 s timeout on a perfectly healthy
/// connection, while below it a timeout says more about the connection than the request. A
/// tenant that inflates `max_tokens` to pass the line only exempts its own timeouts: the
/// connection still cools down on everyone else's, and on connect errors and 5xx. Requests
/// past the line do not feed the latency EWMA either (`fast` routing reads it for everyone).
pub const LARGE_REQUEST_TOKENS: u64 = 32_000;

/// The slowest decoding we expect of a healthy provider. A whole answer whose output bound
/// could not be produced at this rate within the connection's timeout explains its own
/// timeout: otherwise any tenant could cool a shared connection for everyone by asking for
/// long answers (a 60 s timeout and `max_tokens` above 1,200).
pub const SLOW_DECODE_TOKENS_PER_SEC: u64 = 20;

/// How much work a request asks of its upstream, measured only when a breaker needs it.
#[derive(Clone, Copy)]
pub(crate) enum RequestWork<'a> {
    /// A chat answer awaited whole: prompt plus output bound.
    Chat(&'a ChatRequest, &'a CatalogModel),
    /// A stream's timeouts run to its first event (and between events): the prompt.
    Stream(&'a ChatRequest),
    /// Embedding inputs.
    Embed(&'a [String]),
}

impl RequestWork<'_> {
    /// Whether a timeout of this request on a connection with `timeout` is explained by the
    /// request itself: past [`LARGE_REQUEST_TOKENS`], or a whole answer longer than a slow
    /// provider produces in that time.
    fn explains_timeout(self, timeout: std::time::Duration) -> bool {
        let slow_output = match self {
            Self::Chat(req, model) => {
                u64::from(req.output_bound(model.max_output_tokens))
                    > timeout.as_secs().max(1) * SLOW_DECODE_TOKENS_PER_SEC
            }
            Self::Stream(_) | Self::Embed(_) => false,
        };
        slow_output || self.is_large()
    }

    /// Above [`LARGE_REQUEST_TOKENS`]. Asked on every success, so it tokenizes only when a
    /// byte count cannot settle it (a token is at least one byte), like routing's size check.
    pub(crate) fn is_large(self) -> bool {
        match self {
            Self::Chat(req, model) => {
                let output = u64::from(req.output_bound(model.max_output_tokens));
                output > LARGE_REQUEST_TOKENS || !req.prompt_fits(LARGE_REQUEST_TOKENS - output)
            }
            Self::Stream(req) => !req.prompt_fits(LARGE_REQUEST_TOKENS),
            Self::Embed(inputs) => {
                let bytes: usize = inputs.iter().map(String::len).sum();
                bytes as u64 > LARGE_REQUEST_TOKENS
                    && inputs.iter().map(|t| crate::chat::tokenizer::count(t) as u64).sum::<u64>()
                        > LARGE_REQUEST_TOKENS
            }
        }
    }
}

/// Which breaker a failure counts against. Connection-wide: connect errors, 5xx, 429, 401/403
/// (the key itself), unreadable answers and streams broken before their first chunk. One
/// model on the connection: 404 (the provider account lacks the model). Nobody's: a timeout
/// the request's own size explains (400/422 and other refusals of the request never move on,
/// so never reach here).
pub(crate) fn blame(error: &ProviderError, work: RequestWork, timeout: std::time::Duration) -> Blame {
    match error {
        ProviderError::Status { status: 404, .. } => Blame::Model,
        ProviderError::Status { status: 400 | 413 | 422, .. } => Blame::Request,
        ProviderError::Timeout | ProviderError::TimeoutAfterAccept | ProviderError::Status { status: 408, .. }
            if work.explains_timeout(timeout) =>
        {
            Blame::Request
        }
        _ => Blame::Connection,
    }
}

/// The upstream's own words about a failure, cut short, for the operator's route record.
fn failure_detail(error: &ProviderError) -> String {
    const MAX_DETAIL_CHARS: usize = 200;
    let words = error.to_string();
    match words.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((cut, _)) => format!("{}…", &words[..cut]),
        None => words,
    }
}

/// Records a failed route on the breaker it belongs to, in the log, and in `failed`.
pub(crate) async fn note_failure(
    upstream: &Upstream,
    model: &str,
    work: RequestWork<'_>,
    error: &ProviderError,
    failed: &mut Vec<String>,
) {
    let retry_after = match error {
        ProviderError::Status { retry_after, .. } => *retry_after,
        _ => None,
    };
    let blame = blame(error, work, upstream.conn.timeout);
    crate::routing::provider::record_failure(upstream, model, blame, error.code(), retry_after).await;
    tracing::warn!(upstream = %upstream.name, model, %error, ?blame, "route failed; trying the next one");
    failed.push(format!("{}/{model}: {} ({})", upstream.name, error.code(), failure_detail(error)));
}

/// Counts tokens ourselves when the provider reports none: billing is never zero.
pub fn fallback_usage(req: &ChatRequest, completion_text: &str) -> Usage {
    Usage { prompt_tokens: req.prompt_tokens(), completion_tokens: count_bounded(completion_text).max(1) }
}

/// Text past this is not tokenized (that would hold a runtime thread for seconds): it is
/// counted at 4 bytes a token, about English's average.
const TOKENIZE_AT_MOST_BYTES: usize = 1 << 20;

fn count_bounded(text: &str) -> u32 {
    if text.len() <= TOKENIZE_AT_MOST_BYTES {
        return crate::chat::tokenizer::count(text);
    }
    let mut cut = TOKENIZE_AT_MOST_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let rest = u32::try_from((text.len() - cut) / 4).unwrap_or(u32::MAX);
    crate::chat::tokenizer::count(&text[..cut]).saturating_add(rest)
}

/// The most answer text relayed from a self-hosted server before its stream is cut: a token
/// is rarely more than 16 bytes, so only a server ignoring the output bound gets near it (one
/// streaming forever), and nothing buffers without end. Managed and BYOK providers enforce
/// the bound themselves. Never more than [`MAX_SELF_HOSTED_ANSWER_BYTES`], whatever
/// `max_tokens` a client asks for (self-hosted models have no output cap of their own).
pub fn answer_text_limit(route: &RouteRecord) -> usize {
    if route.billing_mode == BillingMode::SelfHosted {
        (route.max_output_tokens as usize).saturating_mul(16).clamp(64 << 10, MAX_SELF_HOSTED_ANSWER_BYTES)
    } else {
        usize::MAX
    }
}

/// The longest answer a self-hosted stream may relay (it is buffered for the cache and the
/// usage count).
pub const MAX_SELF_HOSTED_ANSWER_BYTES: usize = 4 << 20;

/// The usage a served request is billed for, from what the upstream reported (if anything)
/// and the answer's text.
/// - Managed and BYOK providers enforce the output bound we sent, so a report above it is
///   not work they bill: the charge stays within the hold.
/// - A self-hosted server may ignore the bound or under-report: it is billed the larger of
///   its report and our own count, overage included (the ledger then refuses the account's
///   new requests while its balance is below zero).
pub fn billable_usage(route: &RouteRecord, req: &ChatRequest, reported: Option<Usage>, text: &str) -> Usage {
    let self_hosted = route.billing_mode == BillingMode::SelfHosted;
    let mut usage = match reported {
        None => fallback_usage(req, text),
        Some(reported) if self_hosted => {
            let counted = fallback_usage(req, text);
            Usage {
                prompt_tokens: reported.prompt_tokens.max(counted.prompt_tokens),
                completion_tokens: reported.completion_tokens.max(counted.completion_tokens),
            }
        }
        Some(reported) => reported,
    };
    if !self_hosted && usage.completion_tokens > route.max_output_tokens {
        tracing::warn!(
            upstream = %route.upstream, reported = usage.completion_tokens, bound = route.max_output_tokens,
            "upstream reported more output tokens than the bound it was sent; billing the bound"
        );
        usage.completion_tokens = route.max_output_tokens;
    }
    usage
}

/// How long, and how much text, the gateway keeps reading an upstream stream whose client
/// left: long enough for the provider's final usage event, bounded against an endless one.
pub const ABANDONED_DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(120);
pub const ABANDONED_DRAIN_TEXT_BYTES: usize = 4 << 20;

/// Reads the rest of a stream nobody is listening to, keeping the text (for our own count)
/// and the provider's usage: the work was done and the provider bills it.
/// Stops early, with what it has, once `stopping` turns true (the server is shutting down).
pub async fn drain_abandoned(
    mut upstream: DeltaStream,
    mut usage: Option<Usage>,
    mut text: String,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> (Option<Usage>, String) {
    use crate::chat::ChatDelta;
    let deadline = tokio::time::sleep(ABANDONED_DRAIN_TIME);
    tokio::pin!(deadline);
    loop {
        let next = tokio::select! {
            _ = &mut deadline => break,
            _ = stopping.wait_for(|stop| *stop) => break,
            next = upstream.next() => next,
        };
        match next {
            Some(Ok(ChatDelta::Text(t) | ChatDelta::ToolCallArguments { fragment: t, .. })) => {
                if text.len() + t.len() > ABANDONED_DRAIN_TEXT_BYTES {
                    break;
                }
                text.push_str(&t);
            }
            Some(Ok(ChatDelta::Usage(u))) => usage = Some(u),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    (usage, text)
}

fn is_weak(req: &ChatRequest, r: &ChatResponse) -> bool {
    let text = r.content.as_deref().unwrap_or("").trim();
    if !r.tool_calls.is_empty() {
        return false;
    }
    let refused = {
        let lower = text.to_lowercase();
        ["i can't help with", "i cannot help with", "i can't assist", "i cannot assist", "i'm unable to help"]
            .iter()
            .any(|p| lower.starts_with(p))
    };
    let bad_json = matches!(req.response_format, Some(ResponseFormat::JsonObject | ResponseFormat::JsonSchema { .. }))
        && serde_json::from_str::<serde_json::Value>(text).is_err();
    r.finish_reason == FinishReason::Length || text.is_empty() || refused || bad_json
}

/// The routes a request may take, and the hold prices: the first usable route of each of
/// the first few upstreams, as the gateway tries them. Trying only these keeps a breaker that
/// opens after the hold from sending the request down a route the hold never priced.
pub(crate) fn priced_routes(routes: Vec<Route>) -> Vec<Route> {
    let mut upstreams_seen: Vec<String> = Vec::new();
    routes
        .into_iter()
        .filter(|r| r.upstream.usable_for(&r.model.id))
        .filter(|r| {
            let first = !upstreams_seen.contains(&r.upstream.name);
            if first {
                upstreams_seen.push(r.upstream.name.clone());
            }
            first
        })
        .take(MAX_ATTEMPTS)
        .collect()
}

pub(crate) fn upstream_error(error: ProviderError) -> EngineError {
    match error {
        ProviderError::Status { status: status @ (400 | 422), message, .. } => rejected(status, &message),
        other => unavailable(&other),
    }
}

/// An upstream refused the request itself. Its words stay in the operator's log: they can
/// name the provider, its model or its account, which runtime keys never see.
pub(crate) fn rejected(status: u16, upstream_message: &str) -> EngineError {
    tracing::warn!(status, upstream_message, "the upstream rejected a request as invalid");
    EngineError::Invalid(format!(
        "The upstream rejected the request as invalid (HTTP {status}); check its fields and sizes"
    ))
}

/// No route could serve: the client learns the last failure's code only. The upstream's own
/// words stay in the log (`note_failure`): they can name the provider, its URL, or echo part of
/// its key (OpenAI's 401 does).
pub(crate) fn unavailable(last: &ProviderError) -> EngineError {
    EngineError::Unavailable(format!("No provider could serve this request (last upstream failure: {})", last.code()))
}

impl Router {
    /// Serves a request on routes from [`Router::plan`].
    pub async fn chat(&self, req: &ChatRequest, scope: &Scope, routes: Vec<Route>) -> Result<ChatOutcome, ChatFailure> {
        let baseline = self.baseline_model(req);
        let mut attempts = Attempts::default();
        let mut owed = Owed::default();
        let mut pending = routes.iter();
        while let Some(route) = attempts.next_route(&mut pending) {
            let started = Instant::now();
            let bound = req.output_bound(route.model.max_output_tokens);
            let work = RequestWork::Chat(req, &route.model);
            match adapter(route.upstream.kind).chat(&route.upstream.conn, &route.model.id, req, bound).await {
                Ok(response) => {
                    record_success(route, work, started);
                    let mut outcome = self.outcome(req, route, response, &attempts.failed, &baseline, started);
                    if req.model == ModelChoice::Mode(Mode::Auto) && is_weak(req, &outcome.response) {
                        if let Some(mut better) = self.escalate(req, scope, route, &attempts.failed, &baseline).await {
                            better.route.earlier_attempts_usd = outcome.route.cost_usd(outcome.usage);
                            outcome = better;
                        }
                    }
                    outcome.route.earlier_attempts_usd += owed.usd;
                    return Ok(outcome);
                }
                Err(error) if moves_on(&error) => {
                    if matches!(error, ProviderError::TimeoutAfterAccept) {
                        owed.add(route, req, &attempts.failed, &baseline);
                    }
                    attempts.record_failure(route, work, error).await
                }
                Err(error) => return Err(owed.failure(req, upstream_error(error))),
            }
        }
        Err(owed.failure(req, attempts.exhausted()))
    }

    fn outcome(
        &self,
        req: &ChatRequest,
        route: &Route,
        response: ChatResponse,
        failed: &[String],
        baseline: &Option<CatalogModel>,
        started: Instant,
    ) -> ChatOutcome {
        let route = record(route, req, failed, baseline);
        let mut text = response.content.clone().unwrap_or_default();
        for call in &response.tool_calls {
            text.push_str(&call.arguments);
        }
        let usage = billable_usage(&route, req, response.usage, &text);
        ChatOutcome { response, usage, route, latency_ms: started.elapsed().as_millis() as u64 }
    }

    /// One step up for a weak `auto` answer: the best-quality route above the one used.
    async fn escalate(
        &self,
        req: &ChatRequest,
        scope: &Scope,
        used: &Route,
        failed: &[String],
        baseline: &Option<CatalogModel>,
    ) -> Option<ChatOutcome> {
        let mut max_req = req.clone();
        max_req.model = ModelChoice::Mode(Mode::Max);
        // Among the routes the request's hold priced (`priced_routes`), so the charge stays
        // within it.
        let better = priced_routes(self.plan(&max_req, scope).ok()?)
            .into_iter()
            .find(|r| r.model.quality > used.model.quality)?;
        let started = Instant::now();
        let bound = req.output_bound(better.model.max_output_tokens);
        let response =
            adapter(better.upstream.kind).chat(&better.upstream.conn, &better.model.id, req, bound).await.ok()?;
        record_success(&better, RequestWork::Chat(req, &better.model), started);
        let mut outcome = self.outcome(req, &better, response, failed, baseline, started);
        outcome.route.escalated = true;
        outcome.route.reason = format!("auto: escalated from {} after a weak answer", used.model.id);
        Some(outcome)
    }

    /// Opens a stream on the first route whose upstream produces a first delta.
    pub async fn chat_stream(&self, req: &ChatRequest, routes: Vec<Route>) -> Result<StreamOutcome, EngineError> {
        let baseline = self.baseline_model(req);
        let mut attempts = Attempts::default();
        let mut pending = routes.iter();
        while let Some(route) = attempts.next_route(&mut pending) {
            let started = Instant::now();
            let bound = req.output_bound(route.model.max_output_tokens);
            let opened =
                adapter(route.upstream.kind).chat_stream(&route.upstream.conn, &route.model.id, req, bound).await;
            let first = match opened {
                Ok(mut stream) => match stream.next().await {
                    Some(Ok(delta)) => Ok((delta, stream)),
                    Some(Err(e)) => Err(e),
                    None => Err(ProviderError::StreamBroken("stream ended before its first chunk".into())),
                },
                Err(e) => Err(e),
            };
            match first {
                Ok((delta, rest)) => {
                    record_success(route, RequestWork::Stream(req), started);
                    let stream = futures_util::stream::once(async move { Ok(delta) }).chain(rest).boxed();
                    let route = record(route, req, &attempts.failed, &baseline);
                    return Ok(StreamOutcome { route, stream, started });
                }
                Err(error) if moves_on(&error) => attempts.record_failure(route, RequestWork::Stream(req), error).await,
                Err(error) => return Err(upstream_error(error)),
            }
        }
        Err(attempts.exhausted())
    }
}

/// A served route closes its breakers; a typical request also feeds the latency EWMA.
fn record_success(route: &Route, work: RequestWork, started: Instant) {
    let latency = started.elapsed();
    let typical = !work.is_large();
    crate::routing::provider::record_success(&route.upstream, &route.model.id, typical.then_some(latency));
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::{json, Value};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::chat::{Message, Role};
    use crate::routing::router::tests::{ask, managed, router, scope, simulator};

    /// A loopback server speaking OpenAI's chat completions: `answer` gets the requested
    /// model and returns the status and JSON body. Remembers the model of every request.
    pub(crate) struct FakeUpstream {
        pub(crate) url: String,
        models: Arc<Mutex<Vec<String>>>,
    }

    impl FakeUpstream {
        pub(crate) fn models(&self) -> Vec<String> {
            self.models.lock().unwrap().clone()
        }
    }

    pub(crate) async fn fake_openai(answer: impl Fn(&str) -> (u16, Value) + Send + Sync + 'static) -> FakeUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let models = Arc::new(Mutex::new(Vec::new()));
        let (answer, seen) = (Arc::new(answer), models.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (answer, seen) = (answer.clone(), seen.clone());
                tokio::spawn(async move {
                    let body = read_request_body(&mut socket).await;
                    let model = serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v["model"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    seen.lock().unwrap().push(model.clone());
                    let (status, json) = answer(&model);
                    let text = json.to_string();
                    let head = format!(
                        "HTTP/1.1 {status} Fake\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        text.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(text.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        FakeUpstream { url, models }
    }

    async fn read_request_body(socket: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                while buf.len() < end + 4 + len {
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => return Vec::new(),
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                return buf[end + 4..end + 4 + len].to_vec();
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return Vec::new(),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// A served chat completion with `content` and a usage of 10 + 5 tokens.
    pub(crate) fn completion(content: &str) -> (u16, Value) {
        let body = json!({
            "id": "chatcmpl-fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        });
        (200, body)
    }

    fn refusal(status: u16) -> (u16, Value) {
        (status, json!({"error": {"message": format!("fake refusal {status}"), "type": "invalid_request_error"}}))
    }

    fn upstream_at(name: &str, url: &str) -> Arc<Upstream> {
        let conn = crate::routing::router::tests::connection(ProviderKind::OpenAi, url);
        Arc::new(Upstream::new(name.into(), ProviderKind::OpenAi, conn, crate::routing::upstreams::Owner::Managed))
    }

    fn route(r: &Router, model: &str, upstream: &Arc<Upstream>) -> Route {
        Route { model: r.catalog.get(model).unwrap().clone(), upstream: upstream.clone(), reason: "test".into() }
    }

    fn failed_chat(result: Result<ChatOutcome, ChatFailure>) -> ChatFailure {
        match result {
            Ok(outcome) => panic!("served by {} on {}", outcome.route.model, outcome.route.upstream),
            Err(failure) => failure,
        }
    }

    #[tokio::test]
    async fn a_retryable_failure_falls_back_to_the_next_route_and_is_recorded() {
        // Nothing listens on port 9: a connect error, which moves on.
        let closed = managed(ProviderKind::OpenAi, "http://127.0.0.1:9");
        let sim = simulator();
        let r = router(std::slice::from_ref(&closed), None);
        let req = ask(ModelChoice::Mode(Mode::Auto), "hi");
        let routes = vec![route(&r, "good", &closed), route(&r, "good", &sim)];
        let outcome = r.chat(&req, &scope("acct", None), routes).await.ok().expect("the simulator serves");
        assert_eq!(outcome.route.upstream, "provider:simulator:builtin");
        assert_eq!(outcome.route.failed_attempts.len(), 1);
        assert!(
            outcome.route.failed_attempts[0].starts_with("provider:openai:managed/good: connect_error ("),
            "{:?}",
            outcome.route.failed_attempts
        );
        assert!(!outcome.route.escalated);
        // The failure is on the connection's breaker (published before the request moved on).
        let health = closed.health.snapshot();
        assert_eq!((health.consecutive_failures, health.last_failure_code.as_deref()), (1, Some("connect_error")));
    }

    #[tokio::test]
    async fn a_server_error_moves_on_but_an_upstream_that_failed_is_not_tried_again_with_another_model() {
        let failing = fake_openai(|_| refusal(500)).await;
        let healthy = fake_openai(|_| completion("fine")).await;
        let (a, b) = (upstream_at("provider:openai:a", &failing.url), upstream_at("provider:openai:b", &healthy.url));
        let r = router(&[a.clone(), b.clone()], None);
        let req = ask(ModelChoice::Native("good".into()), "hi");
        let routes = vec![route(&r, "good", &a), route(&r, "top", &a), route(&r, "top", &b)];
        let outcome = r.chat(&req, &scope("acct", None), routes).await.ok().expect("b serves");
        assert_eq!((outcome.route.upstream.as_str(), outcome.route.model.as_str()), ("provider:openai:b", "top"));
        assert_eq!(failing.models(), ["good"], "a is not asked again for top");
        assert_eq!(outcome.route.failed_attempts.len(), 1);
        assert!(outcome.route.failed_attempts[0].starts_with("provider:openai:a/good: 500 ("));
        assert_eq!(outcome.usage, Usage { prompt_tokens: 10, completion_tokens: 5 }, "the provider's own report");
    }

    #[tokio::test]
    async fn a_non_retryable_error_stops_without_trying_other_routes() {
        let rejecting = fake_openai(|_| refusal(400)).await;
        let other = fake_openai(|_| completion("never asked")).await;
        let (a, b) = (upstream_at("provider:openai:a", &rejecting.url), upstream_at("provider:openai:b", &other.url));
        let r = router(&[a.clone(), b.clone()], None);
        let req = ask(ModelChoice::Mode(Mode::Auto), "hi");
        let failure =
            failed_chat(r.chat(&req, &scope("acct", None), vec![route(&r, "good", &a), route(&r, "good", &b)]).await);
        match failure.error {
            EngineError::Invalid(m) => {
                assert_eq!(m, "The upstream rejected the request as invalid (HTTP 400); check its fields and sizes")
            }
            other => panic!("{other:?}"),
        }
        assert!(failure.owed.is_none());
        assert_eq!(rejecting.models(), ["good"]);
        assert!(other.models().is_empty(), "the request itself was refused: no other route is tried");
        assert_eq!(
            a.health.snapshot().consecutive_failures,
            0,
            "a refused request does not count against the connection"
        );
    }

    #[tokio::test]
    async fn a_request_stops_after_max_attempts_failures_with_the_last_failure_code() {
        let servers = [
            fake_openai(|_| refusal(500)).await,
            fake_openai(|_| refusal(502)).await,
            fake_openai(|_| refusal(503)).await,
            fake_openai(|_| completion("too late")).await,
        ];
        let upstreams: Vec<_> =
            servers.iter().enumerate().map(|(i, s)| upstream_at(&format!("provider:openai:{i}"), &s.url)).collect();
        let r = router(&upstreams, None);
        let routes = upstreams.iter().map(|u| route(&r, "good", u)).collect();
        let failure =
            failed_chat(r.chat(&ask(ModelChoice::Mode(Mode::Fast), "hi"), &scope("acct", None), routes).await);
        match failure.error {
            EngineError::Unavailable(m) => {
                assert_eq!(m, "No provider could serve this request (last upstream failure: 503)")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            servers.iter().map(|s| s.models().len()).collect::<Vec<_>>(),
            [1, 1, 1, 0],
            "MAX_ATTEMPTS is {MAX_ATTEMPTS}"
        );
    }

    #[tokio::test]
    async fn a_weak_auto_answer_escalates_to_a_better_route_and_pays_for_the_weak_one() {
        // tiny-ctx (85) answers nothing; the escalation asks the best model above it.
        let server = fake_openai(|model| completion(if model == "tiny-ctx" { "" } else { "a strong answer" })).await;
        let openai = managed(ProviderKind::OpenAi, &server.url);
        let r = router(&[openai], None);
        let req = ask(ModelChoice::Mode(Mode::Auto), "hi");
        let s = scope("acct", None);
        let routes = r.plan(&req, &s).unwrap();
        assert_eq!(routes[0].model.id, "tiny-ctx");
        let outcome = r.chat(&req, &s, routes).await.ok().expect("served");
        assert_eq!(server.models(), ["tiny-ctx", "top"]);
        assert_eq!(outcome.route.model, "top");
        assert!(outcome.route.escalated);
        assert_eq!(outcome.route.reason, "auto: escalated from tiny-ctx after a weak answer");
        assert_eq!(outcome.response.content.as_deref(), Some("a strong answer"));
        let weak_cost = r.catalog.get("tiny-ctx").unwrap().cost(10, 5);
        assert!(
            (outcome.route.earlier_attempts_usd - weak_cost).abs() < 1e-15,
            "{}",
            outcome.route.earlier_attempts_usd
        );
    }

    #[tokio::test]
    async fn only_auto_escalates_and_only_on_a_weak_answer() {
        let server = fake_openai(|model| completion(if model == "tiny-ctx" { "" } else { "fine" })).await;
        let r = router(&[managed(ProviderKind::OpenAi, &server.url)], None);
        let s = scope("acct", None);
        // A named model's weak answer is the answer.
        let named = ask(ModelChoice::Native("tiny-ctx".into()), "hi");
        let outcome = r.chat(&named, &s, r.plan(&named, &s).unwrap()).await.ok().unwrap();
        assert_eq!((outcome.route.model.as_str(), outcome.route.escalated), ("tiny-ctx", false));
        // A strong auto answer is kept.
        let strong = fake_openai(|_| completion("fine")).await;
        let r = router(&[managed(ProviderKind::OpenAi, &strong.url)], None);
        let req = ask(ModelChoice::Mode(Mode::Auto), "hi");
        let outcome = r.chat(&req, &s, r.plan(&req, &s).unwrap()).await.ok().unwrap();
        assert_eq!((outcome.route.model.as_str(), outcome.route.escalated), ("tiny-ctx", false));
        assert_eq!(strong.models(), ["tiny-ctx"]);
        assert_eq!(outcome.route.earlier_attempts_usd, 0.0);
    }

    #[test]
    fn weak_answers_are_empty_cut_short_refused_or_broken_json() {
        let req = ask(ModelChoice::Mode(Mode::Auto), "hi");
        let answer = |text: &str, finish| ChatResponse {
            content: Some(text.into()),
            tool_calls: Vec::new(),
            finish_reason: finish,
            usage: None,
        };
        assert!(!is_weak(&req, &answer("Hello!", FinishReason::Stop)));
        assert!(is_weak(&req, &answer("  ", FinishReason::Stop)));
        assert!(is_weak(&req, &answer("Hello, I was about to", FinishReason::Length)));
        assert!(is_weak(&req, &answer("I can't help with that.", FinishReason::Stop)));
        let mut json_req = req.clone();
        json_req.response_format = Some(ResponseFormat::JsonObject);
        assert!(is_weak(&json_req, &answer("{\"a\": ", FinishReason::Stop)));
        assert!(!is_weak(&json_req, &answer("{\"a\": 1}", FinishReason::Stop)));
        let call = crate::chat::ToolCall { id: "c".into(), name: "f".into(), arguments: "{}".into() };
        let tool_only =
            ChatResponse { content: None, tool_calls: vec![call], finish_reason: FinishReason::ToolCalls, usage: None };
        assert!(!is_weak(&req, &tool_only), "a tool call is an answer");
    }

    #[test]
    fn failures_are_blamed_on_the_connection_the_model_or_the_request() {
        let small = ChatRequest::new(ModelChoice::Mode(Mode::Auto), vec![Message::text(Role::User, "hi")]);
        let huge =
            ChatRequest::new(ModelChoice::Mode(Mode::Auto), vec![Message::text(Role::User, "hello ".repeat(40_000))]);
        let status = |status| ProviderError::Status { status, message: String::new(), retry_after: None };
        const T: std::time::Duration = std::time::Duration::from_secs(60);
        let small_work = RequestWork::Stream(&small);
        let huge_work = RequestWork::Stream(&huge);
        assert_eq!(blame(&status(404), small_work, T), Blame::Model);
        for connection_wide in [status(500), status(429), status(401), status(403), ProviderError::Connect("x".into())]
        {
            assert_eq!(blame(&connection_wide, huge_work, T), Blame::Connection, "{connection_wide:?}");
        }
        assert_eq!(blame(&ProviderError::StreamBroken("reset".into()), huge_work, T), Blame::Connection);
        assert_eq!(blame(&ProviderError::Timeout, small_work, T), Blame::Connection);
        assert_eq!(blame(&ProviderError::Timeout, huge_work, T), Blame::Request, "the request's size explains it");
        let inputs = vec!["hello ".repeat(40_000)];
        assert_eq!(blame(&ProviderError::Timeout, RequestWork::Embed(&inputs), T), Blame::Request);
        assert_eq!(blame(&ProviderError::Timeout, RequestWork::Embed(&["hi".to_owned()]), T), Blame::Connection);
        // A whole answer longer than a slow provider writes in the timeout explains its own
        // timeout; a short one does not.
        let model = crate::routing::catalog::Catalog::builtin().models.into_iter().find(|m| m.id == "gpt-4o").unwrap();
        let mut long = small.clone();
        long.max_tokens = Some(16_384);
        assert_eq!(blame(&ProviderError::Timeout, RequestWork::Chat(&long, &model), T), Blame::Request);
        let mut short = small.clone();
        short.max_tokens = Some(200);
        assert_eq!(blame(&ProviderError::Timeout, RequestWork::Chat(&short, &model), T), Blame::Connection);
    }

    #[test]
    fn failure_details_are_cut_short() {
        let long = ProviderError::Status { status: 500, message: "x".repeat(5_000), retry_after: None };
        let detail = failure_detail(&long);
        assert!(detail.chars().count() <= 201 && detail.ends_with('…'), "{detail}");
    }
}
