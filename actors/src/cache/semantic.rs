//! The semantic cache's index: per partition, an HNSW graph (hnsw_rs) over the vectors of
//! cached prompts' last user messages, with what each entry must match beyond similarity (the
//! hash of the rest of its request, its expiry, its guard features).
//!
//! A lookup only ever compares entries of its own context (system prompt, earlier turns,
//! tools, sampling). A context with few entries — every multi-turn conversation — is compared
//! directly; only a context with many goes through the graph, filtered to that context.
//!
//! hnsw_rs cannot delete: a removed or expired entry stays in the graph as a tombstone that
//! searches filter out, and a partition whose tombstones outnumber its live entries is rebuilt
//! from the live ones by the cache's sweep. Graphs are built outside the partition's lock
//! (start-up load, rebuilds) and swapped in with what changed meanwhile, so lookups and
//! inserts never wait for a build. The entries themselves live in sled (`Store::semantic`),
//! so a restart rebuilds every graph from disk.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
};

use dashmap::DashMap;
use hnsw_rs::prelude::{Distance, Hnsw};
use tokaroo_storage::records::SemanticEntry;

use super::guards::{disagreement, Disagreement, PromptFeatures};
use crate::embed::dot;

/// Graph parameters: 16 links per node and a 64-wide beam at build and search keep recall
/// near 1 on 384-dim sentence vectors at 100k entries while a search stays around a
/// millisecond.
const LINKS: usize = 16;
const MAX_LAYERS: usize = 16;
const EF_CONSTRUCTION: usize = 64;
const EF_SEARCH: usize = 64;
/// How many nearest neighbours a lookup considers: the nearest may fail the guards while
/// the next one is the same question.
const CANDIDATES: usize = 8;
/// A context with at most this many entries is compared entry by entry: exact, and cheaper
/// than a filtered graph search, which visits the whole graph when few entries pass.
const DIRECT_MAX: usize = 512;
/// Rebuild a partition once it holds this many tombstones and more than live entries.
const REBUILD_MIN_TOMBSTONES: usize = 64;
/// Entries inserted one by one into an empty graph before the rest go in parallel: hnsw_rs
/// links concurrent first inserts to nothing.
const SERIAL_PREFIX: usize = 256;

/// Cosine distance for unit vectors (1 − dot). hnsw_rs's own `DistDot` asserts the result is
/// not negative, which rounding breaks for a vector against itself; a non-finite product is
/// as far as can be.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        let dot = dot(a, b);
        if dot.is_finite() {
            (1.0 - dot).max(0.0)
        } else {
            2.0
        }
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
    prompt_bytes: usize,
    features: PromptFeatures,
    vector: Vec<f32>,
    expires_at_ms: i64,
    live: bool,
}

impl Indexed {
    fn of(entry: &SemanticEntry) -> Self {
        Self {
            key: entry.key.clone(),
            context: entry.context.clone(),
            prompt_bytes: entry.prompt.len(),
            features: PromptFeatures::of(&entry.prompt),
            vector: entry.vector.clone(),
            expires_at_ms: entry.expires_at_ms,
            live: true,
        }
    }
}

/// One graph and its entries, by the graph's data id (the entry's position).
struct Generation {
    graph: Hnsw<'static, f32, UnitCosine>,
    entries: Vec<Indexed>,
    /// The live entry of each answer key.
    by_key: HashMap<String, usize>,
    /// The entries (live or not) of each context.
    by_context: HashMap<String, Vec<usize>>,
    tombstones: usize,
}

impl Generation {
    fn new(capacity: usize) -> Self {
        Self {
            graph: Hnsw::new(LINKS, capacity.max(16), MAX_LAYERS, EF_CONSTRUCTION, UnitCosine),
            entries: Vec::with_capacity(capacity),
            by_key: HashMap::with_capacity(capacity),
            by_context: HashMap::new(),
            tombstones: 0,
        }
    }

