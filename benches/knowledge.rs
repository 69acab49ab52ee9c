//! The knowledge base at scale. Run: `cargo bench --bench knowledge`.
//!
//! 1. **Context packs over 100,000 notes and 10,000 source chunks** in one workspace: the
//!    records, their vectors and the text index are written straight into a data directory,
//!    then a real engine starts on it (recovering both indexes, building the HNSW graphs) and
//!    answers packs with `include_sources`, each query embedded by both built-in models.
//!    Prints p50/p95/p99. The notes' vectors are real: 2,048 texts embedded by MiniLM, each
//!    of the 100,000 a mix of two of them plus noise (embedding 100,000 texts would take the
//!    bench hours on two cores; random vectors would have none of real text's structure,
//!    which is what a graph search relies on). The chunks' vectors are their own texts'
//!    vectors under the static model.
//! 2. **Ingestion**: Markdown sources ingested through the engine (extracted, chunked,
//!    embedded, written by the indexer, answered: searchable by text and by vector), in chunks
//!    per second; then how long until every chunk's vector is in the index (at once with the
//!    static chunk embedder; `KB_BENCH_CHUNK_EMBEDDER=main` measures MiniLM instead, whose
//!    vectors the vectoriser makes in the background).
//!
//! `KB_BENCH_NOTES` and `KB_BENCH_CHUNKS` change the scale; `KB_BENCH_PACKS` the packs timed.
#![allow(clippy::disallowed_methods)] // a bench spawns its own tasks

use std::time::{Duration, Instant};

use serde_json::Map;
use tokaroo_actors::embed::LocalModel;
use tokaroo_actors::knowledge::{
    sources::ingest::{DocumentInput, SourceInput},
    vectors::GRAPH_MIN,
    KbScope,
};
use tokaroo_storage::{
    knowledge::{KnowledgeVector, MemoryNote, Source, SourceChunk, SourceDocument},
    text_index::{TextDoc, TextIndex},
    Store,
};

