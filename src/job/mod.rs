//! Jobs: the operations the CLI, the daemon and drills run — backup, verify,
//! restore, garbage collection ([`gc`]) — over an [`Env`] built once from a policy.

mod backup;
mod capabilities;
pub mod capture;
mod env;
pub mod gc;
mod progress;
pub mod prune;
mod restore;
mod verify;

pub use backup::{backup, backup_cancellable, backup_with, BackupOutcome};
pub use capabilities::TargetCapabilities;
pub use env::Env;
pub use progress::{NoProgress, Progress};
pub use restore::{
    describe_overwrite, endpoint_with_password, engine_for, restore, restore_raw_to_file,
    restore_spec, verify_deep, RestoreOutcome, RestoreRequest,
};
pub use verify::{verify, VerifyReport};
