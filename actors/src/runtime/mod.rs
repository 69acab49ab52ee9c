pub mod chat;
pub mod embeddings;
pub mod requests;
pub mod stream;
pub(crate) mod tasks;
pub mod tokenizer;
