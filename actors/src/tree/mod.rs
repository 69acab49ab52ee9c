//! The actor tree: one supervision protocol ([`supervisor`]), engine-scoped names
//! ([`registry`]), background jobs as actors ([`task`]) and the operator's view ([`inspect`]).

pub mod inspect;
pub mod registry;
pub mod supervisor;
pub mod task;
