//! `POST /v1/videos/generations` and `GET /v1/videos/generations/:id`: a video is a job.
//! The POST starts it at the provider (with fallback), stores a [`VideoJob`] and answers at
//! once (`processing`); a `videojob:{id}` actor (transient, under `videojobs`) polls the
//! provider with backoff, fetches the finished video into the data directory (served by
//! `GET /v1/media/:id` for a day), charges it per second, records `completed` or `failed`
//! with the reason, and stops. The supervisor's loader starts an actor for every open job,
//! so a restart loses none.
//!
//! The charge is settled once: the job is saved `charging` (the video kept) before its row
//! (request id `videojob:{id}`) is settled, and a job resumed in that state looks for the row
//! first, as URL batches do. It is held from the start: the start's hold passes to the
//! job's actor (`VideoStarts::holds`), which holds it anew after a restart, so an open job's
//! price is never spent twice.

use std::{collections::HashSet, sync::Arc, time::Duration};

use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr};
use serde_json::{json, Map};
use tokaroo_storage::{
    media::{OpenVideoJob, VideoJob},
    records::UsageRow,
};

use crate::{
    chat::Mode,
    directory::apikey::KeyEntry,
    error::EngineError,
    money::ledger::HoldGuard,
    routing::{
        catalog::CatalogModel,
        providers::{self, VideoCall, VideoStatus},
        upstreams::{BillingMode, Upstream},
    },
    runtime::{images::KeepFailure, Runtime},
    tree::{
        inspect::Inspection,
        registry::{ChildRef, TreeMsg},
        supervisor::{spawn_linked, BoxFuture, ChildSpec, Restart, SpawnAt, SupervisorSpec},
    },
};

/// What a job's client is told of a provider failure: its code only. The provider's words
/// and the URLs they carry go to the operator's log.
fn client_reason(doing: &str, job: &str, error: &providers::ProviderError) -> String {
    tracing::warn!(job, %error, "{doing} failed");
    format!("{doing} failed ({})", error.code())
}

pub const VIDEOJOBS: &str = "videojobs";
pub const VIDEOJOB: &str = "videojob";
pub const MAX_PROMPT_CHARS: usize = 8_000;
pub const MAX_DURATION_SECS: u32 = 60;
/// How long a finished video's URL answers.
const VIDEO_URL_TTL_MS: i64 = 24 * 3600 * 1000;
/// The first poll's wait, doubled each time up to the last.
const FIRST_POLL: Duration = Duration::from_secs(2);
const MAX_POLL: Duration = Duration::from_secs(30);
/// Video jobs an account may have running at once.
pub const MAX_OPEN_JOBS_PER_ACCOUNT: usize = 4;
/// A job the provider has not finished in this long fails.
const GIVE_UP_AFTER_MS: i64 = 2 * 3600 * 1000;

fn usage_request_id(id: &str) -> String {
    format!("videojob:{id}")
}

#[derive(Debug, Clone)]
pub struct VideoRequest {
    pub prompt: String,
    pub mode: Mode,
    pub model: Option<String>,
    pub duration_secs: u32,
    /// `16:9` (default) or `9:16`; from `aspect_ratio`, or `size`'s shape.
    pub aspect_ratio: String,
    /// `720p` (default), `1080p`, `4k`; from `size`.
    pub resolution: String,
}

#[derive(Debug, Clone)]
struct Candidate {
    model: CatalogModel,
    /// The model's allowed length at or above the asked one.
    duration_secs: u32,
    usd_per_second: f64,
}

fn allowed_duration(spec: &serde_json::Value, wanted: u32) -> Option<u32> {
    match spec {
        serde_json::Value::Array(list) => {
            list.iter().filter_map(|d| d.as_u64()).filter(|d| *d >= u64::from(wanted)).min().map(|d| d as u32)
        }
        serde_json::Value::Object(range) => {
            let (min, max) = (range.get("min")?.as_u64()?, range.get("max")?.as_u64()?);
            let d = u64::from(wanted).max(min);
            (d <= max).then_some(d as u32)
        }
        _ => None,
    }
}

