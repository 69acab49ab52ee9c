//! The semantic cache's index: per partition, an HNSW graph (hnsw_rs) over the vectors of
//! cached prompts' last user messages, with what each entry must match beyond similarity (the
//! hash of the rest of its request, its expiry, its guard features).
//!
//! hnsw_rs cannot delete: a removed or expired entry stays in the graph as a tombstone that
//! searches filter out, and a partition whose tombstones outnumber its live entries is rebuilt
//! from the live ones by the cache's sweep (off the request path; lookups keep using the old
//! graph until the new one is swapped in). The entries themselves live in sled
//! (`Store::semantic`), so a restart rebuilds every graph from disk.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use dashmap::DashMap;
use hnsw_rs::prelude::{Distance, Hnsw};
use tokaroo_storage::records::SemanticEntry;

use super::guards::{disagreement, Disagreement, PromptFeatures};

/// Graph parameters: 16 links per node and a 64-wide beam at build and search keep recall
/// near 1 on 384-dim sentence vectors at 100k entries while a search stays sub-millisecond.
const LINKS: usize = 16;
const MAX_LAYERS: usize = 16;
const EF_CONSTRUCTION: usize = 64;
const EF_SEARCH: usize = 64;
/// How many nearest neighbours a lookup considers: the nearest may fail the guards while
/// the next one is the same question.
const CANDIDATES: usize = 8;
/// Rebuild a partition once it holds this many tombstones and more than live entries.
const REBUILD_MIN_TOMBSTONES: usize = 64;

/// Cosine distance for unit vectors (1 − dot). hnsw_rs's own `DistDot` asserts the result is
/// not negative, which rounding breaks for a vector against itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        (1.0 - dot).max(0.0)
    }
}

/// What a lookup asks: the request's last user message, its vector, and the hash of the
/// rest of the request.
#[derive(Debug, Clone)]
pub struct Probe {
    pub context: String,
    pub prompt: String,
    pub vector: Vec<f32>,
}

/// The best entry a lookup found, or why the nearest one was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// The key of the cached answer to serve and its similarity.
    Hit {
        key: String,
        similarity: f32,
    },
    /// The nearest entry was similar enough but asked a different question.
    Refused {
        similarity: f32,
        why: Disagreement,
    },
    Nothing,
}

#[derive(Clone)]
struct Indexed {
    key: String,
    context: String,
    features: PromptFeatures,
    vector: Vec<f32>,
    expires_at_ms: i64,
    live: bool,
}

/// One graph and its entries, by the graph's data id (the entry's position).
struct Generation {
    graph: Hnsw<'static, f32, UnitCosine>,
    entries: Vec<Indexed>,
    /// The live entry of each answer key.
    by_key: HashMap<String, usize>,
    tombstones: usize,
}

impl Generation {
    fn new(capacity: usize) -> Self {
        Self {
            graph: Hnsw::new(LINKS, capacity.max(1024), MAX_LAYERS, EF_CONSTRUCTION, UnitCosine),
            entries: Vec::with_capacity(capacity),
            by_key: HashMap::with_capacity(capacity),
            tombstones: 0,
        }
    }

    fn add(&mut self, entry: Indexed) {
        if let Some(old) = self.by_key.remove(&entry.key) {
            self.kill(old);
        }
        let id = self.entries.len();
        self.graph.insert((&entry.vector, id));
        self.by_key.insert(entry.key.clone(), id);
        self.entries.push(entry);
    }

    fn kill(&mut self, id: usize) {
        if let Some(entry) = self.entries.get_mut(id).filter(|e| e.live) {
            entry.live = false;
            self.tombstones += 1;
        }
    }

    fn live(&self) -> usize {
        self.entries.len() - self.tombstones
    }
}

/// Every partition's index, and the embedder whose vectors it holds.
pub struct SemanticIndex {
    embedder: String,
    dims: usize,
    threshold: f32,
    partitions: DashMap<String, Arc<RwLock<Generation>>>,
}

impl SemanticIndex {
    /// An empty index for vectors of `embedder` (`kind:model:dims`) of length `dims`, serving
    /// entries at least `threshold` similar.
    pub fn new(embedder: String, dims: usize, threshold: f32) -> Self {
        Self { embedder, dims, threshold, partitions: DashMap::new() }
    }

