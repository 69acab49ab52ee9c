//! Harness versions: configurations of context assembly (a pack's default budget and
//! sources), retrieval (the ranking's `RankWeights`) and reflection, kept as `draft` and
//! made `active` one per workspace. A pack in a workspace with an active version uses its
//! weights and defaults, and its trace records the version.

use serde_json::{json, Map, Value};
use tokaroo_storage::harness::{ActiveVersion, HarnessVersion};

use super::{inputs, Access, Missions};
use crate::{error::EngineError, knowledge::pack::RankWeights, knowledge::KbScope};

/// Versions an account may hold.
const MAX_VERSIONS_PER_ACCOUNT: usize = 1_000;
const MAX_PACK_TOKENS: i64 = 100_000;

/// A version to create.
#[derive(Debug, Clone, Default)]
pub struct VersionInput {
    pub name: String,
    pub description: Option<String>,
    /// `draft` (the default) or `active`.
    pub status: Option<String>,
    pub context: Map<String, Value>,
    pub retrieval: Map<String, Value>,
    pub reflection: Map<String, Value>,
}

/// What an active version changes in a pack.
#[derive(Debug, Clone)]
pub struct PackSettings {
    pub version_id: Option<String>,
    pub weights: RankWeights,
    pub max_tokens: Option<u32>,
    pub include_sources: Option<bool>,
}

/// The ranking a version's `retrieval` describes: the built-in weights, with the fields it
/// gives replaced; every weight checked.
pub fn weights_of(retrieval: &Map<String, Value>) -> Result<RankWeights, EngineError> {
    let weights: RankWeights = serde_json::from_value(Value::Object(retrieval.clone()))
        .map_err(|e| EngineError::Invalid(format!("retrieval: {e}")))?;
    weights.check().map_err(|e| EngineError::Invalid(format!("retrieval: {e}")))?;
    Ok(weights)
}

fn check_context(context: &Map<String, Value>) -> Result<(), EngineError> {
    for (field, value) in context {
        match (field.as_str(), value) {
            ("max_tokens", Value::Number(n)) if n.as_i64().is_some_and(|n| (1..=MAX_PACK_TOKENS).contains(&n)) => {}
            ("max_tokens", _) => {
                return Err(EngineError::Invalid(format!("context.max_tokens must be from 1 to {MAX_PACK_TOKENS}")))
            }
            ("include_sources", Value::Bool(_)) => {}
            ("include_sources", _) => {
                return Err(EngineError::Invalid("context.include_sources must be true or false".into()))
            }
            (other, _) => {
                return Err(EngineError::Invalid(format!(
                    "context.{other} is not a setting; context takes max_tokens and include_sources"
                )))
            }
        }
    }
    Ok(())
}

fn check_reflection(reflection: &Map<String, Value>) -> Result<(), EngineError> {
    for (field, value) in reflection {
        match (field.as_str(), value) {
            ("mode", Value::String(m)) if matches!(m.as_str(), "auto" | "fast" | "max") => {}
            ("mode", _) => return Err(EngineError::Invalid("reflection.mode must be auto, fast or max".into())),
            ("max_traces", Value::Number(n)) if n.as_u64().is_some_and(|n| (1..=50).contains(&n)) => {}
            ("max_traces", _) => return Err(EngineError::Invalid("reflection.max_traces must be from 1 to 50".into())),
            ("store_as_memory", Value::Bool(_)) => {}
            ("store_as_memory", _) => {
                return Err(EngineError::Invalid("reflection.store_as_memory must be true or false".into()))
            }
            (other, _) => {
                return Err(EngineError::Invalid(format!(
                    "reflection.{other} is not a setting; reflection takes mode, max_traces and store_as_memory"
                )))
            }
        }
    }
    Ok(())
}

impl Missions {
    /// Creates a version (checked whole); `status: "active"` activates it at once.
    pub async fn create_version(&self, scope: &KbScope, input: VersionInput) -> Result<HarnessVersion, EngineError> {
        inputs::check_id("name", &input.name)?;
        if let Some(description) = &input.description {
            if description.chars().count() > 4_000 {
                return Err(EngineError::Invalid("description must be at most 4000 characters".into()));
            }
        }
        let status = input.status.clone().unwrap_or_else(|| "draft".into());
        if !matches!(status.as_str(), "draft" | "active") {
            return Err(EngineError::Invalid(format!("status must be draft or active; got {status:?}")));
        }
        check_context(&input.context)?;
        weights_of(&input.retrieval)?;
        check_reflection(&input.reflection)?;
        let store = &self.0.store;
        let account = scope.account_id.as_str();
        if store.harness_versions.count_prefix(&(account,)) >= MAX_VERSIONS_PER_ACCOUNT {
            return Err(EngineError::Invalid(format!(
                "this account has {MAX_VERSIONS_PER_ACCOUNT} harness versions, the most it may have"
            )));
        }
        let now = crate::clock::now_ms();
        let version = HarnessVersion {
            id: format!("hv_{}", uuid::Uuid::now_v7().simple()),
            account_id: account.to_owned(),
            workspace: scope.workspace.clone(),
            name: input.name,
            description: input.description,
            status: "draft".into(),
            context: input.context,
            retrieval: input.retrieval,
            reflection: input.reflection,
            created_at_ms: now,
            updated_at_ms: now,
            activated_at_ms: None,
        };
        store.harness_versions.insert(&(account, version.id.as_str()), &version)?;
        if status == "active" {
            return self
                .activate_version(
                    &Access { account_id: account.to_owned(), workspace: Some(scope.workspace.clone()) },
                    &version.id,
                )
                .await;
        }
        store.flush().await?;
        Ok(version)
    }