impl Runtime {
    fn video_candidates(&self, req: &VideoRequest) -> Result<Vec<Candidate>, EngineError> {
        let mut candidates: Vec<Candidate> = self
            .media_models(req.model.as_deref(), "video", "a video", "does not generate video")?
            .into_iter()
            .filter_map(|(m, spec)| {
                if !spec.aspect_ratios.contains(&req.aspect_ratio) || !spec.sizes.contains(&req.resolution) {
                    return None;
                }
                let duration_secs = allowed_duration(spec.durations_secs.as_ref()?, req.duration_secs)?;
                let usd_per_second = spec
                    .price_per_second_by_size
                    .as_ref()
                    .and_then(|by| by.get(&req.resolution).copied())
                    .or(spec.price_per_second)?;
                Some(Candidate { model: m.clone(), duration_secs, usd_per_second })
            })
            .collect();
        match req.mode {
            Mode::Max => candidates.sort_by(|a, b| b.model.quality.total_cmp(&a.model.quality)),
            Mode::Fast | Mode::Auto => candidates.sort_by(|a, b| {
                (a.usd_per_second * f64::from(a.duration_secs))
                    .total_cmp(&(b.usd_per_second * f64::from(b.duration_secs)))
            }),
        }
        Ok(candidates)
    }

    /// Starts a video job at the first provider that takes it; answers the stored job.
    pub(crate) async fn start_video_job(
        &self,
        key: &KeyEntry,
        req: &VideoRequest,
        request_id: Option<String>,
    ) -> Result<VideoJob, EngineError> {
        let candidates = self.video_candidates(req)?;
        if candidates.is_empty() {
            return Err(EngineError::invalid(format!(
                "no video model takes {} s at {} {}; see GET /v1/pricing",
                req.duration_secs, req.aspect_ratio, req.resolution
            )));
        }
        let routes = self.media_routes(key, &candidates, |c| &c.model);
        if routes.is_empty() {
            return Err(EngineError::Unavailable("No video provider is configured (Gemini)".into()));
        }
        let info = super::media::media_info(req.mode, req.model.as_deref(), "video", request_id.clone());
        // One start at a time per account, from the count of its open jobs to the new one's
        // record: parallel starts cannot each see room under the cap.
        let lock = self.0.video.starts.entry(key.account_id.clone()).or_default().clone();
        let _starting = lock.lock().await;
        let store = &self.0.directory.store;
        let mut open_jobs = 0usize;
        store.video_jobs_open.for_each(|open: OpenVideoJob| {
            open_jobs += usize::from(open.account_id == key.account_id);
            Ok::<_, EngineError>(())
        })?;
        if open_jobs >= MAX_OPEN_JOBS_PER_ACCOUNT {
            return Err(EngineError::RateLimited {
                limit: MAX_OPEN_JOBS_PER_ACCOUNT as u32,
                retry_after: Duration::from_secs(30),
            });
        }
        // Charged on completion, held from now until then: each open job's hold is the
        // ledger's, so every later request (a chat, another job) sees the money as spoken for.
        let worst = routes
            .iter()
            .map(|(c, u)| {
                let list = c.usd_per_second * f64::from(c.duration_secs);
                self.media_charge(req.mode, u.billing_mode(), list, list).charged_units
            })
            .max()
            .unwrap_or(0);
        let holds = self.reserve(key, &info, || worst).await?;
        let work = [req.prompt.clone()];
        let served = super::media::first_answer(
            routes,
            |c| &c.model.id,
            &work,
            "start this video",
            |c, upstream| async move {
                let call = VideoCall {
                    prompt: &req.prompt,
                    duration_secs: c.duration_secs,
                    aspect_ratio: &req.aspect_ratio,
                    resolution: &req.resolution,
                };
                providers::start_video(&upstream.conn, &c.model.id, &call).await
            },
        )
        .await?;
        let (c, upstream) = (&served.candidate, &served.upstream);
        let now = crate::clock::now_ms();
        let job = VideoJob {
            id: format!("vid_{}", uuid::Uuid::now_v7().simple()),
            account_id: key.account_id.clone(),
            workspace: key.workspace_slug.clone(),
            api_key_id: key.id.clone(),
            request_id,
            mode: req.mode.as_str().to_owned(),
            requested_model: info.requested_model.clone(),
            model: c.model.id.clone(),
            upstream: upstream.name.clone(),
            provider: upstream.kind.as_str().to_owned(),
            billing_mode: upstream.billing_mode().as_str().to_owned(),
            execution_source: upstream.execution_source().to_owned(),
            provider_job: served.answer,
            prompt: req.prompt.clone(),
            duration_secs: c.duration_secs,
            aspect_ratio: req.aspect_ratio.clone(),
            resolution: req.resolution.clone(),
            usd_per_second: c.usd_per_second,
            status: "processing".into(),
            media_id: None,
            error: None,
            polls: 0,
            next_poll_at_ms: now + i64::try_from(FIRST_POLL.as_millis()).unwrap_or(0),
            created_at_ms: now,
            completed_at_ms: None,
            charged_usd: None,
        };
        // Handed over before the job is open, so whichever actor starts it (this start's,
        // or the supervisor's loader) takes this hold rather than holding anew.
        if let Some(hold) = holds.ledger {
            self.0.video.holds.insert(job.id.clone(), hold);
        }
        let recorded = (|| {
            store.video_jobs.insert(&(job.account_id.as_str(), job.id.as_str()), &job)?;
            let open = OpenVideoJob { account_id: job.account_id.clone(), id: job.id.clone() };
            store.video_jobs_open.insert(&job.id.as_str(), &open)
        })();
        if let Err(error) = recorded {
            self.0.video.holds.remove(&job.id);
            return Err(error.into());
        }
        if let Err(error) = store.flush().await {
            self.0.video.holds.remove(&job.id);
            return Err(error.into());
        }
        let registry = &self.0.directory.registry;
        crate::tree::supervisor::start_child(registry, VIDEOJOBS, self.video_spec(&job.account_id, &job.id)).await;
        // Not taken: no actor started for it (it will hold anew when one does).
        self.0.video.holds.remove(&job.id);
        Ok(job)
    }

