//! `accounts`: supervises one `workspace:{id}` supervisor per workspace, and the `apikey:{id}`
//! actors of keys bound to no workspace.

use std::sync::Arc;

use serde_json::json;

use crate::{
    directory::workspace,
    shared::Shared,
    tree::supervisor::{ChildSpec, Restart, SupervisorSpec},
};

pub const NAME: &str = "accounts";

pub fn spec(shared: &Arc<Shared>) -> SupervisorSpec {
    let loader_shared = shared.clone();
    let describe_shared = shared.clone();
    SupervisorSpec {
        name: NAME.to_owned(),
        kind: "accounts",
        restart: Restart::Permanent,
        policy: shared.restart_policy,
        registry: shared.registry.clone(),
        escalates: true,
        loader: Arc::new(move || {
            let shared = &loader_shared;
            let workspaces = shared.workspaces.iter().map(|e| e.value().clone()).collect::<Vec<_>>();
            let mut specs: Vec<Arc<dyn ChildSpec>> =
                workspaces.into_iter().map(|ws| Arc::new(workspace::spec(shared, ws)) as Arc<dyn ChildSpec>).collect();
            specs.extend(shared.unbound_keys().into_iter().map(|key| shared.key_spec(key)));
            specs
        }),
        describe: Arc::new(move |_| {
            json!({
                "accounts": describe_shared.store.accounts.len(),
                "workspaces": describe_shared.workspaces.len(),
                "api_keys": describe_shared.keys_by_id.len(),
            })
        }),
    }
}
