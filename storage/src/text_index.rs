//! The knowledge base's BM25 text index: tantivy under `<data_dir>/index/text/`.
//!
//! One writer (the indexer actor) adds and deletes documents and commits; each commit records
//! the knowledge base's write sequence it is current to (its payload), so records written
//! after it are indexed again after a crash. Searches read the last commit and never wait for
//! the writer. A query is the user's text run through the field's analyser into plain term
//! queries — no query syntax, so no input can fail to parse — inside a filter on account,
//! workspace and kind that adds nothing to the score.

use std::{path::Path, sync::Mutex};

use tantivy::{
    collector::TopDocs,
    directory::MmapDirectory,
    query::{BooleanQuery, ConstScoreQuery, Occur, Query, TermQuery},
    schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING},
    tokenizer::{
        Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer, TokenStream,
    },
    Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term,
};

use crate::StorageError;

/// The writer's memory budget: tantivy's minimum for one thread is 15 MB.
const WRITER_HEAP_BYTES: usize = 32 << 20;
/// Query terms past this many are ignored (a pasted essay is not a better query).
const MAX_QUERY_TERMS: usize = 64;
/// The text field's analyser: words lower-cased, English stop words out, stemmed. Stop words
/// and stemming each measured better on LoCoMo (docs/research/locomo/REPORT.md).
const ANALYZER: &str = "kb_en";

fn analyzer() -> TextAnalyzer {
    let builder =
        TextAnalyzer::builder(SimpleTokenizer::default()).filter(RemoveLongFilter::limit(40)).filter(LowerCaser);
    match StopWordFilter::new(Language::English) {
        Some(stop_words) => builder.filter(stop_words).filter(Stemmer::new(Language::English)).build(),
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}

/// One document of the index.
#[derive(Debug, Clone)]
pub struct TextDoc {
    /// Unique over the whole index, e.g. `note:{account}:{id}`.
    pub key: String,
    pub account: String,
    pub workspace: String,
    pub kind: String,
    pub text: String,
}

#[derive(Clone, Copy)]
struct Fields {
    key: Field,
    account: Field,
    workspace: Field,
    kind: Field,
    text: Field,
}

pub struct TextIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
}

fn error(e: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt { tree: "index/text".into(), detail: e.to_string() }
}

