//! Jobs: backup, verify, restore.
