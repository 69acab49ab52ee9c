//! A streamed chat answer that settles its own usage row: when it ends, when its upstream
//! breaks, or when whoever reads it drops it midway (the client left).

use std::{sync::Arc, time::Instant};

use futures_util::{future::BoxFuture, StreamExt};

use crate::{
    cache::{CacheSlot, ResponseCache, StoredAnswer},
    chat::{ChatDelta, ChatRequest, FinishReason, Usage},
    directory::apikey::KeyEntry,
    error::EngineError,
    money::billing::Charge,
    routing::{
        gateway::{answer_text_limit, billable_usage, drain_abandoned, RouteRecord},
        providers::{DeltaStream, ProviderError},
    },
    runtime::Runtime,
    runtime::{
        requests::{Holds, OpenStream, RequestInfo},
        tasks::spawn_request_task,
    },
};

/// What a [`ChatStream`] yields.
#[derive(Debug)]
pub enum StreamEvent {
    /// Part of the answer, to relay. Never [`ChatDelta::Usage`]: the provider's usage is the
    /// stream's to bill.
    Delta(ChatDelta),
    /// The last event. The stream's row is settled by now (or could not be, as it says).
    End(StreamEnd),
}

/// How a streamed answer ended, after its usage row was settled.
/// Words per replayed chunk of a cached answer.
const REPLAY_WORDS_PER_CHUNK: usize = 4;

#[derive(Debug)]
pub enum StreamEnd {
    /// The whole answer arrived and its row is logged: only now may the client be told the
    /// answer is complete.
    Complete { usage: Usage, charge: Charge },
    /// The upstream broke midway: what was delivered is charged, from our own count. `charge`
    /// is `None` when the row could not be recorded.
    Broken { charge: Option<Charge> },
    /// A self-hosted upstream went far past its output bound (it ignores the bound) and was
    /// cut: what came is charged.
    OverBound { charge: Option<Charge> },
    /// The whole answer arrived but its row could not be recorded: the client must not take
    /// the answer for a complete one.
    Unrecorded,
}

impl StreamEnd {
    /// What the stream was charged, when its row was recorded.
    pub fn charge(&self) -> Option<Charge> {
        match self {
            Self::Complete { charge, .. } => Some(*charge),
            Self::Broken { charge } | Self::OverBound { charge } => *charge,
            Self::Unrecorded => None,
        }
    }
}

/// A streamed chat answer that settles exactly one usage row with what was delivered: when it
/// ends (the [`StreamEvent::End`] from [`ChatStream::next`]), or when it is dropped before its
/// end. The provider goes on and bills an answer whose client left, so a dropped stream is
/// drained (bounded, in a tracked task of its own) for the provider's final usage first.
pub struct ChatStream {
    /// `None` once the stream is settled.
    live: Option<Live>,
    /// A cached answer being replayed (already settled when the stream was opened).
    replay: std::collections::VecDeque<StreamEvent>,
    cache_hit: bool,
}

/// An unsettled stream and what its row needs.
struct Live {
    upstream: DeltaStream,
    route: RouteRecord,
    request: ChatRequest,
    started: Instant,
    hold: Holds,
    /// The provider's usage, once it reports it.
    reported: Option<Usage>,
    /// The answer's text and tool arguments so far, for our own count.
    text: String,
    ledger: Arc<dyn StreamLedger>,
    /// Where the answer is stored once complete, when the request may use the cache.
    cache: Option<(Arc<ResponseCache>, CacheSlot)>,
    had_tool_calls: bool,
    finish: Option<FinishReason>,
}

enum Ending {
    Complete,
    Broken(ProviderError),
    OverBound,
}

/// Where a stream's row goes: the engine's ledger; a recorder in tests.
trait StreamLedger: Send + Sync {
    fn settle<'a>(
        &'a self,
        route: &'a RouteRecord,
        usage: Usage,
        latency_ms: u64,
        hold: Holds,
    ) -> BoxFuture<'a, Result<Charge, EngineError>>;

    /// Turns true when shutdown begins: a drain then settles with what it has.
    fn stopping(&self) -> tokio::sync::watch::Receiver<bool>;

    /// Runs the settlement of a stream dropped before its end, which outlives the stream.
    fn run_detached(&self, settlement: BoxFuture<'static, ()>);

    fn request_id(&self) -> &str;
}

