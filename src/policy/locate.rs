//! Where a policy error sits: the dotted path of the offending key and the
//! line it is written on, from the spans of toml's document parser.
//!
//! serde errors carry a byte span, but inside a `kind`-tagged table that span
//! is the whole table (serde buffers it to read the tag first), so the key is
//! looked up by the name the message quotes (`` unknown field `schedul` ``).

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A key of the document: its dotted path and 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyAt {
    /// Dotted path, array elements as `[i]` (`drills.weekly.steps[1].kind`).
    pub path: String,
    /// Line of the key itself (not of its table header).
    pub line: usize,
    /// Byte span of the value when it is a plain string.
    pub string: Option<std::ops::Range<usize>>,
}

/// Every key of `text` with its path and line, in document order; empty if
/// the text is not TOML.
pub(crate) fn keys(text: &str) -> Vec<(KeyAt, std::ops::Range<usize>)> {
    let Ok(doc) = DeTable::parse(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk_table(text, doc.get_ref(), "", &mut out);
    out.sort_by_key(|(_, r)| r.start);
    out
}

/// Key span and value span (the whole entry) of every key under `table`.
fn walk_table(
    text: &str,
    table: &DeTable<'_>,
    prefix: &str,
    out: &mut Vec<(KeyAt, std::ops::Range<usize>)>,
) {
    for (k, v) in table {
        let path = join(prefix, k.get_ref());
        let key = k.span();
        let end = v.span().end.max(key.end);
        out.push((
            KeyAt {
                path: path.clone(),
                line: line_of(text, key.start),
                string: matches!(v.get_ref(), DeValue::String(_)).then(|| v.span()),
            },
            key.start..end,
        ));
        walk_value(text, v, &path, out);
    }
}

fn walk_value(
    text: &str,
    v: &Spanned<DeValue<'_>>,
    path: &str,
    out: &mut Vec<(KeyAt, std::ops::Range<usize>)>,
) {
    match v.get_ref() {
        DeValue::Table(t) => walk_table(text, t, path, out),
        DeValue::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                walk_value(text, e, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// 1-based line of a byte offset.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The key a serde error at `offset` is about: a key named in `message`
/// (`` `name` ``) written at or after the deepest key holding the offset, else
/// that deepest key.
pub(crate) fn at_error(text: &str, offset: usize, message: &str) -> Option<KeyAt> {
    let all = keys(text);
    let holder = all
        .iter()
        // A table header's span starts at `[`, before its key.
        .filter(|(k, r)| r.contains(&offset) || k.line == line_of(text, offset))
        .max_by_key(|(k, _)| k.path.matches('.').count() + k.path.matches('[').count());
    let quoted = message.split('`').nth(1).filter(|q| !q.is_empty());
    if let (Some(q), Some((h, r))) = (quoted, holder) {
        let want = format!("{}.{q}", h.path);
        // The field may be nested under the holder (inline table) or its sibling.
        if let Some((k, _)) = all
            .iter()
            .find(|(k, kr)| k.path == want && kr.start >= r.start && kr.end <= r.end.max(kr.end))
        {
            return Some(k.clone());
        }
        if let Some((k, _)) = all
            .iter()
            .find(|(k, kr)| r.contains(&kr.start) && k.path.rsplit('.').next() == Some(q))
        {
            return Some(k.clone());
        }
    }
    holder.map(|(k, _)| k.clone())
}

/// The line of the key at a dotted path; for a path not written (a default
/// or a missing field), the line of its nearest written parent.
pub(crate) fn line_of_path(text: &str, path: &str) -> Option<usize> {
    let all = keys(text);
    let mut p = path;
    loop {
        if let Some((k, _)) = all.iter().find(|(k, _)| k.path == p) {
            return Some(k.line);
        }
        p = &p[..p.rfind(['.', '['])?];
    }
}

/// The first plain-string key under `table`, in the order serde reads the
/// table's keys (sorted: toml's tables are ordered maps), whose value,
/// replaced by a secret reference, makes `fixed` true of the edited text.
pub(crate) fn culprit(text: &str, table: &KeyAt, fixed: impl Fn(&str) -> bool) -> Option<KeyAt> {
    let prefix = format!("{}.", table.path);
    let mut keys = keys(text);
    keys.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    keys.into_iter().find_map(|(k, _)| {
        let span = k.string.clone()?;
        // `kind` picks the table's type: replacing it changes the error.
        if !k.path.starts_with(&prefix) || k.path.ends_with(".kind") {
            return None;
        }
        let edited = format!(
            "{}{{ env = \"GSDR_X\" }}{}",
            &text[..span.start],
            &text[span.end..]
        );
        fixed(&edited).then_some(k)
    })
}

/// The key written on a 1-based line (`key = …`), or the table header.
pub(crate) fn key_on_line(text: &str, line: usize) -> String {
    let l = text.lines().nth(line - 1).unwrap_or("").trim();
    l.split('=')
        .next()
        .unwrap_or(l)
        .trim()
        .trim_matches(['[', ']'])
        .to_string()
}

/// Best-effort line of a dotted field: the table header, then the key below it.
pub(crate) fn find_field_line(text: &str, field: &str) -> Option<usize> {
    let parts: Vec<&str> = field.split('.').collect();
    for split in (1..=parts.len()).rev() {
        let table = parts[..split].join(".");
        let header = format!("[{table}]");
        if let Some(idx) = text.lines().position(|l| l.trim() == header) {
            if split == parts.len() {
                return Some(idx + 1);
            }
            let key = parts[split];
            for (j, l) in text.lines().enumerate().skip(idx + 1) {
                let t = l.trim_start();
                if t.starts_with('[') {
                    break;
                }
                if t.starts_with(key) && t[key.len()..].trim_start().starts_with('=') {
                    return Some(j + 1);
                }
            }
            return Some(idx + 1);
        }
    }
    let last = parts.last()?;
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            t.starts_with(last) && t[last.len()..].trim_start().starts_with('=')
        })
        .map(|i| i + 1)
}