const ACCOUNT: &str = "acct_bench";
const WORKSPACE: &str = "bench";
const DIMS: usize = 384;
const EMBEDDER: &str = "neural:all-MiniLM-L6-v2:384";
/// What the chunks' vectors are made with.
type ChunkModel = tokaroo_actors::embed::static_model::StaticModel;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small deterministic generator (xorshift), so runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn uniform(&mut self) -> f32 {
        (self.next() % 2000) as f32 / 1000.0 - 1.0
    }

    /// A unit vector near the real embeddings in `base`: one of them, a third of another,
    /// and a little noise.
    fn vector_near(&mut self, base: &[Vec<f32>]) -> Vec<f32> {
        let a = &base[(self.next() % base.len() as u64) as usize];
        let b = &base[(self.next() % base.len() as u64) as usize];
        let mut v: Vec<f32> = (0..DIMS).map(|i| a[i] + 0.35 * b[i] + 0.02 * self.uniform()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }

    /// A sentence drawn from a vocabulary with a long tail, as real text has.
    fn sentence(&mut self, words: usize) -> String {
        const COMMON: [&str; 24] = [
            "the",
            "customer",
            "deploy",
            "invoice",
            "team",
            "project",
            "release",
            "meeting",
            "budget",
            "server",
            "database",
            "migration",
            "contract",
            "policy",
            "refund",
            "account",
            "report",
            "schedule",
            "office",
            "laptop",
            "vendor",
            "audit",
            "launch",
            "roadmap",
        ];
        (0..words)
            .map(|_| {
                let r = self.next();
                if r.is_multiple_of(3) {
                    format!("term{}", r % 50_000)
                } else {
                    COMMON[(r % COMMON.len() as u64) as usize].to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Writes the records, vectors and text index of `notes` notes and `chunks` chunks.
fn populate(dir: &std::path::Path, notes: usize, chunks: usize, base: &[Vec<f32>], chunk_model: &ChunkModel) {
    let chunk_embedder = chunk_model.id().to_string();
    let store = Store::open(dir).unwrap();
    let text = TextIndex::open(&store.text_index_dir()).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut seq = 0u64;
    let mut docs = Vec::with_capacity(10_000);
    let flush_docs = |docs: &mut Vec<TextDoc>| {
        text.apply(docs, &[]).unwrap();
        docs.clear();
    };
    for i in 0..notes {
        seq += 1;
        let note = MemoryNote {
            id: format!("note-{i:06}"),
            account_id: ACCOUNT.into(),
            workspace: WORKSPACE.into(),
            title: String::new(),
            content: rng.sentence(18),
            kind: "fact".into(),
            tags: Vec::new(),
            importance: 0.5,
            confidence: 1.0,
            metadata: Map::new(),
            status: "active".into(),
            external_source: None,
            external_id: None,
            created_at_ms: 1_700_000_000_000,
            updated_at_ms: 1_700_000_000_000,
            seq,
        };
        let key = format!("note:{}", note.id);
        store.notes.insert(&(ACCOUNT, note.id.as_str()), &note).unwrap();
        let vector = KnowledgeVector { embedder: EMBEDDER.into(), vector: rng.vector_near(base), seq };
        store.knowledge_vectors.insert(&(ACCOUNT, key.as_str()), &vector).unwrap();
        docs.push(TextDoc {
            key,
            account: ACCOUNT.into(),
            workspace: WORKSPACE.into(),
            kind: "note".into(),
            text: note.content,
        });
        if docs.len() == 10_000 {
            flush_docs(&mut docs);
        }
    }
    let per_document = 50;
    let documents = chunks.div_ceil(per_document);
    for d in 0..documents {
        let (source_id, document_id) = (format!("src_{d}"), format!("doc_{d}"));
        let count = per_document.min(chunks - d * per_document);
        seq += 1;
        for ordinal in 0..count as u32 {
            let chunk = SourceChunk {
                id: SourceChunk::id_for(&document_id, ordinal),
                account_id: ACCOUNT.into(),
                workspace: WORKSPACE.into(),
                source_id: source_id.clone(),
                document_id: document_id.clone(),
                ordinal,
                text: rng.sentence(250),
                tokens: 300,
                section: vec![format!("Section {ordinal}")],
                pages: None,
                seq,
            };
            let key = format!("chunk:{}", chunk.id);
            store.source_chunks.insert(&(ACCOUNT, document_id.as_str(), u64::from(ordinal)), &chunk).unwrap();
            let vector = chunk_model.embed_batch(std::slice::from_ref(&chunk.text)).unwrap().remove(0);
            let vector = KnowledgeVector { embedder: chunk_embedder.clone(), vector, seq };
            store.knowledge_vectors.insert(&(ACCOUNT, key.as_str()), &vector).unwrap();
            docs.push(TextDoc {
                key,
                account: ACCOUNT.into(),
                workspace: WORKSPACE.into(),
                kind: "chunk".into(),
                text: chunk.text,
            });
            if docs.len() == 10_000 {
                flush_docs(&mut docs);
            }
        }
        let document = SourceDocument {
            id: document_id.clone(),
            account_id: ACCOUNT.into(),
            workspace: WORKSPACE.into(),
            source_id: source_id.clone(),
            title: format!("Document {d}"),
            kind: "markdown".into(),
            url: None,
            bytes: 0,
            chunk_count: count as u32,
            pages: None,
            created_at_ms: 0,
        };
        store.source_documents.insert(&(ACCOUNT, document_id.as_str()), &document).unwrap();
        let source = Source {
            id: source_id.clone(),
            account_id: ACCOUNT.into(),
            workspace: WORKSPACE.into(),
            name: format!("Source {d}"),
            url: None,
            metadata: Map::new(),
            external_source: None,
            external_id: None,
            documents: vec![document_id],
            chunk_count: count as u32,
            bytes: 0,
            created_at_ms: 0,
            updated_at_ms: 0,
            seq,
        };
        store.sources.insert(&(ACCOUNT, source_id.as_str()), &source).unwrap();
    }
    flush_docs(&mut docs);
    text.commit(seq).unwrap();
    store.raise_kb_seq(seq).unwrap();
    store.flush_blocking().unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let notes = env_usize("KB_BENCH_NOTES", 100_000);
    let chunks = env_usize("KB_BENCH_CHUNKS", 10_000);
    let packs = env_usize("KB_BENCH_PACKS", 200);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let model_dir = tokaroo_actors::test_support::test_model_dir().await;
        let static_dir = tokaroo_actors::test_support::test_static_model_dir().await;
        let data = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let dir = data.path().to_owned();
        let (model, chunk_model) = (model_dir.clone(), static_dir.clone());
        tokio::task::spawn_blocking(move || {
            let chunk_model = ChunkModel::load(&chunk_model).expect("the pinned static model loads");
            let model = tokaroo_actors::embed::neural::Neural::load(&model).expect("the pinned model loads");
            let mut rng = Rng(7);
            let texts: Vec<String> = (0..2048).map(|_| rng.sentence(14)).collect();
            let mut base = Vec::with_capacity(texts.len());
            for batch in texts.chunks(32) {
                base.extend(model.embed_batch(batch).unwrap());
            }
            populate(&dir, notes, chunks, &base, &chunk_model)
        })
        .await
        .unwrap();
        println!("populated {notes} notes and {chunks} chunks in {:.1} s", started.elapsed().as_secs_f64());

        let main_for_chunks = std::env::var("KB_BENCH_CHUNK_EMBEDDER").is_ok_and(|v| v == "main");
        let config = tokaroo_actors::EngineConfig {
            embedder: tokaroo_actors::EmbedderSettings::Neural { model_dir: Some(model_dir) },
            chunk_embedder: if main_for_chunks {
                tokaroo_actors::embed::ChunkEmbedderSettings::Main
            } else {
                tokaroo_actors::embed::ChunkEmbedderSettings::Static { model_dir: Some(static_dir) }
            },
            ..tokaroo_actors::EngineConfig::default()
        };
        let started = Instant::now();
        let engine =
            tokaroo_actors::Engine::start(tokaroo_actors::Store::open(data.path()).unwrap(), config).await.unwrap();
        let scope = KbScope { account_id: ACCOUNT.into(), workspace: WORKSPACE.into() };
        let knowledge = engine.knowledge();
        // The first pack waits for the indexer's recovery (the vectors loaded into memory).
        let first = knowledge.context_pack(&scope, "warm up", 2000, true).await.unwrap();
        println!(
            "engine started and recovered in {:.1} s (first pack: {} candidates)",
            started.elapsed().as_secs_f64(),
            first.candidates
        );
        // Sets this large are searched through HNSW graphs, built in the background at start.
        let expected_graphs = usize::from(notes >= GRAPH_MIN) + usize::from(chunks >= GRAPH_MIN);
        while knowledge.vector_index().1 < expected_graphs {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "vector graphs built {:.1} s after start ({} vectors)",
            started.elapsed().as_secs_f64(),
            knowledge.vector_index().0
        );
        let mut rng = Rng(42);
        for _ in 0..10 {
            knowledge.context_pack(&scope, &rng.sentence(8), 2000, true).await.unwrap();
        }
        let mut times = Vec::with_capacity(packs);
        let mut used = 0u64;
        for _ in 0..packs {
            let query = format!("What did we decide about the {}?", rng.sentence(5));
            let t = Instant::now();
            let pack = knowledge.context_pack(&scope, &query, 2000, true).await.unwrap();
            times.push(t.elapsed());
            used += u64::from(pack.used_tokens);
        }
        times.sort();
        println!(
            "context pack over {notes} notes + {chunks} chunks (include_sources, 2000-token budget, {packs} packs): \
             p50 {:.2} ms  p95 {:.2} ms  p99 {:.2} ms  (mean {} tokens used)",
            percentile(&times, 0.50).as_secs_f64() * 1e3,
            percentile(&times, 0.95).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            used / packs as u64,
        );

        // Ingestion through the engine: Markdown documents of many sections.
        let mut total_chunks = 0usize;
        let vectors_before = knowledge.vector_index().0;
        let t = Instant::now();
        for s in 0..env_usize("KB_BENCH_SOURCES", 20) {
            let mut markdown = format!("# Handbook {s}\n\n");
            for section in 0..60 {
                markdown.push_str(&format!(
                    "## Topic {section}\n\n{}.\n\n{}.\n\n",
                    rng.sentence(120),
                    rng.sentence(120)
                ));
            }
            let input = SourceInput {
                name: Some(format!("Handbook {s}")),
                documents: vec![DocumentInput {
                    content: markdown.into_bytes(),
                    content_type: Some("text/markdown".into()),
                    ..DocumentInput::default()
                }],
                ..SourceInput::default()
            };
            let ingested = knowledge.ingest_source(&scope, input).await.unwrap();
            total_chunks += ingested.source.chunk_count as usize;
        }
        let elapsed = t.elapsed().as_secs_f64().max(1e-9);
        println!(
            "ingestion: {total_chunks} chunks in {elapsed:.1} s = {:.0} chunks/s (extracted, chunked, {}written, \
             searchable by text, answered)",
            total_chunks as f64 / elapsed,
            if main_for_chunks { "" } else { "embedded by the static model, " }
        );
        if total_chunks > 0 {
            while knowledge.vector_index().0 < vectors_before + total_chunks {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let elapsed = t.elapsed().as_secs_f64();
            println!(
                "their vectors ({}) in the index: all {total_chunks} in {elapsed:.1} s = {:.0} chunks/s",
                if main_for_chunks { "MiniLM, in the background" } else { "the static model, at ingestion" },
                total_chunks as f64 / elapsed
            );
        }
    });
}
