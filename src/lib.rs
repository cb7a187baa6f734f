//! # gsdr — backup and disaster recovery for a Kubernetes data platform
//!
//! Every backup is one stream: a [`source`] produces raw bytes, the
//! [`pipeline`] compresses (zstd) and encrypts (age) them on the fly, and a
//! [`storage`] target stores them (S3 multipart or a local folder). The
//! [`catalog`] writes a manifest last: a backup exists only once its manifest
//! does. [`policy`] files say what to back up, when, where and to whom.
//! [`job`] ties these together for `backup`, `verify` and `restore`.
//! [`velero`] drives Velero (Kubernetes object backups) through the Kubernetes API.
//! The daemon side: [`scheduler`] (cron, leases, retries, shutdown),
//! [`retention`] (what prune keeps), [`replicate`] (off-site copies),
//! [`metrics`] (named events → logs and Prometheus), [`notify`] (webhook).
//!
//! Errors follow the policy in [`error`].

pub mod catalog;
pub mod cron;
pub mod daemon;
pub mod drill;
pub mod error;
pub mod failure;
pub mod fault;
pub mod job;
pub mod job_id;
pub mod layout;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod policy;
pub mod replicate;
pub mod retention;
pub mod scheduler;
pub mod secret;
pub mod signing;
pub mod source;
pub mod storage;
pub mod stream;
pub mod tls;
pub mod units;
pub mod velero;

pub use error::{Error, Result};
pub use fault::{ErrorKind, RetryClass};
