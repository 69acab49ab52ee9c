//! Traces: the observation stream of the harness. Every context pack writes one
//! (`context_pack`), which a knowledge reply completes with its answer and charge
//! (`knowledge_reply`); agents record their own (`external_observation` or a type of theirs).
//! A trace that names a mission is also indexed under it (`MissionTrace`), for its detail.
//!
//! Ids are `tr_` and a UUIDv7, so an account's traces are kept in time order and paged newest
//! first. An account keeps its latest `MAX_TRACES_PER_ACCOUNT`: every so many writes the
//! oldest past that are pruned, so a tenant making packs all day cannot fill the disk.

use std::{collections::HashMap, sync::Arc, sync::Mutex};

use serde_json::{Map, Value};
use tokaroo_storage::{
    harness::{HarnessTrace, MissionTrace, TraceDocument, TraceMemory},
    Store,
};

use super::{inputs, Access};
use crate::error::EngineError;

/// Traces an account keeps (the oldest past it are pruned).
pub const MAX_TRACES_PER_ACCOUNT: usize = 100_000;
/// An account's traces are counted (and pruned) once per this many writes.
const PRUNE_EVERY: u64 = 1_000;
/// Summaries are cut to this many characters.
const MAX_SUMMARY_CHARS: usize = 2_000;
/// A page never reads more records than this looking for matches.
const MAX_READ_PER_PAGE: usize = 50_000;

/// What a trace belongs to, as its writer knows it.
#[derive(Debug, Clone, Default)]
pub struct TraceLinks {
    /// The Tokaroo UUID of the mission.
    pub mission: Option<String>,
    pub task_id: Option<String>,
    pub harness_version_id: Option<String>,
    pub assistant_id: Option<String>,
    pub thread_id: Option<String>,
    pub metadata: Map<String, Value>,
}

/// An agent's own observation (`POST /v1/harness/traces`).
#[derive(Debug, Clone, Default)]
pub struct ObservationInput {
    pub trace_type: Option<String>,
    pub links: TraceLinks,
    pub input_summary: Option<String>,
    pub output_summary: Option<String>,
    pub context_strategy: Option<String>,
    pub documents: Vec<TraceDocument>,
    pub memories: Vec<TraceMemory>,
    pub charged_usd: Option<f64>,
    pub outcome: Option<String>,
}

/// `GET /v1/harness/traces` filters and page.
#[derive(Debug, Clone, Default)]
pub struct TraceFilter {
    pub workspace: Option<String>,
    pub mission: Option<String>,
    pub trace_type: Option<String>,
    pub outcome: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// The last id of the previous page: this page starts below it.
    pub before: Option<String>,
    pub limit: usize,
}

#[derive(Clone)]
pub struct Traces(Arc<TracesParts>);

struct TracesParts {
    store: Store,
    /// Writes per account since the last count.
    written: Mutex<HashMap<String, u64>>,
    /// Held while a trace is read, changed and written back (a reply completing it, feedback
    /// on it), so neither change overwrites the other.
    rewriting: Mutex<()>,
    max_per_account: usize,
}

pub fn new_id() -> String {
    format!("tr_{}", uuid::Uuid::now_v7().simple())
}

/// The smallest id of a trace made at `ms` or later (`tr_` and the UUIDv7's 48-bit time).
fn id_at(ms: i64) -> String {
    format!("tr_{:012x}", ms.clamp(0, 0xffff_ffff_ffff))
}