    /// One of the key's account's jobs (a key bound to a workspace sees only its own).
    pub fn video_job(&self, key: &KeyEntry, id: &str) -> Result<VideoJob, EngineError> {
        self.0
            .directory
            .store
            .video_jobs
            .get(&(key.account_id.as_str(), id))?
            .filter(|j| key.workspace_slug.is_none() || j.workspace == key.workspace_slug)
            .ok_or(EngineError::NotFound { what: "video job" })
    }

    fn video_spec(&self, account_id: &str, id: &str) -> Arc<dyn ChildSpec> {
        Arc::new(VideoJobSpec { runtime: self.clone(), account_id: account_id.to_owned(), id: id.to_owned() })
    }

    /// `videojobs`: starts an actor for every open job.
    pub(crate) fn video_supervisor_spec(&self) -> SupervisorSpec {
        let runtime = self.clone();
        let directory = &self.0.directory;
        SupervisorSpec {
            name: VIDEOJOBS.to_owned(),
            kind: VIDEOJOBS,
            restart: Restart::Permanent,
            policy: directory.restart_policy,
            registry: directory.registry.clone(),
            escalates: true,
            loader: Arc::new(move || {
                let mut specs = Vec::new();
                let found = runtime.0.directory.store.video_jobs_open.for_each(|open: OpenVideoJob| {
                    specs.push(runtime.video_spec(&open.account_id, &open.id));
                    Ok::<_, EngineError>(())
                });
                if let Err(error) = found {
                    tracing::error!(%error, "reading open video jobs failed; they resume at the next restart");
                }
                specs
            }),
            describe: Arc::new(|children| json!({ "live_jobs": children.len() })),
        }
    }
}

pub enum VideoJobMsg {
    Poll,
    Inspect(RpcReplyPort<Inspection>),
    InjectFailure(String),
}

