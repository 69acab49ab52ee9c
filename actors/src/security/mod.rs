pub mod secrets;
pub mod tokens;
