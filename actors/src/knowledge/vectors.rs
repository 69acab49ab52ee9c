//! The knowledge base's vectors in memory, by set (account, workspace, kind), loaded from
//! sled at start and kept current by the indexer.
//!
//! A small set is compared vector by vector (exact). A set of [`GRAPH_MIN`] or more gets an
//! HNSW graph (hnsw_rs), built on one of tokio's blocking threads from a snapshot (one build
//! at a time, on one core: the others stay with requests) while searches go on exactly; once swapped in, later
//! vectors go into it as they are written. hnsw_rs cannot delete: a replaced or removed vector is a tombstone the search filters out, and a set whose
//! tombstones outnumber its live vectors is rebuilt the same way. Vectors written while a
//! graph is built (its "tail") are compared exactly until they join it.

use std::{
    collections::{BinaryHeap, HashMap},
    sync::{Arc, RwLock},
};

use dashmap::DashMap;
use hnsw_rs::prelude::Hnsw;

use crate::cache::semantic::UnitCosine;

/// Sets at least this large are searched through a graph: below it an exact scan is within a
/// millisecond or two.
pub const GRAPH_MIN: usize = 4096;
const LINKS: usize = 16;
const MAX_LAYERS: usize = 16;
const EF_CONSTRUCTION: usize = 64;
/// A set below [`GRAPH_MIN`] drops its tombstones once it has this many, and more than live
/// vectors.
const COMPACT_MIN_TOMBSTONES: usize = 64;
/// The search beam: at least this wide, and wider than the hits asked for.
const EF_SEARCH: usize = 128;

type Vector = Arc<[f32]>;

/// One indexed text's vector.
struct Entry {
    key: String,
    vector: Vector,
    live: bool,
}

/// A graph over the entries with ids below `covers`.
struct Graph {
    hnsw: Hnsw<'static, f32, UnitCosine>,
    covers: usize,
}

/// One set's vectors, by id (position); ids are never reused until a rebuild.
#[derive(Default)]
struct Set {
    entries: Vec<Entry>,
    by_key: HashMap<String, usize>,
    tombstones: usize,
    graph: Option<Graph>,
    /// A graph is being built (of this generation).
    building: Option<u64>,
    generation: u64,
}

impl Set {
    fn live(&self) -> usize {
        self.entries.len() - self.tombstones
    }

    /// Adds or replaces `key`'s vector; into the graph too when it has no tail and `grow`.
    fn upsert(&mut self, key: &str, vector: Vector, grow: bool) {
        // The same vector again (a restarted indexer loading what it holds) changes nothing.
        if self.by_key.get(key).is_some_and(|&id| self.entries[id].vector[..] == vector[..]) {
            return;
        }
        if let Some(old) = self.by_key.remove(key) {
            self.kill(old);
        }
        let id = self.entries.len();
        self.entries.push(Entry { key: key.to_owned(), vector, live: true });
        self.by_key.insert(key.to_owned(), id);
        if let Some(graph) = self.graph.as_mut().filter(|g| grow && g.covers == id && self.building.is_none()) {
            graph.hnsw.insert((&self.entries[id].vector, id));
            graph.covers = id + 1;
        }
    }

    fn kill(&mut self, id: usize) {
        if let Some(entry) = self.entries.get_mut(id).filter(|e| e.live) {
            entry.live = false;
            self.tombstones += 1;
        }
        if self.tombstones > self.live().max(COMPACT_MIN_TOMBSTONES) && self.live() < GRAPH_MIN {
            self.compact();
        }
    }

    /// Drops the tombstones of a set too small for a graph: its live vectors, in order, and
    /// no graph (a build in flight is discarded when it finishes).
    fn compact(&mut self) {
        let entries: Vec<Entry> = std::mem::take(&mut self.entries).into_iter().filter(|e| e.live).collect();
        self.by_key = entries.iter().enumerate().map(|(id, e)| (e.key.clone(), id)).collect();
        self.entries = entries;
        self.tombstones = 0;
        self.graph = None;
        self.building = None;
        self.generation += 1;
    }

    fn remove(&mut self, key: &str) {
        if let Some(id) = self.by_key.remove(key) {
            self.kill(id);
        }
    }