impl TreeMsg for VideoJobMsg {
    fn inspect(reply: RpcReplyPort<Inspection>) -> Self {
        Self::Inspect(reply)
    }
    fn inject_failure(reason: String) -> Self {
        Self::InjectFailure(reason)
    }
}

pub struct VideoJobActor {
    runtime: Runtime,
    account_id: String,
    id: String,
    /// The ledger's hold for the job's charge, from its start (or this process's) until it
    /// is settled or the job fails.
    hold: std::sync::Mutex<Option<HoldGuard>>,
}

/// Video jobs' shared state in this process.
#[derive(Default)]
pub(crate) struct VideoStarts {
    /// One start at a time per account.
    pub(crate) starts: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// A started job's hold, until its actor takes it over.
    pub(crate) holds: DashMap<String, HoldGuard>,
}

impl VideoJobActor {
    async fn save(&self, job: &VideoJob) -> Result<(), EngineError> {
        let store = &self.runtime.0.directory.store;
        store.video_jobs.insert(&(job.account_id.as_str(), job.id.as_str()), job)?;
        store.flush().await?;
        Ok(())
    }

    /// The job's hold: the one its start took, or, after a restart, a new one. A balance
    /// that no longer covers it does not stop a job the provider is already making: it is
    /// charged when done all the same.
    async fn take_hold(&self, job: &VideoJob) {
        let hold = match self.runtime.0.video.holds.remove(&job.id) {
            Some((_, hold)) => Some(hold),
            None => {
                let units = self.job_charge(job).charged_units;
                match self.runtime.reserve_for(&job.account_id, job.workspace.as_deref(), units).await {
                    Ok(hold) => hold,
                    Err(error) => {
                        tracing::warn!(job = %job.id, %error, "a resumed video job's charge could not be held");
                        None
                    }
                }
            }
        };
        *self.hold.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = hold;
    }

