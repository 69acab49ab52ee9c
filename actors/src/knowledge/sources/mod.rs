//! Sources: what written material becomes before it is indexed. `extract.rs` turns a source's
//! bytes (text, Markdown, HTML, PDF) into structured text with a title and page spans;
//! `chunk.rs` cuts that text into cited, token-bounded chunks; `ingest.rs` ingests, reads,
//! deletes and searches sources through the indexer.

pub mod chunk;
pub mod extract;
pub mod ingest;
