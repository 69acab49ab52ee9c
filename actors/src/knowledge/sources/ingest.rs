//! Ingesting, reading, deleting and searching sources.
//!
//! Ingestion does its heavy work away from the indexer (shared by every tenant): each
//! document's bytes are extracted (`extract.rs`) and chunked (`chunk.rs`) on a blocking
//! thread, and the chunks embedded there by the static chunk embedder; the indexer writes the
//! records and vectors and commits the text index, and the source is answered, searchable by
//! text and by meaning. With MiniLM as the chunk embedder (`chunk_embedder = "main"`) the
//! source is answered searchable by text, and the vectoriser (`../vectoriser.rs`) embeds its
//! chunks in the background. Re-ingesting a source with the same
//! `external_source`/`external_id` replaces its documents and chunks in one transaction.

use serde_json::{Map, Value};
use tokaroo_storage::knowledge::{Source, SourceChunk, SourceDocument};

use super::{
    chunk::{chunk, short_title, ChunkOptions},
    extract::{extract, ExtractError, Limits, SourceKind},
};
use crate::{
    error::EngineError,
    knowledge::{
        check_common, check_short,
        indexer::{KbWrite, Written, CHUNK},
        rank::{self, Candidate},
        KbScope, Knowledge,
    },
};

/// Documents per source, and chunks per source.
pub const MAX_DOCUMENTS: usize = 100;
pub const MAX_CHUNKS_PER_SOURCE: usize = 10_000;
/// Chunks one account's sources may hold together.
pub const MAX_CHUNKS_PER_ACCOUNT: u64 = 200_000;
const MAX_URL_CHARS: usize = 2048;
const MAX_QUERY_CHARS: usize = 8000;
/// Candidates per retriever in a search, and when narrowed to some sources.
const CANDIDATES: usize = 100;
const FILTERED_CANDIDATES: usize = 1000;
/// Sources one account may hold.
pub const MAX_SOURCES_PER_ACCOUNT: usize = 10_000;

/// One file or text of a source.
#[derive(Debug, Clone, Default)]
pub struct DocumentInput {
    pub title: Option<String>,
    pub content: Vec<u8>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct SourceInput {
    pub name: Option<String>,
    pub url: Option<String>,
    pub metadata: Map<String, Value>,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
    pub documents: Vec<DocumentInput>,
}

/// A chunk ready to write: its text, citation parts and vector.
#[derive(Debug, Clone)]
pub struct PreparedChunk {
    pub text: String,
    pub tokens: u32,
    pub section: Vec<String>,
    pub pages: Option<(u32, u32)>,
    pub vector: Option<Vec<f32>>,
}

#[derive(Debug, Clone)]
pub struct PreparedDocument {
    pub title: String,
    pub kind: &'static str,
    pub url: Option<String>,
    pub bytes: u64,
    pub pages: Option<u32>,
    pub chunks: Vec<PreparedChunk>,
}

/// A source extracted, chunked and embedded, for the indexer to write.
#[derive(Debug, Clone)]
pub struct PreparedSource {
    pub name: String,
    pub url: Option<String>,
    pub metadata: Map<String, Value>,
    pub external_source: Option<String>,
    pub external_id: Option<String>,
    pub documents: Vec<PreparedDocument>,
    /// The embedder that made the chunks' vectors.
    pub embedder: Option<String>,
}

/// A retriever's hit: an index key and its raw score.
type Hit = (String, f32);

/// What an ingestion wrote.
#[derive(Debug, Clone)]
pub struct IngestedSource {
    pub source: Source,
    pub documents: Vec<SourceDocument>,
    pub created: bool,
    /// Chunks of the documents it replaced.
    pub replaced_chunks: u32,
}

/// A search hit: a chunk with what citing it needs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChunkHit {
    pub chunk: SourceChunk,
    pub score: f64,
    pub source_name: String,
    pub source_url: Option<String>,
    pub document_title: String,
    pub document_url: Option<String>,
}

fn invalid(message: impl Into<String>) -> EngineError {
    EngineError::Invalid(message.into())
}

fn check_url(name: &str, url: &str) -> Result<(), EngineError> {
    check_short(name, url, MAX_URL_CHARS)?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(invalid(format!("{name} must be an http(s) URL")));
    }
    Ok(())
}