    fn release_hold(&self) -> Option<HoldGuard> {
        self.hold.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    fn job_charge(&self, job: &VideoJob) -> crate::money::billing::Charge {
        let mode = Mode::parse(&job.mode).unwrap_or(Mode::Auto);
        let billing = BillingMode::parse(&job.billing_mode).unwrap_or(BillingMode::Managed);
        let list = job.usd_per_second * f64::from(job.duration_secs);
        self.runtime.media_charge(mode, billing, list, list)
    }

    async fn finish(&self, me: &ActorRef<VideoJobMsg>, job: &VideoJob) -> Result<(), EngineError> {
        // A failed job gives its hold back; a charged one's was settled.
        drop(self.release_hold());
        let store = &self.runtime.0.directory.store;
        store.video_jobs_open.remove(&job.id.as_str())?;
        store.flush().await?;
        tracing::info!(job = %job.id, status = %job.status, "video job finished");
        me.stop(None);
        Ok(())
    }

    fn upstream(&self, job: &VideoJob) -> Option<Arc<Upstream>> {
        let router = &self.runtime.0.router;
        router.upstreams.get(&job.upstream).or_else(|| router.simulator.clone().filter(|s| s.name == job.upstream))
    }

    /// Charges the kept video once: unless the ledger already has its row.
    async fn charge(&self, job: &mut VideoJob) -> Result<(), EngineError> {
        let runtime = &self.runtime.0;
        runtime.ledger.commit().await?;
        let wanted: HashSet<String> = [usage_request_id(&job.id)].into();
        let since_us = job.created_at_ms.saturating_mul(1000);
        let (store, account) = (runtime.directory.store.clone(), job.account_id.clone());
        let already = tokio::task::spawn_blocking(move || store.ledger.request_ids_since(&account, since_us, &wanted))
            .await
            .map_err(|e| EngineError::Internal(format!("reading the ledger: {e}")))??;
        let charge = self.job_charge(job);
        if already.is_empty() {
            let row = UsageRow {
                id: crate::clock::new_id(),
                account_id: job.account_id.clone(),
                api_key_id: Some(job.api_key_id.clone()),
                workspace_slug: job.workspace.clone(),
                metadata: Map::new(),
                tier: job.mode.clone(),
                requested_model: job.requested_model.clone(),
                provider: job.provider.clone(),
                upstream_model: job.model.clone(),
                upstream: job.upstream.clone(),
                routing_method: job.mode.clone(),
                routing_reason: format!(
                    "{} s of video at {} {} with {}",
                    job.duration_secs, job.aspect_ratio, job.resolution, job.model
                ),
                execution_source: job.execution_source.clone(),
                billing_mode: job.billing_mode.clone(),
                request_type: "video".into(),
                input_tokens: u64::from(crate::chat::tokenizer::count(&job.prompt)),
                output_tokens: 0,
                actual_cost_units: charge.actual_cost_units,
                charged_units: charge.charged_units,
                baseline_units: charge.baseline_units,
                latency_ms: Some(u64::try_from(crate::clock::now_ms() - job.created_at_ms).unwrap_or(0)),
                cache: "miss".into(),
                streamed: false,
                created_at_us: 0,
                request_id: Some(usage_request_id(&job.id)),
                failed_attempts: Vec::new(),
                unit: Some("second".into()),
                units: Some(f64::from(job.duration_secs)),
            };
            self.runtime.settle_held(self.release_hold(), row).await?;
        }
        job.charged_usd = Some(charge.charged_usd());
        Ok(())
    }

    async fn fail(&self, me: &ActorRef<VideoJobMsg>, job: &mut VideoJob, why: String) -> Result<(), EngineError> {
        job.status = "failed".into();
        job.error = Some(why);
        job.completed_at_ms = Some(crate::clock::now_ms());
        self.save(job).await?;
        self.finish(me, job).await
    }

    async fn poll(&self, me: &ActorRef<VideoJobMsg>, job: &mut VideoJob) -> Result<(), EngineError> {
        if job.status == "charging" {
            return self.complete(me, job).await;
        }
        let Some(upstream) = self.upstream(job) else {
            return self.fail(me, job, "the provider connection that started this job is gone".into()).await;
        };
        job.polls += 1;
        let status = providers::video_status(&upstream.conn, &job.provider_job).await;
        match status {
            Ok(VideoStatus::Done { uri }) => {
                let kept = match providers::fetch_video(&upstream.conn, &uri).await {
                    Ok(download) => {
                        self.runtime.keep_download(&job.account_id, "video/mp4", download, VIDEO_URL_TTL_MS).await
                    }
                    Err(error) => Err(KeepFailure::Upstream(error)),
                };
                match kept {
                    Ok(media) => {
                        job.media_id = Some(media);
                        job.status = "charging".into();
                        self.save(job).await?;
                        self.complete(me, job).await
                    }
                    Err(KeepFailure::Upstream(error)) => {
                        let why = client_reason("fetching the video", &job.id, &error);
                        if error.is_retryable() {
                            self.retry_or_fail(me, job, why).await
                        } else {
                            self.fail(me, job, why).await
                        }
                    }
                    Err(KeepFailure::Ours(error)) => Err(error),
                }
            }
            // The provider's own verdict on the job (a safety filter's reason): the client's.
            Ok(VideoStatus::Failed(why)) => self.fail(me, job, why).await,
            Ok(VideoStatus::Running) => self.retry_or_fail(me, job, "still running".into()).await,
            Err(error) => {
                let why = client_reason("asking the provider about the job", &job.id, &error);
                if error.is_retryable() {
                    self.retry_or_fail(me, job, why).await
                } else {
                    self.fail(me, job, why).await
                }
            }
        }
    }

    async fn complete(&self, me: &ActorRef<VideoJobMsg>, job: &mut VideoJob) -> Result<(), EngineError> {
        self.charge(job).await?;
        job.status = "completed".into();
        job.completed_at_ms = Some(crate::clock::now_ms());
        self.save(job).await?;
        self.finish(me, job).await
    }

    async fn retry_or_fail(
        &self,
        me: &ActorRef<VideoJobMsg>,
        job: &mut VideoJob,
        why: String,
    ) -> Result<(), EngineError> {
        let now = crate::clock::now_ms();
        if now - job.created_at_ms > GIVE_UP_AFTER_MS {
            return self.fail(me, job, format!("the provider did not finish within 2 hours ({why})")).await;
        }
        let wait = FIRST_POLL.saturating_mul(2u32.saturating_pow(job.polls.min(8))).min(MAX_POLL);
        job.next_poll_at_ms = now + i64::try_from(wait.as_millis()).unwrap_or(0);
        self.save(job).await?;
        me.send_after(wait, || VideoJobMsg::Poll);
        Ok(())
    }
}

impl Actor for VideoJobActor {
    type Msg = VideoJobMsg;
    /// `None`: the job has no record (it only leaves the open list).
    type State = Option<VideoJob>;
    type Arguments = ();

