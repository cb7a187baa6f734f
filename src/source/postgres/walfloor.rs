//! From where archived WAL must be kept: the oldest segment a retained
//! base backup needs ([`WalFloor`]), and whether a WAL file lies before it
//! ([`wal_is_needed`]). Pure rules, shared by `gsdr prune`
//! ([`super::walprune`]) and the archive's checks ([`super::walverify`]).

use serde::Serialize;

use super::base::BaseDetails;
use crate::catalog::Manifest;

/// From where WAL must be kept, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum WalFloor {
    /// Keep `segment` and every later position (any timeline): the first
    /// segment of `backup`, the oldest remaining base backup.
    From {
        /// Oldest segment needed.
        segment: String,
        /// The base backup that needs it.
        backup: String,
    },
    /// No base backup remains: no WAL is deleted.
    NoBaseBackup,
    /// A remaining base backup records no readable first segment: no WAL is deleted.
    Unreadable {
        /// That backup.
        backup: String,
    },
}

impl WalFloor {
    /// The floor for the base backups among `kept` (the backups that remain).
    pub fn of(kept: &[Manifest]) -> WalFloor {
        let mut floor: Option<(String, String)> = None;
        for m in kept.iter().filter(|m| m.kind == "base") {
            let seg = serde_json::from_value::<BaseDetails>(m.consistency.details.clone())
                .ok()
                .map(|d| d.first_segment)
                .filter(|s| s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()));
            let Some(seg) = seg else {
                return WalFloor::Unreadable {
                    backup: m.id.clone(),
                };
            };
            // Position decides (log and segment), not the timeline.
            if floor.as_ref().is_none_or(|(f, _)| seg[8..] < f[8..]) {
                floor = Some((seg, m.id.clone()));
            }
        }
        match floor {
            Some((segment, backup)) => WalFloor::From { segment, backup },
            None => WalFloor::NoBaseBackup,
        }
    }

    /// The oldest segment to keep, if WAL may be deleted at all.
    pub fn segment(&self) -> Option<&str> {
        match self {
            WalFloor::From { segment, .. } => Some(segment),
            WalFloor::NoBaseBackup | WalFloor::Unreadable { .. } => None,
        }
    }

    /// The reason in words, as `gsdr prune` prints it.
    pub fn explain(&self) -> String {
        match self {
            WalFloor::From { segment, backup } => format!(
                "base backup {backup}, the oldest kept, needs WAL from {segment} on (every timeline; .history files always kept)"
            ),
            WalFloor::NoBaseBackup => "no base backup is kept: no WAL deleted".into(),
            WalFloor::Unreadable { backup } => format!(
                "base backup {backup} records no readable first WAL segment: no WAL deleted"
            ),
        }
    }
}

/// The oldest WAL segment the retained base backups `manifests` need: prune
/// must keep it and every later segment (any timeline), and every `.history`
/// file. `None` (keep everything) when no base backup is retained or one
/// records no readable first segment ([`WalFloor`] says which).
pub fn wal_needed_from(manifests: &[Manifest]) -> Option<String> {
    WalFloor::of(manifests).segment().map(str::to_string)
}

/// Whether WAL file `name` must be kept, given [`wal_needed_from`]'s answer.
pub fn wal_is_needed(name: &str, needed_from: Option<&str>) -> bool {
    let Some(from) = needed_from else {
        return true; // no base backup retained: keep everything, delete nothing blindly
    };
    if name.ends_with(".history") || name.len() < 24 || from.len() < 24 {
        return true;
    }
    // Position (log, segment) decides; the timeline does not (later timelines branch off later).
    name[8..24] >= from[8..24]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_keeps_needed_wal() {
        let from = Some("000000010000000000000005");
        assert!(!wal_is_needed("000000010000000000000004", from));
        assert!(wal_is_needed("000000010000000000000005", from));
        assert!(wal_is_needed("000000020000000000000007", from));
        assert!(wal_is_needed("00000002.history", from));
        assert!(wal_is_needed("000000010000000000000001", None));
    }
}