    /// Whether a (re)build should start: large enough and no graph, mostly tombstones, or a
    /// tail longer than the graph (vectors loaded at start go in by a build, not one by one).
    fn wants_build(&self) -> bool {
        let covered = self.graph.as_ref().map_or(0, |g| g.covers);
        self.building.is_none()
            && self.live() >= GRAPH_MIN
            && (self.graph.is_none() || self.tombstones > self.live() || self.entries.len() - covered > covered)
    }

    /// The best `limit` live entries for `query`, into `best`.
    fn search(&self, query: &[f32], limit: usize, best: &mut BinaryHeap<std::cmp::Reverse<Hit>>) {
        let mut offer = |id: usize, cosine: f32| {
            let entry = &self.entries[id];
            if !entry.live || !cosine.is_finite() {
                return;
            }
            if best.len() < limit {
                best.push(std::cmp::Reverse(Hit(cosine, entry.key.clone())));
            } else if best.peek().is_some_and(|worst| cosine > worst.0 .0) {
                best.pop();
                best.push(std::cmp::Reverse(Hit(cosine, entry.key.clone())));
            }
        };
        let exact_from = match &self.graph {
            Some(graph) => {
                let live = |id: &usize| self.entries.get(*id).is_some_and(|e| e.live);
                let wanted = limit.min(self.live());
                for n in graph.hnsw.search_filter(query, wanted, EF_SEARCH.max(wanted), Some(&live)) {
                    if n.d_id < graph.covers && self.entries[n.d_id].vector.len() == query.len() {
                        offer(n.d_id, crate::embed::dot(&self.entries[n.d_id].vector, query));
                    }
                }
                graph.covers
            }
            None => 0,
        };
        for id in exact_from..self.entries.len() {
            let entry = &self.entries[id];
            if entry.live && entry.vector.len() == query.len() {
                offer(id, crate::embed::dot(&entry.vector, query));
            }
        }
    }
}

/// A scored key, ordered by score (then key, so ties are stable).
#[derive(PartialEq)]
struct Hit(f32, String);

impl Eq for Hit {}

impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Hit {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then_with(|| other.1.cmp(&self.1))
    }
}

type SetKey = (String, String, String);

/// (account, workspace, kind) → its vectors.
#[derive(Default, Clone)]
pub struct VectorSets {
    sets: Arc<DashMap<SetKey, Arc<RwLock<Set>>>>,
    /// Vectors are being loaded at start: no graph work until `loaded`.
    loading: Arc<std::sync::atomic::AtomicBool>,
}