fn kind_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Text => "text",
        SourceKind::Markdown => "markdown",
        SourceKind::Html => "html",
        SourceKind::Pdf => "pdf",
    }
}

/// The text a chunk is found by (its document's title and section lead it).
pub(crate) fn chunk_text(document_title: &str, section: &[String], body: &str) -> String {
    let mut text = String::with_capacity(body.len() + 64);
    if !document_title.is_empty() {
        text.push_str(document_title);
        text.push('\n');
    }
    if !section.is_empty() {
        text.push_str(&section.join(" > "));
        text.push('\n');
    }
    text.push_str(body);
    text
}

fn validate(input: &SourceInput) -> Result<(), EngineError> {
    if input.documents.is_empty() {
        return Err(invalid("a source needs content, or documents with content"));
    }
    if input.documents.len() > MAX_DOCUMENTS {
        return Err(invalid(format!("a source holds at most {MAX_DOCUMENTS} documents")));
    }
    if input.external_id.is_some() != input.external_source.is_some() {
        return Err(invalid("external_source and external_id go together"));
    }
    if let Some(name) = &input.name {
        check_short("name", name, 500)?;
    }
    check_common(
        None,
        None,
        None,
        None,
        Some(&input.metadata),
        [input.external_source.as_deref(), input.external_id.as_deref()],
    )?;
    if let Some(url) = &input.url {
        check_url("url", url)?;
    }
    for (i, doc) in input.documents.iter().enumerate() {
        let at = |e: EngineError| super::super::graph::at("documents", i, e);
        if let Some(title) = &doc.title {
            check_short("title", title, 500).map_err(at)?;
        }
        if let Some(filename) = &doc.filename {
            check_short("filename", filename, 255).map_err(at)?;
        }
        if let Some(content_type) = &doc.content_type {
            check_short("content_type", content_type, 255).map_err(at)?;
        }
        if let Some(url) = &doc.url {
            check_url("url", url).map_err(at)?;
        }
        if doc.content.is_empty() {
            return Err(at(invalid("content must not be empty")));
        }
    }
    Ok(())
}

/// Extracts and chunks every document (CPU work, on the caller's blocking thread).
fn prepare(input: SourceInput) -> Result<PreparedSource, EngineError> {
    let limits = Limits::default();
    let options = ChunkOptions::default();
    let mut documents = Vec::with_capacity(input.documents.len());
    let mut total_chunks = 0;
    for (i, doc) in input.documents.into_iter().enumerate() {
        let at = |e: String| invalid(format!("documents[{i}]: {e}"));
        let extracted = extract(&doc.content, doc.content_type.as_deref(), doc.filename.as_deref(), &limits).map_err(
            |e| match e {
                ExtractError::Unsupported(_) => EngineError::UnsupportedType(format!("documents[{i}]: {e}")),
                ExtractError::TooLarge { .. } | ExtractError::OutputTooLarge { .. } => {
                    EngineError::TooLarge(format!("documents[{i}]: {e}"))
                }
                other => at(other.to_string()),
            },
        )?;
        let chunks = chunk(&extracted.text, extracted.pages.as_deref(), &options).map_err(|e| at(e.to_string()))?;
        total_chunks += chunks.len();
        if total_chunks > MAX_CHUNKS_PER_SOURCE {
            return Err(invalid(format!(
                "the source would be over {MAX_CHUNKS_PER_SOURCE} chunks; split it into several sources"
            )));
        }
        let title = doc
            .title
            .or(extracted.title)
            .or(doc.filename)
            .map(|t| short_title(&t.replace(|c: char| c.is_control(), " ")))
            .unwrap_or_else(|| input.name.clone().unwrap_or_else(|| "Untitled".into()));
        documents.push(PreparedDocument {
            title,
            kind: kind_name(extracted.kind),
            url: doc.url,
            bytes: doc.content.len() as u64,
            pages: extracted.pages.as_ref().and_then(|p| p.last()).map(|p| p.page),
            chunks: chunks
                .into_iter()
                .map(|c| PreparedChunk {
                    text: c.text,
                    tokens: u32::try_from(c.tokens).unwrap_or(u32::MAX),
                    section: c.section,
                    pages: c.pages.map(|p| (*p.start(), *p.end())),
                    vector: None,
                })
                .collect(),
        });
    }
    let name = input.name.or_else(|| documents.first().map(|d| d.title.clone())).unwrap_or_else(|| "Untitled".into());
    Ok(PreparedSource {
        name,
        url: input.url,
        metadata: input.metadata,
        external_source: input.external_source,
        external_id: input.external_id,
        documents,
        embedder: None,
    })
}