    pub fn embedder(&self) -> &str {
        &self.embedder
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Adds an entry (replacing the one of the same answer key). Entries of another embedder
    /// or dimension are ignored: their vectors mean nothing in this space.
    pub fn insert(&self, entry: &SemanticEntry) {
        if entry.embedder != self.embedder || entry.vector.len() != self.dims || self.dims == 0 {
            return;
        }
        let partition = self
            .partitions
            .entry(entry.partition.clone())
            .or_insert_with(|| Arc::new(RwLock::new(Generation::new(0))))
            .clone();
        let indexed = Indexed {
            key: entry.key.clone(),
            context: entry.context.clone(),
            features: PromptFeatures::of(&entry.prompt),
            vector: entry.vector.clone(),
            expires_at_ms: entry.expires_at_ms,
            live: true,
        };
        write(&partition).add(indexed);
    }

    /// The most similar live entry with the same context that the guards accept.
    pub fn search(&self, partition: &str, probe: &Probe, now_ms: i64) -> Found {
        if probe.vector.len() != self.dims {
            return Found::Nothing;
        }
        let Some(partition) = self.partitions.get(partition).map(|p| p.clone()) else {
            return Found::Nothing;
        };
        let generation = read(&partition);
        let eligible = |id: &usize| {
            generation
                .entries
                .get(*id)
                .is_some_and(|e| e.live && e.expires_at_ms > now_ms && e.context == probe.context)
        };
        let mut neighbours = generation.graph.search_filter(&probe.vector, CANDIDATES, EF_SEARCH, Some(&eligible));
        neighbours.sort_by(|a, b| a.distance.total_cmp(&b.distance));
        let features = PromptFeatures::of(&probe.prompt);
        let mut refused = None;
        for neighbour in neighbours {
            let similarity = 1.0 - neighbour.distance;
            if similarity < self.threshold {
                break;
            }
            let Some(entry) = generation.entries.get(neighbour.d_id).filter(|_| eligible(&neighbour.d_id)) else {
                continue;
            };
            match disagreement(&features, &entry.features) {
                None => return Found::Hit { key: entry.key.clone(), similarity },
                Some(why) => {
                    refused.get_or_insert(Found::Refused { similarity, why });
                }
            }
        }
        refused.unwrap_or(Found::Nothing)
    }

    /// Turns the entry of `key` into a tombstone (its answer is gone).
    pub fn remove(&self, partition: &str, key: &str) {
        if let Some(partition) = self.partitions.get(partition).map(|p| p.clone()) {
            let mut generation = write(&partition);
            if let Some(id) = generation.by_key.remove(key) {
                generation.kill(id);
            }
        }
    }

    /// Forgets every partition starting with `prefix`.
    pub fn clear(&self, prefix: &str) {
        self.partitions.retain(|name, _| !name.starts_with(prefix));
    }

    /// Tombstones every expired entry; returns how many.
    pub fn expire(&self, now_ms: i64) -> usize {
        let mut expired = 0;
        for partition in self.partitions.iter().map(|p| p.value().clone()).collect::<Vec<_>>() {
            let mut generation = write(&partition);
            let dead: Vec<usize> = generation
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.live && e.expires_at_ms <= now_ms)
                .map(|(id, _)| id)
                .collect();
            for id in dead {
                let key = generation.entries[id].key.clone();
                generation.by_key.remove(&key);
                generation.kill(id);
                expired += 1;
            }
        }
        expired
    }

    /// Rebuilds, from their live entries, the partitions that are mostly tombstones; empty
    /// ones are dropped. Slow (it builds graphs): run it on a blocking thread. Returns how
    /// many partitions were rebuilt.
    pub fn compact(&self) -> usize {
        let mut rebuilt = 0;
        let names: Vec<String> = self.partitions.iter().map(|p| p.key().clone()).collect();
        for name in names {
            let Some(partition) = self.partitions.get(&name).map(|p| p.clone()) else { continue };
            let (snapshot, seen) = {
                let generation = read(&partition);
                if generation.live() == 0 {
                    drop(generation);
                    self.partitions.remove_if(&name, |_, p| read(p).live() == 0);
                    continue;
                }
                if generation.tombstones < REBUILD_MIN_TOMBSTONES || generation.tombstones <= generation.live() {
                    continue;
                }
                let live: Vec<Indexed> = generation.entries.iter().filter(|e| e.live).cloned().collect();
                (live, generation.entries.len())
            };
            // Built without the lock: lookups and inserts go on against the old graph.
            let mut fresh = Generation::new(snapshot.len());
            for entry in snapshot {
                fresh.add(entry);
            }
            // What changed meanwhile: entries added after the snapshot join the new graph,
            // entries removed or replaced since become tombstones in it.
            let mut current = write(&partition);
            for entry in current.entries[seen..].iter().filter(|e| e.live).cloned() {
                fresh.add(entry);
            }
            let gone: Vec<usize> = fresh
                .by_key
                .iter()
                .filter(|(key, id)| {
                    let now = current.by_key.get(*key).and_then(|i| current.entries.get(*i));
                    now.is_none_or(|e| e.expires_at_ms != fresh.entries[**id].expires_at_ms)
                })
                .map(|(_, id)| *id)
                .collect();
            for id in gone {
                let key = fresh.entries[id].key.clone();
                fresh.by_key.remove(&key);
                fresh.kill(id);
            }
            *current = fresh;
            rebuilt += 1;
        }
        rebuilt
    }

    /// Live entries, tombstones and partitions, for the operator tree.
    pub fn counts(&self) -> (usize, usize, usize) {
        let (mut live, mut dead) = (0, 0);
        for partition in self.partitions.iter() {
            let generation = read(partition.value());
            live += generation.live();
            dead += generation.tombstones;
        }
        (live, dead, self.partitions.len())
    }
}

// A panic while holding a partition's lock leaves plain data behind (no invariant spans the
// unwind), so a poisoned lock is used as is rather than taking the cache down with it.
fn read(partition: &RwLock<Generation>) -> std::sync::RwLockReadGuard<'_, Generation> {
    partition.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write(partition: &RwLock<Generation>) -> std::sync::RwLockWriteGuard<'_, Generation> {
    partition.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}