impl ChatStream {
    fn new(
        open: OpenStream,
        request: ChatRequest,
        ledger: Arc<dyn StreamLedger>,
        cache: Option<(Arc<ResponseCache>, CacheSlot)>,
    ) -> Self {
        let live = Live {
            upstream: open.outcome.stream,
            route: open.outcome.route,
            request,
            started: open.outcome.started,
            hold: open.hold,
            reported: None,
            text: String::new(),
            ledger,
            cache,
            had_tool_calls: false,
            finish: None,
        };
        Self { live: Some(live), replay: Default::default(), cache_hit: false }
    }

    /// A cached answer, replayed in pieces as a live one would arrive; its row is already
    /// settled.
    fn replay(content: &str, usage: Usage, charge: Charge) -> Self {
        let mut replay: std::collections::VecDeque<StreamEvent> = content
            .split_inclusive(' ')
            .collect::<Vec<_>>()
            .chunks(REPLAY_WORDS_PER_CHUNK)
            .map(|words| StreamEvent::Delta(ChatDelta::Text(words.concat())))
            .collect();
        replay.push_back(StreamEvent::Delta(ChatDelta::Finish(FinishReason::Stop)));
        replay.push_back(StreamEvent::End(StreamEnd::Complete { usage, charge }));
        Self { live: None, replay, cache_hit: true }
    }

    /// Whether this answer comes from the response cache.
    pub fn cache_hit(&self) -> bool {
        self.cache_hit
    }

    /// The next event: deltas, then one [`StreamEvent::End`], then `None`.
    pub async fn next(&mut self) -> Option<StreamEvent> {
        let Some(live) = self.live.as_mut() else { return self.replay.pop_front() };
        let ending = loop {
            match live.upstream.next().await {
                Some(Ok(ChatDelta::Usage(usage))) => live.reported = Some(usage),
                Some(Ok(ChatDelta::Text(_) | ChatDelta::ToolCallArguments { .. }))
                    if live.text.len() > answer_text_limit(&live.route) =>
                {
                    break Ending::OverBound
                }
                Some(Ok(delta)) => {
                    match &delta {
                        ChatDelta::Text(text) | ChatDelta::ToolCallArguments { fragment: text, .. } => {
                            live.text.push_str(text)
                        }
                        ChatDelta::ToolCallStart { .. } => live.had_tool_calls = true,
                        ChatDelta::Finish(reason) => live.finish = Some(*reason),
                        ChatDelta::Usage(_) => {}
                    }
                    return Some(StreamEvent::Delta(delta));
                }
                Some(Err(error)) => break Ending::Broken(error),
                None => break Ending::Complete,
            }
        };
        let live = self.live.take()?;
        Some(StreamEvent::End(live.end(ending).await))
    }
}

impl Drop for ChatStream {
    fn drop(&mut self) {
        if let Some(live) = self.live.take() {
            let ledger = live.ledger.clone();
            ledger.run_detached(Box::pin(live.abandoned()));
        }
    }
}

impl Live {
    fn usage(&self) -> Usage {
        billable_usage(&self.route, &self.request, self.reported, &self.text)
    }

    /// Takes the stream's state, so that nothing can settle it again.
    async fn settle(self, usage: Usage) -> Result<Charge, EngineError> {
        let latency_ms = self.started.elapsed().as_millis() as u64;
        self.ledger.settle(&self.route, usage, latency_ms, self.hold).await
    }

