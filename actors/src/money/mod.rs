pub mod billing;
pub mod funding;
pub mod ledger;
pub mod payments;
