pub mod chat;
pub mod embeddings;
pub mod requests;
pub mod tokenizer;