    /// Files an entry without putting it in the graph; returns its id.
    fn file(&mut self, entry: Indexed) -> usize {
        let id = self.entries.len();
        if let Some(old) = self.by_key.insert(entry.key.clone(), id) {
            self.kill(old);
        }
        self.by_context.entry(entry.context.clone()).or_default().push(id);
        self.entries.push(entry);
        id
    }

    fn add(&mut self, entry: Indexed) {
        let id = self.file(entry);
        self.graph.insert((&self.entries[id].vector, id));
    }

    /// Adds many entries at once, building the graph on all cores (start-up and rebuilds).
    fn add_many(&mut self, entries: Vec<Indexed>) {
        let first = self.entries.len();
        for entry in entries {
            self.file(entry);
        }
        let serial = if self.graph.get_nb_point() == 0 { SERIAL_PREFIX } else { 0 };
        let batch: Vec<(&Vec<f32>, usize)> =
            self.entries[first..].iter().enumerate().map(|(i, e)| (&e.vector, first + i)).collect();
        let (one_by_one, together) = batch.split_at(serial.min(batch.len()));
        for (vector, id) in one_by_one {
            self.graph.insert((vector.as_slice(), *id));
        }
        self.graph.parallel_insert(together);
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

    fn eligible(&self, id: usize, context: &str, now_ms: i64) -> bool {
        self.entries.get(id).is_some_and(|e| e.live && e.expires_at_ms > now_ms && e.context == context)
    }

    /// The nearest eligible entries of the probe's context, nearest first, with similarity.
    fn nearest(&self, probe: &Probe, now_ms: i64) -> Vec<(usize, f32)> {
        let Some(ids) = self.by_context.get(&probe.context) else { return Vec::new() };
        let mut found: Vec<(usize, f32)> = if ids.len() <= DIRECT_MAX {
            ids.iter()
                .filter(|id| self.eligible(**id, &probe.context, now_ms))
                .map(|id| (*id, dot(&self.entries[*id].vector, &probe.vector)))
                .collect()
        } else {
            let eligible = |id: &usize| self.eligible(*id, &probe.context, now_ms);
            self.graph
                .search_filter(&probe.vector, CANDIDATES, EF_SEARCH, Some(&eligible))
                .into_iter()
                .filter(|n| eligible(&n.d_id))
                .map(|n| (n.d_id, 1.0 - n.distance))
                .collect()
        };
        found.retain(|(_, similarity)| similarity.is_finite());
        found.sort_by(|a, b| b.1.total_cmp(&a.1));
        found.truncate(CANDIDATES);
        found
    }

    /// Approximate bytes in memory: the entry, its copy in the graph and the graph's links.
    fn bytes_of(entry: &Indexed) -> u64 {
        (entry.prompt_bytes + entry.context.len() + entry.key.len() + entry.vector.len() * 8 + 2 * LINKS * 8 + 512)
            as u64
    }
}

/// Every partition's index, and the embedder whose vectors it holds.
pub struct SemanticIndex {
    embedder: String,
    dims: usize,
    threshold: f32,
    partitions: DashMap<String, Arc<RwLock<Generation>>>,
    /// Held by the one compaction running (a restarted sweep may overlap the last one).
    compacting: Mutex<()>,
}

impl SemanticIndex {
    /// An empty index for vectors of `embedder` (`kind:model:dims`) of length `dims`, serving
    /// entries at least `threshold` similar.
    pub fn new(embedder: String, dims: usize, threshold: f32) -> Self {
        Self { embedder, dims, threshold, partitions: DashMap::new(), compacting: Mutex::new(()) }
    }

