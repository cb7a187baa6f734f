//! gsdr's integration tests: one binary (one link) with a module per area.
//! Every test starts the real servers it needs on free loopback ports
//! (see `support`) and fails, saying how to install it, if one is missing.

mod architecture;
mod catalog;
mod cli;
mod daemon;
mod deploy;
mod drill;
mod exit_codes;
mod faults;
mod gc;
mod lifecycle;
mod logs;
mod mission;
mod mongo;
mod notify;
mod pg_role;
mod pg_safety;
mod pg_stream;
mod pg_tls;
mod policies;
mod postgres;
mod redis;
mod redis_capture;
mod s3compat;
mod secret_markers;
mod secrets;
mod signing;
mod storage;
mod supply_chain;
mod support;
mod velero;