fn write(set: &RwLock<Set>) -> std::sync::RwLockWriteGuard<'_, Set> {
    set.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read(set: &RwLock<Set>) -> std::sync::RwLockReadGuard<'_, Set> {
    set.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl VectorSets {
    fn set(&self, account: &str, workspace: &str, kind: &str) -> Arc<RwLock<Set>> {
        self.sets.entry((account.to_owned(), workspace.to_owned(), kind.to_owned())).or_default().clone()
    }

    /// Adds or replaces the vector of `key`.
    pub fn upsert(&self, account: &str, workspace: &str, key: &str, kind: &str, vector: Vec<f32>) {
        let set = self.set(account, workspace, kind);
        let loading = self.loading.load(std::sync::atomic::Ordering::Relaxed);
        let build = {
            let mut guard = write(&set);
            guard.upsert(key, vector.into(), !loading);
            !loading && guard.wants_build()
        };
        if build {
            self.build(set);
        }
    }

    /// Vectors loaded from now on wait for `loaded` to be graphed, in one build per set.
    pub fn loading(&self) {
        self.loading.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Loading is over: sets large enough get their graphs built.
    pub fn loaded(&self) {
        self.loading.store(false, std::sync::atomic::Ordering::Relaxed);
        let sets: Vec<Arc<RwLock<Set>>> = self.sets.iter().map(|s| s.value().clone()).collect();
        for set in sets {
            if read(&set).wants_build() {
                self.build(set);
            }
        }
    }

    /// Removes the vector of `key` (`<kind>:<id>`, as the indexer names them).
    pub fn remove(&self, account: &str, workspace: &str, key: &str) {
        let kind = key.split(':').next().unwrap_or_default();
        let Some(set) = self.sets.get(&(account.to_owned(), workspace.to_owned(), kind.to_owned())).map(|s| s.clone())
        else {
            return;
        };
        let build = {
            let mut guard = write(&set);
            guard.remove(key);
            guard.wants_build()
        };
        if build {
            self.build(set);
        }
    }

    /// Queues a graph build for `set` (see [`build_graph`]).
    fn build(&self, set: Arc<RwLock<Set>>) {
        request_build(set);
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
        if limit == 0 {
            return Vec::new();
        }
        let mut best = BinaryHeap::new();
        for workspace in workspaces {
            for kind in kinds {
                let key = (account.to_owned(), (*workspace).to_owned(), (*kind).to_owned());
                let Some(set) = self.sets.get(&key).map(|s| s.clone()) else { continue };
                read(&set).search(query, limit, &mut best);
            }
        }
        let mut found: Vec<(String, f32)> = best.into_iter().map(|std::cmp::Reverse(Hit(c, k))| (k, c)).collect();
        found.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        found
    }

    /// Live vectors held.
    pub fn len(&self) -> usize {
        self.sets.iter().map(|s| read(s.value()).live()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets searched through a graph.
    pub fn graphs(&self) -> usize {
        self.sets.iter().filter(|s| read(s.value()).graph.is_some()).count()
    }
}

/// Sets waiting for a graph build, and whether a builder is running: one build at a time,
/// whatever the number of tenants, so builds take one core and their memory peaks do not add.
#[derive(Default)]
struct Builds {
    running: bool,
    queue: std::collections::VecDeque<Arc<RwLock<Set>>>,
}

static BUILDS: std::sync::Mutex<Builds> =
    std::sync::Mutex::new(Builds { running: false, queue: std::collections::VecDeque::new() });

fn request_build(set: Arc<RwLock<Set>>) {
    {
        let mut builds = BUILDS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if builds.queue.iter().any(|queued| Arc::ptr_eq(queued, &set)) {
            return;
        }
        builds.queue.push_back(set);
        if builds.running {
            return;
        }
        builds.running = true;
    }
    // A blocking thread of tokio's bounded pool; outside a runtime (unit tests), here.
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(run_builds)),
        Err(_) => run_builds(),
    }
}

/// Builds queued sets one after the other until none is left.
fn run_builds() {
    loop {
        let next = {
            let mut builds = BUILDS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match builds.queue.pop_front() {
                Some(set) => set,
                None => {
                    builds.running = false;
                    return;
                }
            }
        };
        // A build that panics leaves the set as it was, free to be built again.
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| build_graph(&next)));
        if built.is_err() {
            write(&next).building = None;
            tracing::error!("knowledge base: building a vector graph panicked; the set stays on exact search");
        }
    }
}