    pub fn embedder(&self) -> &str {
        &self.embedder
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Whether a vector belongs in this index: this embedder's length, all finite.
    fn fits(&self, vector: &[f32]) -> bool {
        self.dims > 0 && vector.len() == self.dims && vector.iter().all(|x| x.is_finite())
    }

    fn partition(&self, name: &str) -> Option<Arc<RwLock<Generation>>> {
        self.partitions.get(name).map(|p| p.clone())
    }

    /// Adds an entry (replacing the one of the same answer key). Entries of another embedder
    /// or dimension, or with non-finite values, are ignored: they mean nothing in this space.
    pub fn insert(&self, entry: &SemanticEntry) {
        if entry.embedder != self.embedder || !self.fits(&entry.vector) {
            return;
        }
        let indexed = Indexed::of(entry);
        let partition = self
            .partitions
            .entry(entry.partition.clone())
            .or_insert_with(|| Arc::new(RwLock::new(Generation::new(0))))
            .clone();
        write(&partition).add(indexed);
    }

    /// Adds many entries (at start, from disk). Each partition's graph is built on all cores
    /// outside its lock, then swapped in; an entry already indexed (stored since the start)
    /// is newer than its copy on disk and stays.
    pub fn insert_many(&self, entries: Vec<SemanticEntry>) {
        let mut by_partition: HashMap<String, Vec<Indexed>> = HashMap::new();
        for entry in entries {
            if entry.embedder == self.embedder && self.fits(&entry.vector) {
                by_partition.entry(entry.partition.clone()).or_default().push(Indexed::of(&entry));
            }
        }
        for (name, mut batch) in by_partition {
            let partition =
                self.partitions.entry(name).or_insert_with(|| Arc::new(RwLock::new(Generation::new(0)))).clone();
            {
                let current = read(&partition);
                batch.retain(|entry| !current.by_key.contains_key(&entry.key));
            }
            let mut fresh = Generation::new(batch.len());
            fresh.add_many(batch);
            let mut current = write(&partition);
            for entry in current.entries.iter().filter(|e| e.live).cloned() {
                fresh.add(entry);
            }
            let old = std::mem::replace(&mut *current, fresh);
            drop(current);
            // Dropping a graph is work too: not under the lock.
            drop(old);
        }
    }

    /// The most similar live entry with the same context that the guards accept.
    pub fn search(&self, partition: &str, probe: &Probe, now_ms: i64) -> Found {
        if !self.fits(&probe.vector) {
            return Found::Nothing;
        }
        let Some(partition) = self.partition(partition) else { return Found::Nothing };
        let features = PromptFeatures::of(&probe.prompt);
        let generation = read(&partition);
        let mut refused = None;
        for (id, similarity) in generation.nearest(probe, now_ms) {
            if similarity < self.threshold {
                break;
            }
            let entry = &generation.entries[id];
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
        if let Some(partition) = self.partition(partition) {
            let mut generation = write(&partition);
            if let Some(id) = generation.by_key.remove(key) {
                generation.kill(id);
            }
        }
    }

    /// Approximate bytes the live entry of `key` takes in memory (counted against the cache's
    /// size bound).
    pub fn entry_bytes(&self, partition: &str, key: &str) -> Option<u64> {
        let partition = self.partition(partition)?;
        let generation = read(&partition);
        let id = *generation.by_key.get(key)?;
        generation.entries.get(id).map(Generation::bytes_of)
    }

    /// Forgets every partition starting with `prefix`.
    pub fn clear(&self, prefix: &str) {
        let cleared: Vec<_> =
            self.partitions.iter().filter(|p| p.key().starts_with(prefix)).map(|p| p.key().clone()).collect();
        // Removed from the map first, dropped after: graphs are dropped outside the map's shards.
        let graphs: Vec<_> = cleared.iter().filter_map(|name| self.partitions.remove(name)).collect();
        drop(graphs);
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
        let Ok(_only_one) = self.compacting.try_lock() else { return 0 };
        let mut rebuilt = 0;
        let names: Vec<String> = self.partitions.iter().map(|p| p.key().clone()).collect();
        for name in names {
            let Some(partition) = self.partition(&name) else { continue };
            let (snapshot, seen) = {
                let generation = read(&partition);
                if generation.live() == 0 {
                    drop(generation);
                    let emptied = self.partitions.remove_if(&name, |_, p| read(p).live() == 0);
                    drop(emptied);
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
            fresh.add_many(snapshot);
            // What changed meanwhile: entries added after the snapshot join the new graph,
            // entries removed or replaced since become tombstones in it.
            let mut current = write(&partition);
            let added: Vec<Indexed> =
                current.entries.get(seen..).unwrap_or_default().iter().filter(|e| e.live).cloned().collect();
            for entry in added {
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
            let old = std::mem::replace(&mut *current, fresh);
            drop(current);
            drop(old);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::LocalModel;

    const DIMS: usize = 4;

    fn unit(v: [f32; DIMS]) -> Vec<f32> {
        let mut v = v.to_vec();
        crate::embed::l2_normalise(&mut v);
        v
    }

    fn entry(partition: &str, key: &str, prompt: &str, vector: Vec<f32>, expires_at_ms: i64) -> SemanticEntry {
        SemanticEntry {
            partition: partition.into(),
            key: key.into(),
            context: "ctx".into(),
            prompt: prompt.into(),
            embedder: "test:model:4".into(),
            vector,
            created_at_ms: 0,
            expires_at_ms,
        }
    }

    fn probe(prompt: &str, vector: Vec<f32>) -> Probe {
        Probe { context: "ctx".into(), prompt: prompt.into(), vector }
    }

    #[test]
    fn a_lookup_sees_only_its_partition_its_context_live_entries_and_its_embedder() {
        let index = SemanticIndex::new("test:model:4".into(), DIMS, 0.9);
        let v = unit([1.0, 0.2, 0.0, 0.0]);
        index.insert(&entry("ws:a/", "k1", "How do I reset my password?", v.clone(), 1_000));
        let ask = probe("How do I reset my password?", v.clone());
        assert!(matches!(index.search("ws:a/", &ask, 10), Found::Hit { ref key, .. } if key == "k1"));
        assert_eq!(index.search("ws:b/", &ask, 10), Found::Nothing, "another partition");
        let other_context = Probe { context: "other".into(), ..ask.clone() };
        assert_eq!(index.search("ws:a/", &other_context, 10), Found::Nothing, "another system prompt or tools");
        assert_eq!(index.search("ws:a/", &ask, 1_000), Found::Nothing, "expired");
        let far = probe("How do I reset my password?", unit([0.0, 0.0, 1.0, 0.0]));
        assert_eq!(index.search("ws:a/", &far, 10), Found::Nothing, "below the threshold");
        // Vectors of another embedder or length are never indexed.
        index.insert(&SemanticEntry { embedder: "other:model:4".into(), ..entry("ws:c/", "k", "x", v.clone(), 1_000) });
        index.insert(&entry("ws:c/", "k", "x", vec![1.0; 3], 1_000));
        index.insert(&entry("ws:c/", "k", "x", vec![f32::NAN, 0.0, 0.0, 0.0], 1_000));
        assert_eq!(index.counts(), (1, 0, 1));
        assert_eq!(index.search("ws:a/", &probe("x", vec![1.0; 3]), 10), Found::Nothing);
        assert_eq!(index.search("ws:a/", &probe("x", vec![f32::NAN; 4]), 10), Found::Nothing);
        // Loading from disk next to what was stored since: the stored entry is newer and stays.
        let newer = entry("ws:a/", "k1", "How do I reset my password?", v.clone(), 9_000);
        index.insert(&newer);
        index.insert_many(vec![entry("ws:a/", "k1", "How do I reset my password?", v.clone(), 1_000)]);
        assert_eq!(index.counts(), (1, 0, 1), "one live entry, rebuilt");
        assert!(matches!(index.search("ws:a/", &ask, 5_000), Found::Hit { .. }), "the newer expiry is kept");
    }

    #[test]
    fn removed_entries_are_tombstones_until_a_compaction_rebuilds_the_graph() {
        let index = SemanticIndex::new("test:model:4".into(), DIMS, 0.5);
        let n = REBUILD_MIN_TOMBSTONES * 3;
        for i in 0..n {
            let v = unit([1.0, i as f32 / n as f32, 0.1, 0.0]);
            index.insert(&entry("ws:a/", &format!("k{i}"), "What is a mutex?", v, 1_000));
        }
        // Replacing a key leaves one live entry and one tombstone.
        index.insert(&entry("ws:a/", "k0", "What is a mutex?", unit([1.0, 0.0, 0.1, 0.0]), 1_000));
        assert_eq!(index.counts(), (n, 1, 1));
        for i in 0..(n - 10) {
            index.remove("ws:a/", &format!("k{i}"));
        }
        assert_eq!(index.counts(), (10, n - 10 + 1, 1));
        let ask = probe("What is a mutex?", unit([1.0, 0.0, 0.1, 0.0]));
        match index.search("ws:a/", &ask, 10) {
            Found::Hit { key, .. } => assert!(key[1..].parse::<usize>().unwrap() >= n - 10, "{key} was removed"),
            other => panic!("{other:?}"),
        }
        assert_eq!(index.compact(), 1);
        assert_eq!(index.counts(), (10, 0, 1), "the rebuilt graph holds only the live entries");
        assert!(matches!(index.search("ws:a/", &ask, 10), Found::Hit { .. }));
        // Expiry tombstones; an empty partition is dropped at the next compaction.
        assert_eq!(index.expire(1_000), 10);
        assert_eq!(index.search("ws:a/", &ask, 10), Found::Nothing);
        index.compact();
        assert_eq!(index.counts(), (0, 0, 0));
        index.insert(&entry("ws:a/", "k1", "What is a mutex?", unit([1.0, 0.0, 0.1, 0.0]), 5_000));
        index.clear("ws:a/");
        assert_eq!(index.counts(), (0, 0, 0));
    }

    /// One labelled pair: `a` is cached, `b` is asked.
    #[derive(serde::Deserialize)]
    struct Pair {
        id: String,
        a: String,
        b: String,
        label: String,
        category: String,
        #[serde(default)]
        system_a: Option<String>,
        #[serde(default)]
        system_b: Option<String>,
        #[serde(default)]
        tools_a: Vec<String>,
        #[serde(default)]
        tools_b: Vec<String>,
    }

    /// Per pair: the pair, its cosine, and the similarity the guards let through (`None`
    /// when they refused), measured through a `SemanticIndex` with a threshold of 0 so one
    /// pass gives the whole curve. Each pair has a partition of its own.
    async fn measure(jsonl: &str) -> Vec<(Pair, f32, Option<f32>)> {
        let pairs: Vec<Pair> =
            jsonl.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect();
        let model = crate::embed::neural::Neural::load(&crate::test_support::test_model_dir().await).unwrap();
        let texts: Vec<String> = pairs.iter().flat_map(|p| [p.a.clone(), p.b.clone()]).collect();
        let vectors: Vec<Vec<f32>> = texts.chunks(32).flat_map(|batch| model.embed_batch(batch).unwrap()).collect();
        let embedder = model.id().to_string();
        let index = SemanticIndex::new(embedder.clone(), model.id().dims, f32::MIN_POSITIVE);
        let context = |system: &Option<String>, tools: &[String]| format!("{system:?}{tools:?}");
        let mut outcomes = Vec::new();
        for (i, pair) in pairs.into_iter().enumerate() {
            index.insert(&SemanticEntry {
                partition: pair.id.clone(),
                key: pair.id.clone(),
                context: context(&pair.system_a, &pair.tools_a),
                prompt: pair.a.clone(),
                embedder: embedder.clone(),
                vector: vectors[2 * i].clone(),
                created_at_ms: 0,
                expires_at_ms: i64::MAX,
            });
            let asked = Probe {
                context: context(&pair.system_b, &pair.tools_b),
                prompt: pair.b.clone(),
                vector: vectors[2 * i + 1].clone(),
            };
            let cosine = crate::embed::cosine(&vectors[2 * i], &vectors[2 * i + 1]);
            let passed = match index.search(&pair.id, &asked, 0) {
                Found::Hit { similarity, .. } => Some(similarity),
                _ => None,
            };
            outcomes.push((pair, cosine, passed));
        }
        outcomes
    }

    /// (paraphrases, near misses, paraphrases served, near misses served) at threshold `t`.
    fn served_at(outcomes: &[(Pair, f32, Option<f32>)], t: f32) -> (usize, usize, usize, usize) {
        let count = |label: &str| outcomes.iter().filter(|(p, ..)| p.label == label).count();
        let served =
            |label: &str| outcomes.iter().filter(|(p, _, s)| p.label == label && s.is_some_and(|s| s >= t)).count();
        (count("hit"), count("miss"), served("hit"), served("miss"))
    }

    fn report(name: &str, outcomes: &[(Pair, f32, Option<f32>)], t: f32) -> (f32, f32) {
        let (paraphrases, near_misses, hits, false_hits) = served_at(outcomes, t);
        for (pair, cosine, passed) in outcomes {
            if pair.label == "miss" && passed.is_some_and(|s| s >= t) {
                println!(
                    "{name}: FALSE HIT {} ({}) cos {cosine:.3}: {:?} / {:?}",
                    pair.id, pair.category, pair.a, pair.b
                );
            }
        }
        let precision = hits as f32 / (hits + false_hits).max(1) as f32;
        let recall = hits as f32 / paraphrases as f32;
        let false_hit_rate = false_hits as f32 / near_misses as f32;
        println!(
            "{name} at {t:.2}: precision {:.1}%, recall {:.1}% ({hits}/{paraphrases}), false hits \
             {false_hits}/{near_misses} ({:.2}%)",
            100.0 * precision,
            100.0 * recall,
            100.0 * false_hit_rate
        );
        (false_hit_rate, recall)
    }

    /// The proof the issue asks for: on the labelled pairs (paraphrases that should hit, near
    /// misses that must not), the semantic cache with the real model, its guards and the
    /// default threshold serves at most 1% of near misses and at least 70% of paraphrases.
    /// Prints the curve the threshold was chosen from (`--nocapture`).
    ///
    /// The guards were written while looking at this set, so it also reports a held-out set
    /// written afterwards by someone who had not seen them (`semantic_cache_holdout.jsonl`):
    /// what to expect on prompts nobody tuned for.
    #[tokio::test]
    async fn labelled_pairs_false_hits_at_most_one_percent_and_paraphrase_hits_at_least_seventy() {
        let outcomes = measure(include_str!("../../../tests/data/semantic_cache_pairs.jsonl")).await;
        assert!(outcomes.len() >= 400, "{} pairs", outcomes.len());
        println!("threshold  paraphrases hit  near misses served (guards on)  | similarity alone: hit, false");
        for step in 0..=30 {
            let t = 0.65 + step as f32 * 0.01;
            let (paraphrases, near_misses, hits, false_hits) = served_at(&outcomes, t);
            let alone = |label: &str| outcomes.iter().filter(|(p, c, _)| p.label == label && *c >= t).count();
            println!(
                "{t:.2}       {:>5.1}% ({hits:>3}/{paraphrases})  {:>4.1}% ({false_hits:>2}/{near_misses})  | {:>5.1}%  \
                 {:>5.1}%",
                100.0 * hits as f32 / paraphrases as f32,
                100.0 * false_hits as f32 / near_misses as f32,
                100.0 * alone("hit") as f32 / paraphrases as f32,
                100.0 * alone("miss") as f32 / near_misses as f32,
            );
        }
        let t = crate::cache::DEFAULT_SEMANTIC_THRESHOLD;
        let (false_hit_rate, recall) = report("labelled", &outcomes, t);
        let holdout = measure(include_str!("../../../tests/data/semantic_cache_holdout.jsonl")).await;
        let (holdout_false, holdout_recall) = report("held-out", &holdout, t);
        assert!(false_hit_rate <= 0.01, "false hits {:.2}%", 100.0 * false_hit_rate);
        assert!(recall >= 0.70, "paraphrases hit {:.1}%", 100.0 * recall);
        // Looser on prompts nobody tuned for, but still a cache that is mostly right.
        assert!(holdout_false <= 0.05 && holdout_recall >= 0.50, "held-out: {holdout_false} false, {holdout_recall}");
    }
}
