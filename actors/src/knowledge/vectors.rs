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

/// One scope's vectors, and where each key's is.
#[derive(Default)]
struct Scope {
    stored: Vec<Stored>,
    by_key: std::collections::HashMap<String, usize>,
}

impl Scope {
    fn upsert(&mut self, stored: Stored) {
        match self.by_key.get(&stored.key) {
            Some(&at) => self.stored[at] = stored,
            None => {
                self.by_key.insert(stored.key.clone(), self.stored.len());
                self.stored.push(stored);
            }
        }
    }

    fn remove(&mut self, key: &str) {
        let Some(at) = self.by_key.remove(key) else { return };
        self.stored.swap_remove(at);
        if let Some(moved) = self.stored.get(at) {
            self.by_key.insert(moved.key.clone(), at);
        }
    }
}

/// (account, workspace) → its vectors.
#[derive(Default)]
pub struct VectorSets {
    scopes: DashMap<(String, String), RwLock<Scope>>,
}

impl VectorSets {
    /// Adds or replaces the vector of `key`.
    pub fn upsert(&self, account: &str, workspace: &str, key: &str, kind: &str, vector: Vec<f32>) {
        let scope = self.scopes.entry((account.to_owned(), workspace.to_owned())).or_default();
        let mut scope = scope.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        scope.upsert(Stored { key: key.to_owned(), kind: kind.to_owned(), vector });
    }

    pub fn remove(&self, account: &str, workspace: &str, key: &str) {
        if let Some(scope) = self.scopes.get(&(account.to_owned(), workspace.to_owned())) {
            scope.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
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
            let scope = scope.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            for s in scope.stored.iter().filter(|s| kinds.contains(&s.kind.as_str()) && s.vector.len() == query.len()) {
                let cosine = crate::embed::dot(&s.vector, query);
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
        self.scopes.iter().map(|s| s.read().map(|v| v.stored.len()).unwrap_or(0)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upserts_replace_removals_keep_the_rest_findable_and_scopes_stay_apart() {
        let sets = VectorSets::default();
        for (key, v) in [("a", [1.0, 0.0]), ("b", [0.0, 1.0]), ("c", [0.6, 0.8])] {
            sets.upsert("acct", "", key, "note", v.to_vec());
        }
        sets.upsert("acct", "", "a", "note", vec![0.0, 1.0]);
        sets.upsert("other", "", "x", "note", vec![1.0, 0.0]);
        assert_eq!(sets.len(), 4);
        let best = sets.search("acct", &[""], &["note"], &[1.0, 0.0], 3);
        assert_eq!(best[0].0, "c", "{best:?}");
        sets.remove("acct", "", "b");
        sets.remove("acct", "", "missing");
        let keys: Vec<String> =
            sets.search("acct", &[""], &["note"], &[0.0, 1.0], 9).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "c"]);
        assert!(sets.search("acct", &["ws"], &["note"], &[1.0, 0.0], 9).is_empty());
        assert!(sets.search("acct", &[""], &["chunk"], &[1.0, 0.0], 9).is_empty());
    }
}
