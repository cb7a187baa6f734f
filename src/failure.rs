//! What the operator must fix, read from any error chain gsdr returns: the
//! CLI's exit code and `--json` error document come from here. It sits at
//! the top because it knows every layer's error type.

use crate::fault::ErrorKind;

/// The kind of the first cause in `e`'s chain that is one of gsdr's error
/// types, preferring a specific kind (wrong key, damage, unreachable…)
/// found deeper over a generic one wrapping it.
pub fn kind_of_chain<'a>(
    chain: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> ErrorKind {
    let mut first = None;
    for c in chain {
        if let Some(k) = kind_of(c) {
            if !matches!(k, ErrorKind::Other | ErrorKind::SourceFailed) {
                return k;
            }
            first.get_or_insert(k);
        }
    }
    first.unwrap_or(ErrorKind::Other)
}

/// The kind of `e` if it is one of gsdr's error types.
fn kind_of(e: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    if let Some(e) = e.downcast_ref::<crate::Error>() {
        return Some(e.kind());
    }
    if let Some(e) = e.downcast_ref::<crate::source::error::EngineError>() {
        return Some(e.kind());
    }
    if let Some(e) = e.downcast_ref::<crate::storage::StorageError>() {
        return Some(e.kind());
    }
    if let Some(e) = e.downcast_ref::<crate::pipeline::PipelineError>() {
        return Some(e.kind());
    }
    if let Some(e) = e.downcast_ref::<crate::stream::SourceError>() {
        return Some(e.kind());
    }
    if let Some(e) = e.downcast_ref::<crate::catalog::CatalogError>() {
        return Some(e.kind());
    }
    if e.downcast_ref::<crate::policy::PolicyError>().is_some() {
        return Some(ErrorKind::InvalidInput);
    }
    if e.downcast_ref::<crate::metrics::server::ServeError>()
        .is_some()
    {
        return Some(ErrorKind::InvalidInput);
    }
    if let Some(e) = e.downcast_ref::<crate::velero::VeleroError>() {
        return Some(e.kind());
    }
    if let Some(e) = e.downcast_ref::<crate::drill::DrillError>() {
        return Some(match e {
            crate::drill::DrillError::Gsdr(e) => e.kind(),
            _ => ErrorKind::InvalidInput,
        });
    }
    if let Some(k) = crate::source::error_kind(e) {
        return Some(k);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::PipelineError;
    use crate::Error;

    #[test]
    fn kind_is_found_under_context_and_damage_alone_exits_1() {
        let wrong = anyhow::Error::from(Error::Pipeline(PipelineError::WrongKey {
            recipients: "age1…".into(),
        }))
        .context("restore of `cache`");
        let k = kind_of_chain(wrong.chain());
        assert_eq!((k, k.exit_code()), (ErrorKind::WrongKey, 2));
        let cut = anyhow::Error::from(PipelineError::Truncated {
            read: 1,
            expected: 2,
        })
        .context("verify");
        let k = kind_of_chain(cut.chain());
        assert_eq!((k, k.exit_code()), (ErrorKind::Damaged, 1));
        let engine = anyhow::Error::from(crate::source::EngineError::Pipeline(
            PipelineError::WrongKey {
                recipients: "age1…".into(),
            },
        ))
        .context("restore of `db`");
        assert_eq!(kind_of_chain(engine.chain()), ErrorKind::WrongKey);
        let bare = anyhow::anyhow!("something else");
        assert_eq!(kind_of_chain(bare.chain()), ErrorKind::Other);
    }
}
