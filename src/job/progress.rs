//! Progress reporting lives in [`crate::stream::progress`] (engines report
//! through it too); re-exported here for the job layer's callers.

pub use crate::stream::progress::{NoProgress, Progress};