impl Knowledge {
    /// Ingests a source (see the module's doc).
    pub async fn ingest_source(&self, scope: &KbScope, input: SourceInput) -> Result<IngestedSource, EngineError> {
        validate(&input)?;
        let mut prepared = tokio::task::spawn_blocking(move || prepare(input))
            .await
            .map_err(|e| EngineError::Internal(format!("preparing a source: {e}")))??;
        // A chunk embedder as cheap as the static model embeds the chunks here, so they are
        // written with their vectors; a slower one (MiniLM) is left to the vectoriser: the
        // source is answered once written and searchable by text, its vectors follow.
        let embedder = &self.parts().chunk_embedder;
        if embedder.is_inline() {
            let texts = prepared
                .documents
                .iter()
                .flat_map(|d| d.chunks.iter().map(|c| chunk_text(&d.title, &c.section, &c.text)))
                .collect::<Vec<_>>();
            // Should it fail, the chunks are written without vectors, for the vectoriser.
            match embedder.embed(texts).await {
                Ok(embedded) => {
                    let mut vectors = embedded.vectors.into_iter();
                    for chunk in prepared.documents.iter_mut().flat_map(|d| d.chunks.iter_mut()) {
                        chunk.vector = vectors.next().map(|mut v| {
                            crate::embed::l2_normalise(&mut v);
                            v
                        });
                    }
                    prepared.embedder = Some(embedded.embedder.to_string());
                }
                Err(error) => {
                    tracing::warn!(%error, "knowledge base: embedding a source's chunks failed; left to the vectoriser")
                }
            }
        }
        match self.write(KbWrite::Source(scope.clone(), Box::new(prepared))).await? {
            Written::Source(ingested) => Ok(*ingested),
            _ => Err(crate::knowledge::another_answer()),
        }
    }

    /// Deletes a source with its documents and chunks.
    pub async fn delete_source(&self, scope: &KbScope, id: &str) -> Result<Source, EngineError> {
        self.source(scope, id)?;
        match self.write(KbWrite::DeleteSource(scope.clone(), id.to_owned())).await? {
            Written::SourceDeleted(source) => Ok(*source),
            _ => Err(crate::knowledge::another_answer()),
        }
    }

    pub fn source(&self, scope: &KbScope, id: &str) -> Result<Source, EngineError> {
        match self.parts().store.sources.get(&(scope.account_id.as_str(), id))? {
            Some(source) if source.workspace == scope.workspace => Ok(source),
            _ => Err(EngineError::NotFound { what: "source" }),
        }
    }

    /// A source's documents and (up to `max_chunks` in all) their chunks, in order.
    pub fn source_contents(
        &self,
        scope: &KbScope,
        source: &Source,
        max_chunks: usize,
    ) -> Result<Vec<(SourceDocument, Vec<SourceChunk>)>, EngineError> {
        let store = &self.parts().store;
        let mut out = Vec::new();
        let mut room = max_chunks;
        for id in &source.documents {
            let account = scope.account_id.as_str();
            let Some(document) = store.source_documents.get(&(account, id.as_str()))? else { continue };
            let chunks = if room == 0 {
                Vec::new()
            } else {
                store.source_chunks.scan_prefix_limit(&(account, id.as_str()), room)?
            };
            room -= chunks.len();
            out.push((document, chunks));
        }
        Ok(out)
    }

    /// The scope's sources, newest first.
    pub fn list_sources(&self, scope: &KbScope, limit: usize) -> Result<Vec<Source>, EngineError> {
        let mut sources: Vec<Source> = self
            .parts()
            .store
            .sources
            .scan_prefix(&(scope.account_id.as_str(),))?
            .into_iter()
            .filter(|s| s.workspace == scope.workspace)
            .collect();
        sources.sort_by(|a, b| b.updated_at_ms.cmp(&a.updated_at_ms).then_with(|| a.id.cmp(&b.id)));
        sources.truncate(limit);
        Ok(sources)
    }

