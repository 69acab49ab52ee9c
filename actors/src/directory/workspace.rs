//! `workspace:{id}`: one supervisor per workspace, over the `apikey:{id}` actors of the keys
//! bound to it. The workspace's live state (record, status, budget) has one home, its
//! [`WorkspaceEntry`]; the actor reads it for the tree and owns nothing else.

use std::sync::Arc;

use serde_json::json;

use crate::{
    directory::state::{DirectoryState, WorkspaceEntry},
    tree::supervisor::{Restart, SupervisorSpec},
};

pub fn actor_name(workspace_uuid: &str) -> String {
    format!("workspace:{workspace_uuid}")
}

pub fn spec(state: &Arc<DirectoryState>, entry: Arc<WorkspaceEntry>) -> SupervisorSpec {
    let loader_state = state.clone();
    let loader_entry = entry.clone();
    SupervisorSpec {
        name: actor_name(&entry.uuid),
        kind: "workspace",
        restart: Restart::Permanent,
        policy: state.restart_policy,
        registry: state.registry.clone(),
        escalates: true,
        loader: Arc::new(move || {
            let record = loader_entry.record();
            let keys = loader_state.keys_in_workspace(&record.account_id, Some(&record.slug));
            keys.into_iter().map(|key| loader_state.key_spec(key)).collect()
        }),
        describe: Arc::new(move |children| {
            let r = entry.record();
            json!({
                "workspace_id": r.slug,
                "account_id": r.account_id,
                "name": r.name,
                "status": r.status,
                "monthly_budget_usd": r.monthly_budget_usd,
                "active": entry.is_active(),
                "api_keys": children.len(),
            })
        }),
    }
}