pub fn summary(text: &str) -> String {
    match text.char_indices().nth(MAX_SUMMARY_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

impl Traces {
    pub(crate) fn new(store: Store) -> Self {
        Self::with_cap(store, MAX_TRACES_PER_ACCOUNT)
    }

    pub(crate) fn with_cap(store: Store, max_per_account: usize) -> Self {
        Self(Arc::new(TracesParts { store, written: Mutex::default(), rewriting: Mutex::default(), max_per_account }))
    }

    /// Writes a trace (and its mission's index entry). Not flushed: a trace is an
    /// observation, and the flusher's next pass makes it durable.
    pub(crate) fn record(&self, trace: &HarnessTrace) -> Result<(), EngineError> {
        let store = &self.0.store;
        let account = trace.account_id.as_str();
        store.traces.insert(&(account, trace.id.as_str()), trace)?;
        if let Some(mission) = &trace.mission {
            let entry = MissionTrace { trace: trace.id.clone() };
            store.mission_traces.insert(&(account, mission.as_str(), trace.id.as_str()), &entry)?;
        }
        let due = {
            let mut written = self.0.written.lock().unwrap_or_else(|p| p.into_inner());
            let count = written.entry(trace.account_id.clone()).or_default();
            *count += 1;
            *count % PRUNE_EVERY == 1
        };
        if due {
            self.prune(account)?;
        }
        Ok(())
    }

    /// Deletes an account's oldest traces past its cap.
    fn prune(&self, account: &str) -> Result<(), EngineError> {
        let store = &self.0.store;
        let count = store.traces.count_prefix(&(account,));
        let excess = count.saturating_sub(self.0.max_per_account);
        if excess == 0 {
            return Ok(());
        }
        for old in store.traces.scan_prefix_limit(&(account,), excess)? {
            if let Some(mission) = &old.mission {
                store.mission_traces.remove(&(account, mission.as_str(), old.id.as_str()))?;
            }
            store.traces.remove(&(account, old.id.as_str()))?;
        }
        tracing::debug!(account, pruned = excess, "pruned the oldest traces past the cap");
        Ok(())
    }

    pub fn get(&self, access: &Access, id: &str) -> Result<HarnessTrace, EngineError> {
        if inputs::check_id("trace_id", id).is_err() {
            return Err(EngineError::NotFound { what: "trace" });
        }
        match self.0.store.traces.get(&(access.account_id.as_str(), id))? {
            Some(trace) if access.workspace.as_ref().is_none_or(|w| *w == trace.workspace) => Ok(trace),
            _ => Err(EngineError::NotFound { what: "trace" }),
        }
    }

    /// A page of the caller's traces, newest first.
    pub fn page(&self, access: &Access, filter: &TraceFilter) -> Result<Vec<HarnessTrace>, EngineError> {
        let store = &self.0.store;
        let account = access.account_id.as_str();
        let matches = |t: &HarnessTrace| {
            access.workspace.as_ref().is_none_or(|w| *w == t.workspace)
                && filter.workspace.as_ref().is_none_or(|w| *w == t.workspace)
                && filter.trace_type.as_ref().is_none_or(|k| *k == t.trace_type)
                && filter.outcome.as_ref().is_none_or(|o| *o == t.outcome)
                && filter.since_ms.is_none_or(|since| t.created_at_ms >= since)
        };
        // The page starts below the cursor, or below the first id past `until`.
        let until = filter.until_ms.map(|ms| id_at(ms.saturating_add(1)));
        let start = match (&filter.before, until) {
            (Some(before), Some(until)) => Some(before.clone().min(until)),
            (before, until) => before.clone().or(until),
        };
        if let Some(mission) = &filter.mission {
            let before = start.as_ref().map(|id| (account, mission.as_str(), id.as_str()));
            let refs = store.mission_traces.page_rev(
                &(account, mission.as_str()),
                before.as_ref().map(|k| k as &dyn tokaroo_storage::KeyTuple),
                MAX_READ_PER_PAGE,
                MAX_READ_PER_PAGE,
                |_| true,
            )?;
            let mut out = Vec::new();
            for entry in refs {
                if let Some(trace) = store.traces.get(&(account, entry.trace.as_str()))? {
                    if matches(&trace) {
                        out.push(trace);
                        if out.len() >= filter.limit {
                            break;
                        }
                    }
                }
            }
            return Ok(out);
        }
        let before = start.as_ref().map(|id| (account, id.as_str()));
        Ok(store.traces.page_rev(
            &(account,),
            before.as_ref().map(|k| k as &dyn tokaroo_storage::KeyTuple),
            filter.limit,
            MAX_READ_PER_PAGE,
            matches,
        )?)
    }

    /// An agent's observation, recorded in `scope`.
    pub fn observe(
        &self,
        account_id: &str,
        workspace: &str,
        input: ObservationInput,
    ) -> Result<HarnessTrace, EngineError> {
        let trace_type = input.trace_type.unwrap_or_else(|| "external_observation".into());
        inputs::check_id("trace_type", &trace_type)?;
        let outcome = input.outcome.unwrap_or_else(|| "unknown".into());
        inputs::check_id("outcome", &outcome)?;
        let strategy = input.context_strategy.unwrap_or_else(|| "external".into());
        inputs::check_id("context_strategy", &strategy)?;
        for (field, value) in [
            ("task_id", &input.links.task_id),
            ("assistant_id", &input.links.assistant_id),
            ("thread_id", &input.links.thread_id),
            ("harness_version_id", &input.links.harness_version_id),
        ] {
            if let Some(value) = value {
                inputs::check_id(field, value)?;
            }
        }
        inputs::check_metadata("metadata", &input.links.metadata)?;
        if input.documents.len() + input.memories.len() > 1_000 {
            return Err(EngineError::Invalid("context holds at most 1,000 documents and memories".into()));
        }
        for (field, id, score) in input
            .documents
            .iter()
            .map(|d| ("context.documents", &d.id, d.score))
            .chain(input.memories.iter().map(|m| ("context.memories", &m.id, m.score)))
        {
            inputs::check_id(&format!("{field}[].id"), id)?;
            if !score.is_finite() {
                return Err(EngineError::Invalid(format!("{field}[].score must be a finite number")));
            }
        }
        let charged = match input.charged_usd {
            Some(usd) if !usd.is_finite() || !(0.0..=1_000_000.0).contains(&usd) => {
                return Err(EngineError::Invalid("charged_usd must be a number from 0 to 1000000".into()))
            }
            Some(usd) => crate::money::billing::usd_to_units(usd),
            None => 0,
        };
        let now = crate::clock::now_ms();
        let trace = HarnessTrace {
            id: new_id(),
            account_id: account_id.to_owned(),
            workspace: workspace.to_owned(),
            trace_type,
            harness_version_id: input.links.harness_version_id,
            mission: input.links.mission,
            task_id: input.links.task_id,
            assistant_id: input.links.assistant_id,
            thread_id: input.links.thread_id,
            input_summary: input.input_summary.as_deref().map(summary),
            output_summary: input.output_summary.as_deref().map(summary),
            context_strategy: strategy,
            documents: input.documents,
            memories: input.memories,
            charged_units: charged,
            outcome,
            feedback_score: None,
            correction: None,
            metadata: input.links.metadata,
            created_at_ms: now,
            updated_at_ms: now,
        };
        self.record(&trace)?;
        Ok(trace)
    }

    /// A knowledge reply answered from the pack traced as `id`: the trace becomes the
    /// reply's, with its answer and charge. Best effort (the answer is already given).
    pub fn complete_reply(&self, account_id: &str, id: &str, answer: &str, charged_units: i64) {
        let store = &self.0.store;
        let _rewriting = self.0.rewriting.lock().unwrap_or_else(|p| p.into_inner());
        let result = store.traces.get(&(account_id, id)).and_then(|found| match found {
            Some(mut trace) => {
                trace.trace_type = "knowledge_reply".into();
                trace.output_summary = Some(summary(answer));
                trace.charged_units = charged_units;
                trace.updated_at_ms = crate::clock::now_ms();
                store.traces.insert(&(account_id, id), &trace)
            }
            None => Ok(()),
        });
        if let Err(error) = result {
            tracing::warn!(trace = id, %error, "completing a knowledge reply's trace failed");
        }
    }

    /// Feedback on a trace: its score, outcome and correction.
    pub(crate) fn set_feedback(
        &self,
        trace: &HarnessTrace,
        score: Option<f64>,
        outcome: Option<&str>,
        correction: Option<&str>,
    ) -> Result<HarnessTrace, EngineError> {
        let _rewriting = self.0.rewriting.lock().unwrap_or_else(|p| p.into_inner());
        // The stored trace as it is now (a reply may have completed it since it was read).
        let key = (trace.account_id.as_str(), trace.id.as_str());
        let mut trace = self.0.store.traces.get(&key)?.unwrap_or_else(|| trace.clone());
        if score.is_some() {
            trace.feedback_score = score;
        }
        if let Some(outcome) = outcome {
            trace.outcome = outcome.to_owned();
        }
        if let Some(correction) = correction {
            trace.correction = Some(summary(correction));
        }
        trace.updated_at_ms = crate::clock::now_ms();
        self.0.store.traces.insert(&(trace.account_id.as_str(), trace.id.as_str()), &trace)?;
        Ok(trace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(account: &str, mission: Option<&str>, kind: &str) -> HarnessTrace {
        let now = crate::clock::now_ms();
        HarnessTrace {
            id: new_id(),
            account_id: account.into(),
            workspace: "ws".into(),
            trace_type: kind.into(),
            harness_version_id: None,
            mission: mission.map(str::to_owned),
            task_id: None,
            assistant_id: None,
            thread_id: None,
            input_summary: None,
            output_summary: None,
            context_strategy: "test".into(),
            documents: Vec::new(),
            memories: Vec::new(),
            charged_units: 0,
            outcome: "unknown".into(),
            feedback_score: None,
            correction: None,
            metadata: Map::new(),
            created_at_ms: now,
            updated_at_ms: now,
        }
    }

    #[test]
    fn pages_run_newest_first_by_cursor_and_filter_and_the_oldest_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let traces = Traces::with_cap(store.clone(), 1_500);
        let mut written = Vec::new();
        for i in 0..2_100 {
            let t = trace("acct", (i % 3 == 0).then_some("m1"), if i % 2 == 0 { "context_pack" } else { "other" });
            traces.record(&t).unwrap();
            written.push(t.id);
        }
        // Pruned when the 2,001st was written: the 1,500 newest then, and the 99 since.
        assert_eq!(store.traces.count_prefix(&("acct",)), 1_599);
        let access = Access { account_id: "acct".into(), workspace: None };
        let first = traces.page(&access, &TraceFilter { limit: 10, ..Default::default() }).unwrap();
        let ids: Vec<&str> = first.iter().map(|t| t.id.as_str()).collect();
        let newest: Vec<&str> = written.iter().rev().take(10).map(String::as_str).collect();
        assert_eq!(ids, newest);
        let next = traces
            .page(&access, &TraceFilter { limit: 10, before: Some(first[9].id.clone()), ..Default::default() })
            .unwrap();
        assert_eq!(next[0].id, written[written.len() - 11]);
        let of_mission =
            traces.page(&access, &TraceFilter { limit: 5, mission: Some("m1".into()), ..Default::default() }).unwrap();
        assert!(of_mission.iter().all(|t| t.mission.as_deref() == Some("m1")) && of_mission.len() == 5);
        let typed = traces
            .page(&access, &TraceFilter { limit: 50, trace_type: Some("other".into()), ..Default::default() })
            .unwrap();
        assert!(typed.iter().all(|t| t.trace_type == "other") && typed.len() == 50);
        let future = traces
            .page(
                &access,
                &TraceFilter { limit: 5, since_ms: Some(crate::clock::now_ms() + 60_000), ..Default::default() },
            )
            .unwrap();
        assert!(future.is_empty());
        let past = traces
            .page(&access, &TraceFilter { limit: 5, until_ms: Some(1_000_000_000_000), ..Default::default() })
            .unwrap();
        assert!(past.is_empty(), "nothing was made in 2001");
        let other = Access { account_id: "other".into(), workspace: None };
        assert!(traces.page(&other, &TraceFilter { limit: 5, ..Default::default() }).unwrap().is_empty());
        assert!(traces.get(&other, &written[2_099]).is_err());
        let bound = Access { account_id: "acct".into(), workspace: Some("elsewhere".into()) };
        assert!(traces.get(&bound, &written[2_099]).is_err());
    }
}