    async fn pre_start(&self, _me: ActorRef<VideoJobMsg>, _: ()) -> Result<Option<VideoJob>, ActorProcessingErr> {
        let job = self.runtime.0.directory.store.video_jobs.get(&(self.account_id.as_str(), self.id.as_str()))?;
        if let Some(job) = job.as_ref().filter(|j| matches!(j.status.as_str(), "processing" | "charging")) {
            // Before the spawn returns: the start that spawned it finds its hold taken.
            self.take_hold(job).await;
        }
        Ok(job)
    }

    async fn post_start(
        &self,
        me: ActorRef<VideoJobMsg>,
        job: &mut Option<VideoJob>,
    ) -> Result<(), ActorProcessingErr> {
        match job {
            Some(job) if matches!(job.status.as_str(), "processing" | "charging") => {
                let due = job.next_poll_at_ms - crate::clock::now_ms();
                me.send_after(Duration::from_millis(u64::try_from(due).unwrap_or(0)), || VideoJobMsg::Poll);
            }
            Some(job) => self.finish(&me, job).await?,
            None => {
                let store = &self.runtime.0.directory.store;
                store.video_jobs_open.remove(&self.id.as_str())?;
                me.stop(None);
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<VideoJobMsg>,
        msg: VideoJobMsg,
        job: &mut Option<VideoJob>,
    ) -> Result<(), ActorProcessingErr> {
        let Some(job) = job else { return Ok(()) };
        match msg {
            VideoJobMsg::Poll => {
                // Our own failures (storage, the ledger) are retried with backoff, not
                // allowed to fail the actor: a failing job must not take its siblings down.
                if let Err(error) = self.poll(&me, job).await {
                    tracing::warn!(job = %job.id, %error, "a video job's step failed; retrying");
                    let why = "an internal error (the operator's log has it)".to_owned();
                    if let Err(error) = self.retry_or_fail(&me, job, why).await {
                        tracing::error!(job = %job.id, %error, "a video job could not be saved; retrying");
                        me.send_after(MAX_POLL, || VideoJobMsg::Poll);
                    }
                }
            }
            VideoJobMsg::Inspect(reply) => {
                let _ = reply.send(Inspection::leaf(json!({
                    "status": job.status,
                    "model": job.model,
                    "polls": job.polls,
                    "next_poll_at": crate::clock::iso8601(job.next_poll_at_ms),
                })));
            }
            VideoJobMsg::InjectFailure(reason) => return Err(reason.into()),
        }
        Ok(())
    }
}

pub struct VideoJobSpec {
    runtime: Runtime,
    account_id: String,
    id: String,
}

impl ChildSpec for VideoJobSpec {
    fn name(&self) -> String {
        format!("videojob:{}", self.id)
    }
    fn kind(&self) -> &'static str {
        VIDEOJOB
    }
    fn restart(&self) -> Restart {
        Restart::Transient
    }
    fn spawn(&self, at: SpawnAt) -> BoxFuture<Result<ChildRef, SpawnErr>> {
        let actor = VideoJobActor {
            runtime: self.runtime.clone(),
            account_id: self.account_id.clone(),
            id: self.id.clone(),
            hold: std::sync::Mutex::new(None),
        };
        Box::pin(spawn_linked(actor, (), at))
    }
}