    /// Chunks of the scope's sources (and the account's own) ranked for `query`: BM25 and
    /// vectors fused as for notes, chunks of one document being neighbours by position.
    pub async fn search_sources(
        &self,
        scope: &KbScope,
        query: &str,
        limit: usize,
        source_ids: Option<&[String]>,
    ) -> Result<Vec<ChunkHit>, EngineError> {
        if query.trim().is_empty() {
            return Err(invalid("query must not be empty"));
        }
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(invalid(format!("query is longer than {MAX_QUERY_CHARS} characters")));
        }
        let parts = self.parts();
        let readable = scope.readable();
        // Narrowed to some sources, the filter comes after retrieval: retrieve more.
        let candidates = if source_ids.is_some() { FILTERED_CANDIDATES } else { CANDIDATES };
        let text_hits =
            self.text_search(scope, query, vec![(&[CHUNK], candidates)]).await?.into_iter().next().unwrap_or_default();
        let embedded = parts.chunk_embedder.embed(vec![query.to_owned()]).await?;
        let mut query_vector = embedded.vectors.into_iter().next().unwrap_or_default();
        crate::embed::l2_normalise(&mut query_vector);
        let vector_hits = parts.vectors.search(&scope.account_id, &readable, &[CHUNK], &query_vector, candidates);
        self.rank_chunks(scope, query, (&text_hits, &vector_hits), limit, source_ids, &self.parts().weights.fusion)
    }

    /// Fuses the retrievers' chunk hits (BM25's, then the vectors') and looks up what citing
    /// them needs.
    pub(crate) fn rank_chunks(
        &self,
        scope: &KbScope,
        query: &str,
        (text_hits, vector_hits): (&[Hit], &[Hit]),
        limit: usize,
        source_ids: Option<&[String]>,
        fusion: &rank::FusionParams,
    ) -> Result<Vec<ChunkHit>, EngineError> {
        let store = &self.parts().store;
        let account = scope.account_id.as_str();
        let readable = scope.readable();
        let mut chunks = std::collections::HashMap::new();
        for key in text_hits.iter().chain(vector_hits).map(|(key, _)| key) {
            let Some(id) = key.strip_prefix("chunk:") else { continue };
            if chunks.contains_key(id) {
                continue;
            }
            let Some((document, ordinal)) = SourceChunk::parse_id(id) else { continue };
            // The indexes may lag a delete by a commit; the record is the truth.
            let Some(chunk) = store.source_chunks.get(&(account, document, u64::from(ordinal)))? else { continue };
            if !readable.contains(&chunk.workspace.as_str())
                || source_ids.is_some_and(|ids| !ids.contains(&chunk.source_id))
            {
                continue;
            }
            chunks.insert(id.to_owned(), chunk);
        }
        let candidate = |key: &str, bm25: Option<f32>, cosine: Option<f32>| {
            let chunk = chunks.get(key.strip_prefix("chunk:")?)?;
            Some(Candidate {
                id: chunk.id.clone(),
                bm25,
                cosine,
                thread: Some(chunk.document_id.clone()),
                position: Some(i64::from(chunk.ordinal)),
                created_at_ms: 0,
                author: None,
            })
        };
        let candidates: Vec<Candidate> = text_hits
            .iter()
            .filter_map(|(key, score)| candidate(key, Some(*score), None))
            .chain(vector_hits.iter().filter_map(|(key, cosine)| candidate(key, None, Some(*cosine))))
            .collect();
        let mut hits = Vec::new();
        for ranked in rank::rank(query, candidates, fusion).into_iter().take(limit) {
            let Some(chunk) = chunks.remove(&ranked.id) else { continue };
            let Some(document) = store.source_documents.get(&(account, chunk.document_id.as_str()))? else { continue };
            let Some(source) = store.sources.get(&(account, chunk.source_id.as_str()))? else { continue };
            hits.push(ChunkHit {
                chunk,
                score: ranked.score,
                source_name: source.name,
                source_url: source.url,
                document_title: document.title,
                document_url: document.url,
            });
        }
        Ok(hits)
    }
}
