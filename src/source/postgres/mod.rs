//! The `postgres` engine (not built yet).