    async fn end(mut self, ending: Ending) -> StreamEnd {
        match ending {
            Ending::OverBound => {
                tracing::warn!(upstream = %self.route.upstream, "stream exceeded its output bound; cut");
                let usage = self.usage();
                let charge = self.settle(usage).await;
                let charge =
                    charge.inspect_err(|error| tracing::error!(%error, "could not record a cut stream's usage"));
                StreamEnd::OverBound { charge: charge.ok() }
            }
            Ending::Broken(error) => {
                tracing::warn!(%error, upstream = %self.route.upstream, "stream broke after the first chunk");
                let usage = self.usage();
                let charge = self.settle(usage).await;
                let charge =
                    charge.inspect_err(|error| tracing::error!(%error, "could not record a broken stream's usage"));
                StreamEnd::Broken { charge: charge.ok() }
            }
            Ending::Complete => {
                let usage = self.usage();
                let stored = self.cache.take().map(|cache| {
                    let (provider, model) = (self.route.provider, self.route.model.clone());
                    (
                        cache,
                        self.text.clone(),
                        self.had_tool_calls,
                        self.finish.unwrap_or(FinishReason::Stop),
                        provider,
                        model,
                    )
                });
                match self.settle(usage).await {
                    Ok(charge) => {
                        if let Some(((cache, slot), content, had_tool_calls, finish_reason, provider, model)) = stored {
                            let answer = StoredAnswer {
                                content: &content,
                                had_tool_calls,
                                finish_reason,
                                usage,
                                charge,
                                provider,
                                upstream_model: &model,
                            };
                            cache.store(&slot, &answer);
                        }
                        StreamEnd::Complete { usage, charge }
                    }
                    Err(error) => {
                        tracing::error!(%error, "could not record a stream's usage");
                        StreamEnd::Unrecorded
                    }
                }
            }
        }
    }

    /// Settles a stream whose reader left: drains the upstream first (bounded), so the row
    /// carries the provider's final usage rather than what had been relayed so far.
    async fn abandoned(mut self) {
        let upstream = std::mem::replace(&mut self.upstream, futures_util::stream::empty().boxed());
        let delivered = std::mem::take(&mut self.text);
        (self.reported, self.text) = drain_abandoned(upstream, self.reported, delivered, self.ledger.stopping()).await;
        let usage = self.usage();
        let request_id = self.ledger.request_id().to_owned();
        match self.settle(usage).await {
            Ok(_) => tracing::info!(%request_id, "a stream its client left was drained and settled as abandoned"),
            Err(error) => tracing::error!(%error, %request_id, "could not record an abandoned stream's usage"),
        }
    }
}

/// A stream's row with the engine: recorded for this key and request.
struct RuntimeLedger {
    runtime: Runtime,
    key: Arc<KeyEntry>,
    info: RequestInfo,
}

impl StreamLedger for RuntimeLedger {
    fn settle<'a>(
        &'a self,
        route: &'a RouteRecord,
        usage: Usage,
        latency_ms: u64,
        hold: Holds,
    ) -> BoxFuture<'a, Result<Charge, EngineError>> {
        Box::pin(self.runtime.settle(&self.key, &self.info, route, usage, Some(latency_ms), true, hold))
    }

    fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.runtime.work().stopping()
    }

    fn run_detached(&self, settlement: BoxFuture<'static, ()>) {
        spawn_request_task(&self.runtime, settlement);
    }

    fn request_id(&self) -> &str {
        self.info.request_id.as_deref().unwrap_or_default()
    }
}