impl TextIndex {
    /// Opens the index in `dir`, creating it if missing. An index that cannot be opened (a
    /// crash mid-write, another layout) is moved aside and started afresh: the records in
    /// sled are the truth, and a fresh index is indexed again from them (`committed_seq` 0).
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        match Self::try_open(dir) {
            Ok(index) => Ok(index),
            Err(first) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                let aside = dir.with_extension(format!("unreadable-{nanos}-{}", std::process::id()));
                std::fs::rename(dir, &aside)
                    .map_err(|e| StorageError::Io { path: dir.display().to_string(), source: e })?;
                Self::try_open(dir).map_err(|again| error(format!("{first}; then, fresh: {again}")))
            }
        }
    }

    fn try_open(dir: &Path) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Io { path: dir.display().to_string(), source: e })?;
        let mut schema = Schema::builder();
        let fields = Fields {
            key: schema.add_text_field("key", STRING | STORED),
            account: schema.add_text_field("account", STRING),
            workspace: schema.add_text_field("workspace", STRING),
            kind: schema.add_text_field("kind", STRING),
            text: schema.add_text_field(
                "text",
                TextOptions::default().set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer(ANALYZER)
                        .set_index_option(IndexRecordOption::WithFreqsAndPositions),
                ),
            ),
        };
        let directory = MmapDirectory::open(dir).map_err(error)?;
        let index = Index::open_or_create(directory, schema.build()).map_err(error)?;
        // Analysers are not stored with the index: registered at every open.
        index.tokenizers().register(ANALYZER, analyzer());
        let writer = index.writer_with_num_threads(1, WRITER_HEAP_BYTES).map_err(error)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(error)?;
        Ok(Self { index, reader, writer: Mutex::new(writer), fields })
    }

    /// The write sequence the last commit is current to (0 for a new index).
    pub fn committed_seq(&self) -> Result<u64, StorageError> {
        let metas = self.index.load_metas().map_err(error)?;
        Ok(metas.payload.and_then(|p| p.parse().ok()).unwrap_or(0))
    }

    /// Replaces (or adds) these documents and deletes those keys; visible after `commit`.
    pub fn apply(&self, upserts: &[TextDoc], deletes: &[String]) -> Result<(), StorageError> {
        let writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in deletes.iter().chain(upserts.iter().map(|d| &d.key)) {
            writer.delete_term(Term::from_field_text(self.fields.key, key));
        }
        for doc in upserts {
            let mut out = TantivyDocument::default();
            out.add_text(self.fields.key, &doc.key);
            out.add_text(self.fields.account, &doc.account);
            out.add_text(self.fields.workspace, &doc.workspace);
            out.add_text(self.fields.kind, &doc.kind);
            out.add_text(self.fields.text, &doc.text);
            writer.add_document(out).map_err(error)?;
        }
        Ok(())
    }

    /// Makes everything applied durable and visible, recording that the index is current
    /// to `seq`.
    pub fn commit(&self, seq: u64) -> Result<(), StorageError> {
        let mut writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut prepared = writer.prepare_commit().map_err(error)?;
        prepared.set_payload(&seq.to_string());
        prepared.commit().map_err(error)?;
        drop(writer);
        self.reader.reload().map_err(error)
    }

    /// Deletes every document (before indexing everything again).
    pub fn clear(&self) -> Result<(), StorageError> {
        let writer = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        writer.delete_all_documents().map_err(error)?;
        Ok(())
    }

    /// The number of documents visible to searches.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The best `limit` documents of `account` and `workspaces` of one of `kinds` for
    /// `query`, by BM25: (key, score), best first.
    pub fn search(
        &self,
        account: &str,
        workspaces: &[&str],
        kinds: &[&str],
        query: &str,
        limit: usize,
    ) -> Result<Vec<(String, f32)>, StorageError> {
        let terms = self.query_terms(query)?;
        if terms.is_empty() || workspaces.is_empty() || kinds.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let exact = |field: Field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(Term::from_field_text(field, value), IndexRecordOption::Basic))
        };
        let any_of = |field: Field, values: &[&str]| -> Box<dyn Query> {
            Box::new(BooleanQuery::new(values.iter().map(|v| (Occur::Should, exact(field, v))).collect()))
        };
        let scope: Box<dyn Query> = Box::new(BooleanQuery::new(vec![
            (Occur::Must, exact(self.fields.account, account)),
            (Occur::Must, any_of(self.fields.workspace, workspaces)),
            (Occur::Must, any_of(self.fields.kind, kinds)),
        ]));
        let text: Box<dyn Query> = Box::new(BooleanQuery::new(
            terms
                .into_iter()
                .map(|t| -> (Occur, Box<dyn Query>) {
                    (Occur::Should, Box::new(TermQuery::new(t, IndexRecordOption::WithFreqs)))
                })
                .collect(),
        ));
        let query =
            BooleanQuery::new(vec![(Occur::Must, Box::new(ConstScoreQuery::new(scope, 0.0))), (Occur::Must, text)]);
        let searcher = self.reader.searcher();
        let top = searcher.search(&query, &TopDocs::with_limit(limit).order_by_score()).map_err(error)?;
        let mut out = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address).map_err(error)?;
            if let Some(key) = doc.get_first(self.fields.key).and_then(|v| v.as_str()) {
                out.push((key.to_owned(), score));
            }
        }
        Ok(out)
    }

    /// The query's terms as the text field indexes them (lower-cased, split on
    /// non-alphanumerics), each once.
    fn query_terms(&self, query: &str) -> Result<Vec<Term>, StorageError> {
        let mut analyzer = self.index.tokenizer_for_field(self.fields.text).map_err(error)?;
        let mut stream = analyzer.token_stream(query);
        let mut seen = std::collections::HashSet::new();
        let mut terms = Vec::new();
        while stream.advance() {
            let text = stream.token().text.clone();
            if seen.insert(text.clone()) {
                terms.push(Term::from_field_text(self.fields.text, &text));
                if terms.len() == MAX_QUERY_TERMS {
                    break;
                }
            }
        }
        Ok(terms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(key: &str, account: &str, workspace: &str, text: &str) -> TextDoc {
        TextDoc {
            key: key.into(),
            account: account.into(),
            workspace: workspace.into(),
            kind: "note".into(),
            text: text.into(),
        }
    }

    #[test]
    fn search_is_scoped_ranked_and_survives_reopen_with_its_sequence() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = TextIndex::open(dir.path()).unwrap();
            assert_eq!(index.committed_seq().unwrap(), 0);
            index
                .apply(
                    &[
                        doc("n1", "a", "", "Caroline went to the LGBTQ support group on Sunday"),
                        doc("n2", "a", "", "Melanie painted a sunrise over the lake"),
                        doc("n3", "b", "", "Caroline's support group met on Sunday"),
                        doc("n4", "a", "ws", "support group notes for the workspace"),
                    ],
                    &[],
                )
                .unwrap();
            index.commit(7).unwrap();
            // "the" and "to" are stop words: the question finds only the note it is about.
            let found = index.search("a", &[""], &["note"], "When did Caroline go to the support group?", 10).unwrap();
            assert_eq!(found.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["n1"], "{found:?}");
            let stemmed = index.search("a", &[""], &["note"], "paintings", 10).unwrap();
            assert_eq!(stemmed.first().map(|(k, _)| k.as_str()), Some("n2"), "stemmed: {stemmed:?}");
            let both = index.search("a", &["", "ws"], &["note"], "support group", 10).unwrap();
            assert_eq!(both.len(), 2);
            assert!(index.search("a", &[""], &["chunk"], "support", 10).unwrap().is_empty(), "another kind");
            assert!(index.search("a", &[""], &["note"], "", 10).unwrap().is_empty());
            assert!(index.search("a", &[""], &["note"], "\"(AND OR:*)~^", 10).unwrap().is_empty(), "no syntax");
            // Upserting a key replaces it; deleting removes it.
            index.apply(&[doc("n1", "a", "", "Caroline adopted a dog")], &["n2".into()]).unwrap();
            index.commit(9).unwrap();
            assert!(index.search("a", &[""], &["note"], "sunrise lake", 10).unwrap().is_empty());
            assert_eq!(index.search("a", &[""], &["note"], "dog", 10).unwrap()[0].0, "n1");
        }
        let index = TextIndex::open(dir.path()).unwrap();
        assert_eq!(index.committed_seq().unwrap(), 9);
        assert_eq!(index.len(), 3);
    }

    #[test]
    fn an_unreadable_index_is_moved_aside_and_started_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("text");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join("meta.json"), b"{ not json").unwrap();
        let index = TextIndex::open(&path).unwrap();
        assert_eq!((index.committed_seq().unwrap(), index.len()), (0, 0));
    }
}
