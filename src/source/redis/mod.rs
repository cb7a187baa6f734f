//! The `redis` engine (not built yet).