    /// Makes a version its workspace's active one; the one it replaces is `retired`.
    pub async fn activate_version(&self, access: &Access, id: &str) -> Result<HarnessVersion, EngineError> {
        let mut version = self.version(access, id)?;
        let store = &self.0.store;
        let _guard = self.0.creating.lock().await;
        let slot = (version.account_id.clone(), version.workspace.clone());
        if let Some(current) = store.active_versions.get(&slot)? {
            if current.version != version.id {
                if let Some(mut old) = store.harness_versions.get(&(slot.0.as_str(), current.version.as_str()))? {
                    old.status = "retired".into();
                    old.updated_at_ms = crate::clock::now_ms();
                    store.harness_versions.insert(&(slot.0.as_str(), old.id.as_str()), &old)?;
                }
            }
        }
        let now = crate::clock::now_ms();
        version.status = "active".into();
        version.updated_at_ms = now;
        version.activated_at_ms = Some(now);
        store.harness_versions.insert(&(slot.0.as_str(), version.id.as_str()), &version)?;
        store.active_versions.insert(&slot, &ActiveVersion { version: version.id.clone() })?;
        store.flush().await?;
        Ok(version)
    }

    pub fn version(&self, access: &Access, id: &str) -> Result<HarnessVersion, EngineError> {
        if inputs::check_id("id", id).is_err() {
            return Err(EngineError::NotFound { what: "harness version" });
        }
        match self.0.store.harness_versions.get(&(access.account_id.as_str(), id))? {
            Some(v) if access.workspace.as_ref().is_none_or(|w| *w == v.workspace) => Ok(v),
            _ => Err(EngineError::NotFound { what: "harness version" }),
        }
    }

    /// The caller's versions, newest first.
    pub fn versions(
        &self,
        access: &Access,
        workspace: Option<&str>,
        status: Option<&str>,
    ) -> Result<Vec<HarnessVersion>, EngineError> {
        let mut versions: Vec<HarnessVersion> = self
            .0
            .store
            .harness_versions
            .scan_prefix(&(access.account_id.as_str(),))?
            .into_iter()
            .filter(|v| access.workspace.as_ref().is_none_or(|w| *w == v.workspace))
            .filter(|v| workspace.is_none_or(|w| w == v.workspace))
            .filter(|v| status.is_none_or(|s| s == v.status))
            .collect();
        versions.reverse();
        Ok(versions)
    }

    /// What a pack in `scope` uses: its workspace's active version, else the server's weights.
    pub fn pack_settings(&self, scope: &KbScope, server_weights: RankWeights) -> PackSettings {
        let version = match self.active_version(scope) {
            Ok(version) => version,
            Err(error) => {
                tracing::warn!(%error, "reading the active harness version failed; the server's weights apply");
                None
            }
        };
        let Some(version) = version else {
            return PackSettings { version_id: None, weights: server_weights, max_tokens: None, include_sources: None };
        };
        // Checked when written; a version that no longer parses falls back to the server's.
        let weights = weights_of(&version.retrieval).unwrap_or(server_weights);
        PackSettings {
            max_tokens: version.context.get("max_tokens").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()),
            include_sources: version.context.get("include_sources").and_then(Value::as_bool),
            version_id: Some(version.id),
            weights,
        }
    }
}

impl Missions {
    /// A context pack in `scope` as the workspace's active version says (weights, default
    /// budget and sources), its trace recording that version. `None` takes the version's
    /// default, then the built-in one (`default_sources` for sources).
    pub async fn context_pack(
        &self,
        scope: &KbScope,
        query: &str,
        max_tokens: Option<u32>,
        include_sources: Option<bool>,
        default_sources: bool,
        mut links: super::traces::TraceLinks,
    ) -> Result<crate::knowledge::pack::ContextPack, EngineError> {
        let knowledge = &self.0.knowledge;
        let settings = self.pack_settings(scope, knowledge.weights());
        let max_tokens = max_tokens.or(settings.max_tokens).unwrap_or(crate::knowledge::pack::DEFAULT_MAX_TOKENS);
        let include_sources = include_sources.or(settings.include_sources).unwrap_or(default_sources);
        if settings.version_id.is_some() {
            links.harness_version_id = settings.version_id;
        }
        knowledge.context_pack_traced(scope, query, max_tokens, include_sources, settings.weights, links).await
    }
}

/// A version's settings as an answer shows them, with the weights in full.
pub fn effective_retrieval(version: &HarnessVersion) -> Value {
    weights_of(&version.retrieval).map(|w| json!(w)).unwrap_or(Value::Null)
}
