pub mod group;
pub mod inspect;
pub mod root;
pub mod supervisor;