impl Runtime {
    /// Opens a streamed answer on the first route that answers; the stream settles its own row.
    /// Opened in a task of its own: if the caller leaves before the first chunk, the stream the
    /// upstream accepted is still drained and settled (the provider bills it).
    pub async fn open_chat_stream(
        &self,
        key: Arc<KeyEntry>,
        request: ChatRequest,
        info: RequestInfo,
    ) -> Result<ChatStream, EngineError> {
        let mut slot = self.0.cache.slot(&key, &request, info.bypass_cache);
        if let Some(slot) = slot.as_mut() {
            if let Some(hit) = self.0.cache.lookup(slot).await {
                let content = hit.response.content.clone().unwrap_or_default();
                let served = self.serve_hit(&key, &info, hit, true).await?;
                return Ok(ChatStream::replay(&content, served.usage, served.charge));
            }
        }
        let cache = slot.map(|slot| (self.0.cache.clone(), slot));
        let (opened_tx, opened_rx) = tokio::sync::oneshot::channel();
        let runtime = self.clone();
        spawn_request_task(self, async move {
            let opened = runtime.chat_stream(&key, &request, &info).await;
            let opened = opened
                .map(|open| ChatStream::new(open, request, Arc::new(RuntimeLedger { runtime, key, info }), cache));
            // Unsent (the caller left), the stream is dropped here, which settles it.
            let _ = opened_tx.send(opened);
        });
        opened_rx.await.map_err(|_| EngineError::Internal("the stream's task ended before opening".into()))?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::{
        chat::{FinishReason, Message, Mode, ModelChoice, Role},
        routing::{
            catalog::Catalog,
            gateway::{fallback_usage, StreamOutcome},
            upstreams::BillingMode,
        },
    };

    /// Records rows instead of settling them, and keeps detached settlements for the test to run.
    struct Recorder {
        settled: Mutex<Vec<Usage>>,
        detached: Mutex<Vec<BoxFuture<'static, ()>>>,
        refuses: bool,
        stopping: tokio::sync::watch::Sender<bool>,
    }

    impl Recorder {
        fn new(refuses: bool) -> Arc<Self> {
            Arc::new(Self {
                settled: Mutex::default(),
                detached: Mutex::default(),
                refuses,
                stopping: tokio::sync::watch::Sender::new(false),
            })
        }

        fn settled(&self) -> Vec<Usage> {
            self.settled.lock().unwrap().clone()
        }

        async fn run_detached_settlements(&self) {
            let detached = std::mem::take(&mut *self.detached.lock().unwrap());
            for settlement in detached {
                settlement.await;
            }
        }
    }

    impl StreamLedger for Recorder {
        fn settle<'a>(
            &'a self,
            _route: &'a RouteRecord,
            usage: Usage,
            _latency_ms: u64,
            _hold: Holds,
        ) -> BoxFuture<'a, Result<Charge, EngineError>> {
            self.settled.lock().unwrap().push(usage);
            let settled = if self.refuses {
                Err(EngineError::Unavailable("the ledger is away".into()))
            } else {
                Ok(Charge { charged_units: 7, ..Charge::default() })
            };
            Box::pin(async move { settled })
        }

        fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
            self.stopping.subscribe()
        }

        fn run_detached(&self, settlement: BoxFuture<'static, ()>) {
            self.detached.lock().unwrap().push(settlement);
        }

        fn request_id(&self) -> &str {
            "req-test"
        }
    }

    fn request() -> ChatRequest {
        ChatRequest::new(ModelChoice::Mode(Mode::Auto), vec![Message::text(Role::User, "hi")])
    }

    fn route(billing_mode: BillingMode) -> RouteRecord {
        let model = Catalog::builtin().models.into_iter().find(|m| m.id == "gpt-4o").unwrap();
        RouteRecord {
            provider: "openai",
            execution_source: "managed",
            billing_mode,
            upstream: "openai/test".into(),
            model: model.id.clone(),
            reason: "test".into(),
            failed_attempts: Vec::new(),
            escalated: false,
            earlier_attempts_usd: 0.0,
            max_output_tokens: 100,
            priced_as: model,
            baseline: None,
        }
    }

    fn stream(upstream: DeltaStream, billing_mode: BillingMode, ledger: &Arc<Recorder>) -> ChatStream {
        let outcome = StreamOutcome { route: route(billing_mode), stream: upstream, started: Instant::now() };
        ChatStream::new(OpenStream { outcome, hold: Holds::default() }, request(), ledger.clone(), None)
    }

    fn upstream(deltas: Vec<Result<ChatDelta, ProviderError>>) -> DeltaStream {
        futures_util::stream::iter(deltas).boxed()
    }

    fn text(t: &str) -> Result<ChatDelta, ProviderError> {
        Ok(ChatDelta::Text(t.to_owned()))
    }

    async fn delta(stream: &mut ChatStream) -> ChatDelta {
        match stream.next().await {
            Some(StreamEvent::Delta(delta)) => delta,
            other => panic!("expected a delta, got {other:?}"),
        }
    }

    async fn end(stream: &mut ChatStream) -> StreamEnd {
        match stream.next().await {
            Some(StreamEvent::End(end)) => end,
            other => panic!("expected the end, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_finished_stream_settles_once_with_the_reported_usage() {
        let ledger = Recorder::new(false);
        let reported = Usage { prompt_tokens: 3, completion_tokens: 2 };
        let deltas =
            vec![text("Hel"), text("lo"), Ok(ChatDelta::Finish(FinishReason::Stop)), Ok(ChatDelta::Usage(reported))];
        let mut answer = stream(upstream(deltas), BillingMode::Managed, &ledger);
        assert_eq!(delta(&mut answer).await, ChatDelta::Text("Hel".into()));
        assert_eq!(delta(&mut answer).await, ChatDelta::Text("lo".into()));
        assert_eq!(delta(&mut answer).await, ChatDelta::Finish(FinishReason::Stop), "usage is never relayed");
        match end(&mut answer).await {
            StreamEnd::Complete { usage, charge } => assert_eq!((usage, charge.charged_units), (reported, 7)),
            other => panic!("{other:?}"),
        }
        assert!(answer.next().await.is_none());
        drop(answer);
        assert!(ledger.detached.lock().unwrap().is_empty(), "a settled stream leaves nothing behind");
        assert_eq!(ledger.settled(), vec![reported]);
    }

    #[tokio::test]
    async fn a_stream_dropped_midway_is_drained_and_settled_once_with_the_providers_final_usage() {
        let ledger = Recorder::new(false);
        let reported = Usage { prompt_tokens: 3, completion_tokens: 40 };
        let deltas = vec![text("a"), text("b"), Ok(ChatDelta::Usage(reported))];
        let mut answer = stream(upstream(deltas), BillingMode::Managed, &ledger);
        delta(&mut answer).await;
        drop(answer);
        assert!(ledger.settled().is_empty(), "settled by the detached task, not in drop");
        ledger.run_detached_settlements().await;
        assert_eq!(ledger.settled(), vec![reported]);
    }

    #[tokio::test]
    async fn a_stream_dropped_midway_settles_once_with_what_was_delivered_when_shutdown_stops_its_drain() {
        let ledger = Recorder::new(false);
        let endless = upstream(vec![text("one two")]).chain(futures_util::stream::pending()).boxed();
        let mut answer = stream(endless, BillingMode::Managed, &ledger);
        delta(&mut answer).await;
        drop(answer);
        ledger.stopping.send_replace(true);
        ledger.run_detached_settlements().await;
        assert_eq!(ledger.settled(), vec![fallback_usage(&request(), "one two")]);
    }

    #[tokio::test]
    async fn a_broken_stream_settles_once_with_what_was_delivered() {
        let ledger = Recorder::new(false);
        let deltas = vec![text("partial"), Err(ProviderError::StreamBroken("reset".into())), text("never")];
        let mut answer = stream(upstream(deltas), BillingMode::Managed, &ledger);
        delta(&mut answer).await;
        assert!(matches!(end(&mut answer).await, StreamEnd::Broken { charge: Some(_) }));
        assert!(answer.next().await.is_none());
        drop(answer);
        assert!(ledger.detached.lock().unwrap().is_empty());
        assert_eq!(ledger.settled(), vec![fallback_usage(&request(), "partial")]);
    }

    #[tokio::test]
    async fn a_stream_whose_row_cannot_be_recorded_ends_unrecorded_and_is_not_settled_again() {
        let ledger = Recorder::new(true);
        let mut answer = stream(upstream(vec![text("x")]), BillingMode::Managed, &ledger);
        delta(&mut answer).await;
        assert!(matches!(end(&mut answer).await, StreamEnd::Unrecorded));
        drop(answer);
        assert!(ledger.detached.lock().unwrap().is_empty());
        assert_eq!(ledger.settled().len(), 1);
    }

    #[tokio::test]
    async fn a_self_hosted_stream_past_its_bound_is_cut_and_settled_once() {
        let ledger = Recorder::new(false);
        let flood = "word ".repeat(14_000);
        let mut answer = stream(upstream(vec![text(&flood), text("more")]), BillingMode::SelfHosted, &ledger);
        delta(&mut answer).await;
        assert!(matches!(end(&mut answer).await, StreamEnd::OverBound { charge: Some(_) }));
        drop(answer);
        assert!(ledger.detached.lock().unwrap().is_empty());
        assert_eq!(ledger.settled(), vec![fallback_usage(&request(), &flood)]);
    }
}
