//! The knowledge base's retrieval on LoCoMo, the long-conversation memory benchmark
//! (`../shared/bench-data/locomo/`, seven conversations): every turn becomes a memory note
//! through the engine (the real indexer, text index, vectors and context pack), each
//! conversation in a workspace of its own, and every question (category 5 excluded) asks a
//! pack of its own conversation. Prints recall@5, recall@10 and nDCG@10 for BM25 alone,
//! vectors alone and the fused ranking.
//!
//! Run: `cargo bench --bench locomo` (`LOCOMO_DIR` points elsewhere). A note is the turn as
//! `speaker: text [image: caption]`, with `metadata` `thread` (the session), `position`,
//! `author` (the speaker), `dia_id`; a question is asked as written.
#![allow(clippy::disallowed_methods)]

use std::{collections::HashMap, path::PathBuf};

use serde_json::{json, Value};
use tokaroo_actors::knowledge::{pack::RankWeights, rank::FusionParams, KbScope, NoteInput};

struct Question {
    text: String,
    evidence: Vec<String>,
}

fn metrics(ranked: &[String], evidence: &[String]) -> (f64, f64, f64) {
    let relevant = |k: usize| ranked.iter().take(k).filter(|id| evidence.contains(id)).count() as f64;
    let dcg: f64 = ranked
        .iter()
        .take(10)
        .enumerate()
        .filter(|(_, id)| evidence.contains(id))
        .map(|(i, _)| 1.0 / (i as f64 + 2.0).log2())
        .sum();
    let ideal: f64 = (0..evidence.len().min(10)).map(|i| 1.0 / (i as f64 + 2.0).log2()).sum();
    let n = evidence.len() as f64;
    (relevant(5) / n, relevant(10) / n, if ideal > 0.0 { dcg / ideal } else { 0.0 })
}

fn main() {
    let dir = std::env::var_os("LOCOMO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/bench-data/locomo"));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async move {
        let model_dir = tokaroo_actors::test_support::test_model_dir().await;
        let data = tempfile::tempdir().unwrap();
        let config = tokaroo_actors::EngineConfig {
            embedder: tokaroo_actors::EmbedderSettings::Neural { model_dir: Some(model_dir) },
            ..tokaroo_actors::EngineConfig::default()
        };
        let engine =
            tokaroo_actors::Engine::start(tokaroo_actors::Store::open(data.path()).unwrap(), config).await.unwrap();
        let operator = engine.directory().bootstrap().await.unwrap().unwrap().account_id;
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let variants = [
            (
                "BM25 alone",
                FusionParams {
                    lexical_weight: 1.0,
                    neighbour_weight: 0.0,
                    thread_weight: 0.0,
                    author_boost: 0.0,
                    ..FusionParams::default()
                },
            ),
            (
                "vectors alone",
                FusionParams {
                    lexical_weight: 0.0,
                    neighbour_weight: 0.0,
                    thread_weight: 0.0,
                    author_boost: 0.0,
                    ..FusionParams::default()
                },
            ),
            ("fused (default)", FusionParams::default()),
        ];
        let mut totals = vec![(0.0, 0.0, 0.0); variants.len()];
        let mut questions_asked = 0usize;
        let started = std::time::Instant::now();
        let mut notes_written = 0usize;
        for file in &files {
            let conversation: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
            let name = file.file_stem().unwrap().to_string_lossy().to_string();
            let slug = format!("locomo-{name}");
            let new = tokaroo_actors::NewWorkspace {
                slug: slug.clone(),
                name: slug.clone(),
                metadata: Default::default(),
                monthly_budget_usd: None,
            };
            engine.directory().create_workspace(&operator, new).await.unwrap();
            let scope = KbScope { account_id: operator.clone(), workspace: slug };
            let mut inputs = Vec::new();
            for session in 1.. {
                let Some(turns) = conversation.get(format!("session_{session}")).and_then(Value::as_array) else {
                    break;
                };
                for (position, turn) in turns.iter().enumerate() {
                    let (speaker, text) = (turn["speaker"].as_str().unwrap_or(""), turn["text"].as_str().unwrap_or(""));
                    let mut content = format!("{speaker}: {text}");
                    if let Some(caption) = turn["blip_caption"].as_str() {
                        content.push_str(&format!(" [image: {caption}]"));
                    }
                    let metadata = json!({"thread": format!("session_{session}"), "position": position,
                                          "author": speaker, "dia_id": turn["dia_id"]});
                    inputs.push(NoteInput {
                        content,
                        metadata: metadata.as_object().unwrap().clone(),
                        ..NoteInput::default()
                    });
                }
            }
            // Written concurrently, so the indexer batches them as it would a busy app's.
            let mut ids: HashMap<String, String> = HashMap::new();
            for batch in inputs.chunks(64) {
                let writes = batch.iter().map(|input| engine.knowledge().upsert_note(&scope, input.clone()));
                for written in futures_util::future::join_all(writes).await {
                    let (note, _) = written.unwrap();
                    ids.insert(note.id.clone(), note.metadata["dia_id"].as_str().unwrap_or("").to_owned());
                    notes_written += 1;
                }
            }
            let known: std::collections::HashSet<&String> = ids.values().collect();
            let questions: Vec<Question> = conversation["qa"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|q| q["category"].as_i64() != Some(5))
                .filter_map(|q| {
                    let evidence: Vec<String> = q["evidence"]
                        .as_array()?
                        .iter()
                        .filter_map(|e| e.as_str().map(str::to_owned))
                        .filter(|e| known.contains(e))
                        .collect();
                    let text = q["question"].as_str()?.to_owned();
                    (!evidence.is_empty()).then_some(Question { text, evidence })
                })
                .collect();
            for question in &questions {
                for (i, (_, fusion)) in variants.iter().enumerate() {
                    let weights = RankWeights { fusion: *fusion, meta: 0.0, recency: 0.0, ..RankWeights::default() };
                    let pack = engine
                        .knowledge()
                        .context_pack_with(&scope, &question.text, 100_000, false, weights)
                        .await
                        .unwrap();
                    let ranked: Vec<String> = pack
                        .items
                        .iter()
                        .take(10)
                        .map(|item| ids.get(&item.note.id).cloned().unwrap_or_default())
                        .collect();
                    let (r5, r10, ndcg) = metrics(&ranked, &question.evidence);
                    totals[i].0 += r5;
                    totals[i].1 += r10;
                    totals[i].2 += ndcg;
                }
            }
            questions_asked += questions.len();
            println!("{name}: {} notes, {} questions", ids.len(), questions.len());
        }
        println!(
            "\n{} conversations, {notes_written} notes, {questions_asked} questions, {:.1} s\n",
            files.len(),
            started.elapsed().as_secs_f64()
        );
        println!("{:<18} {:>9} {:>10} {:>9}", "ranking", "recall@5", "recall@10", "nDCG@10");
        for ((name, _), (r5, r10, ndcg)) in variants.iter().zip(&totals) {
            let n = questions_asked.max(1) as f64;
            println!("{name:<18} {:>9.3} {:>10.3} {:>9.3}", r5 / n, r10 / n, ndcg / n);
        }
        engine.shutdown().await.unwrap();
    });
}
