//! The knowledge base's vectors in memory, by scope (account and workspace), loaded from sled
//! at start and kept current by the indexer. A query compares the vectors of the scopes it
//! may read one by one: exact, and within the context pack's budget up to the 100k-note
//! bench (an HNSW graph per large scope is the next step when scopes outgrow it).

use std::sync::RwLock;

use dashmap::DashMap;

/// One indexed text's vector.
#[derive(Debug, Clone)]
struct Stored {
    key: String,
    kind: String,
    vector: Vec<f32>,
}

/// (account, workspace) → its vectors.
#[derive(Default)]
pub struct VectorSets {
    scopes: DashMap<(String, String), RwLock<Vec<Stored>>>,
}

impl VectorSets {
    /// Adds or replaces the vector of `key`.
    pub fn upsert(&self, account: &str, workspace: &str, key: &str, kind: &str, vector: Vec<f32>) {
        let scope = self.scopes.entry((account.to_owned(), workspace.to_owned())).or_default();
        let mut stored = scope.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        stored.retain(|s| s.key != key);
        stored.push(Stored { key: key.to_owned(), kind: kind.to_owned(), vector });
    }

    pub fn remove(&self, account: &str, workspace: &str, key: &str) {
        if let Some(scope) = self.scopes.get(&(account.to_owned(), workspace.to_owned())) {
            scope.write().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|s| s.key != key);
        }
    }

    /// The `limit` most similar texts of these scopes and kinds: (key, cosine), best first.
    /// `query` and the stored vectors are unit length, so the dot product is the cosine.
    pub fn search(
        &self,
        account: &str,
        workspaces: &[&str],
        kinds: &[&str],
        query: &[f32],
        limit: usize,
    ) -> Vec<(String, f32)> {
        let mut found = Vec::new();
        for workspace in workspaces {
            let Some(scope) = self.scopes.get(&(account.to_owned(), (*workspace).to_owned())) else { continue };
            let stored = scope.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            for s in stored.iter().filter(|s| kinds.contains(&s.kind.as_str()) && s.vector.len() == query.len()) {
                let cosine: f32 = s.vector.iter().zip(query).map(|(a, b)| a * b).sum();
                if cosine.is_finite() {
                    found.push((s.key.clone(), cosine));
                }
            }
        }
        found.sort_by(|a, b| b.1.total_cmp(&a.1));
        found.truncate(limit);
        found
    }

    pub fn len(&self) -> usize {
        self.scopes.iter().map(|s| s.read().map(|v| v.len()).unwrap_or(0)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
