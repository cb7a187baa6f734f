//! `mongodb::bson` without the driver (for the fuzz build only).
pub use bson;