/// Builds a graph over a snapshot of `set`'s live vectors, outside its lock, and swaps it in:
/// the snapshot's vectors take ids `0..n`; those written since (the tail) follow, compared
/// exactly until the next build takes them.
fn build_graph(set: &Arc<RwLock<Set>>) {
    let (generation, snapshot) = {
        let mut guard = write(set);
        if !guard.wants_build() {
            return;
        }
        guard.generation += 1;
        let generation = guard.generation;
        guard.building = Some(generation);
        let live: Vec<(String, Vector)> =
            guard.entries.iter().filter(|e| e.live).map(|e| (e.key.clone(), e.vector.clone())).collect();
        (generation, live)
    };
    let hnsw = Hnsw::new(LINKS, snapshot.len().max(16), MAX_LAYERS, EF_CONSTRUCTION, UnitCosine);
    for (id, (_, vector)) in snapshot.iter().enumerate() {
        hnsw.insert((vector, id));
    }
    let mut guard = write(set);
    if guard.building != Some(generation) {
        return; // compacted meanwhile: this graph is of vectors that no longer count
    }
    let old = std::mem::take(&mut guard.entries);
    let snapshot_keys: HashMap<&str, usize> =
        snapshot.iter().enumerate().map(|(id, (key, _))| (key.as_str(), id)).collect();
    let mut entries: Vec<Entry> =
        snapshot.iter().map(|(key, vector)| Entry { key: key.clone(), vector: vector.clone(), live: false }).collect();
    let mut by_key = HashMap::with_capacity(guard.by_key.len());
    let mut tail = Vec::new();
    for (key, id) in guard.by_key.drain() {
        let current = &old[id];
        match snapshot_keys.get(key.as_str()) {
            Some(&at) if Arc::ptr_eq(&entries[at].vector, &current.vector) => {
                entries[at].live = true;
                by_key.insert(key, at);
            }
            _ => tail.push((key, current.vector.clone())),
        }
    }
    guard.tombstones = entries.iter().filter(|e| !e.live).count();
    let covers = entries.len();
    guard.entries = entries;
    guard.by_key = by_key;
    let previous = guard.graph.replace(Graph { hnsw, covers });
    guard.building = None;
    for (key, vector) in tail {
        guard.upsert(&key, vector, false);
    }
    drop(guard);
    drop(previous); // freed outside the lock
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upserts_replace_removals_keep_the_rest_findable_and_scopes_stay_apart() {
        let sets = VectorSets::default();
        for (key, v) in [("note:a", [1.0, 0.0]), ("note:b", [0.0, 1.0]), ("note:c", [0.6, 0.8])] {
            sets.upsert("acct", "", key, "note", v.to_vec());
        }
        sets.upsert("acct", "", "note:a", "note", vec![0.0, 1.0]);
        sets.upsert("other", "", "note:x", "note", vec![1.0, 0.0]);
        assert_eq!(sets.len(), 4);
        let best = sets.search("acct", &[""], &["note"], &[1.0, 0.0], 3);
        assert_eq!(best[0].0, "note:c", "{best:?}");
        sets.remove("acct", "", "note:b");
        sets.remove("acct", "", "note:missing");
        let keys: Vec<String> =
            sets.search("acct", &[""], &["note"], &[0.0, 1.0], 9).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["note:a", "note:c"]);
        assert!(sets.search("acct", &["ws"], &["note"], &[1.0, 0.0], 9).is_empty());
        assert!(sets.search("acct", &[""], &["chunk"], &[1.0, 0.0], 9).is_empty());
    }

    /// Rewriting a key over and over (patching a note, re-ingesting a source) keeps a small
    /// set small; writing the same vector again changes nothing.
    #[test]
    fn rewrites_do_not_grow_a_set() {
        let sets = VectorSets::default();
        for i in 0..1000u64 {
            sets.upsert("a", "w", "note:x", "note", unit(i, 8));
            sets.upsert("a", "w", "note:y", "note", unit(7, 8));
        }
        let set = sets.set("a", "w", "note");
        let guard = read(&set);
        assert!(guard.entries.len() <= 2 * COMPACT_MIN_TOMBSTONES + 2, "{} entries", guard.entries.len());
        assert_eq!(guard.live(), 2);
        drop(guard);
        assert_eq!(sets.search("a", &["w"], &["note"], &unit(999, 8), 1)[0].0, "note:x");
    }

    fn unit(seed: u64, dims: usize) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v: Vec<f32> = (0..dims)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter_mut().for_each(|a| *a /= norm);
        v
    }

    /// A large set gets a graph; its answers match the exact scan's; replacing, removing and
    /// writing during the build all show.
    #[test]
    fn a_large_set_is_searched_through_a_graph_that_agrees_with_the_exact_scan() {
        let dims = 32;
        let sets = VectorSets::default();
        let exact = VectorSets::default();
        let n = GRAPH_MIN + 500;
        for i in 0..n as u64 {
            let v = unit(i, dims);
            sets.upsert("a", "w", &format!("note:{i}"), "note", v.clone());
            write(&exact.set("a", "w", "note")).upsert(&format!("note:{i}"), v.into(), false);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while sets.graphs() == 0 {
            assert!(std::time::Instant::now() < deadline, "the graph was never built");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Written after the build: a replaced key and a removed one.
        sets.upsert("a", "w", "note:7", "note", unit(1_000_000, dims));
        write(&exact.set("a", "w", "note")).upsert("note:7", unit(1_000_000, dims).into(), false);
        sets.remove("a", "w", "note:8");
        write(&exact.set("a", "w", "note")).remove("note:8");
        let mut agree = 0;
        for q in 0..50u64 {
            let query = unit(5_000_000 + q, dims);
            let got: Vec<String> =
                sets.search("a", &["w"], &["note"], &query, 10).into_iter().map(|(k, _)| k).collect();
            let want: Vec<String> =
                exact.search("a", &["w"], &["note"], &query, 10).into_iter().map(|(k, _)| k).collect();
            assert!(!got.contains(&"note:8".to_owned()));
            agree += got.iter().filter(|k| want.contains(k)).count();
        }
        assert!(agree >= 50 * 10 * 9 / 10, "recall@10 against the exact scan: {agree}/500");
        let replaced = unit(1_000_000, dims);
        assert_eq!(sets.search("a", &["w"], &["note"], &replaced, 1)[0].0, "note:7");
        assert_eq!(sets.len(), n - 1);
    }
}
