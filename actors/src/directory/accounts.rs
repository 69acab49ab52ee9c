//! `accounts`: supervises one `workspace:{id}` supervisor per workspace, and the `apikey:{id}`
//! actors of keys bound to no workspace.

use std::sync::Arc;

use serde_json::json;

use crate::{
    directory::state::DirectoryState,
    directory::workspace,
    tree::supervisor::{ChildSpec, Restart, SupervisorSpec},
};

pub const NAME: &str = "accounts";

pub fn spec(state: &Arc<DirectoryState>) -> SupervisorSpec {
    let loader_state = state.clone();
    let describe_state = state.clone();
    SupervisorSpec {
        name: NAME.to_owned(),
        kind: "accounts",
        restart: Restart::Permanent,
        policy: state.restart_policy,
        registry: state.registry.clone(),
        escalates: true,
        loader: Arc::new(move || {
            let state = &loader_state;
            let workspaces = state.workspaces.iter().map(|e| e.value().clone()).collect::<Vec<_>>();
            let mut specs: Vec<Arc<dyn ChildSpec>> =
                workspaces.into_iter().map(|ws| Arc::new(workspace::spec(state, ws)) as Arc<dyn ChildSpec>).collect();
            specs.extend(state.unbound_keys().into_iter().map(|key| state.key_spec(key)));
            specs
        }),
        describe: Arc::new(move |_| {
            json!({
                "accounts": describe_state.store.accounts.len(),
                "workspaces": describe_state.workspaces.len(),
                "api_keys": describe_state.keys_by_id.len(),
            })
        }),
    }
}
