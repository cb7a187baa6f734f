//! The `mongo` engine (not built yet).
