//! Sources: what written material becomes before it is indexed. `extract.rs` turns a source's
//! bytes (text, Markdown, HTML, PDF) into structured text with a title and page spans;
//! `chunk.rs` cuts that text into cited, token-bounded chunks. The routes that ingest, list
//! and search sources build on these (issue 12).

pub mod chunk;
pub mod extract;
