//! `deny.toml`'s licence, ban and source rules, checked from `cargo metadata`
//! without cargo-deny (not installed here; its advisories need a database
//! this machine cannot fetch). The same file drives `cargo deny check` where
//! cargo-deny runs.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

fn deny_toml() -> toml::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("deny.toml");
    toml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// Every package in the resolved graph (all targets, dev-dependencies too).
fn packages() -> Vec<Value> {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    let resolved: BTreeSet<&str> = m["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| resolved.contains(p["id"].as_str().unwrap()))
        .cloned()
        .collect()
}

/// Whether the SPDX expression `expr` can be satisfied with `allow`
/// (`OR` binds looser than `AND`; `X WITH E` is one licence; the old `A/B`
/// spelling means `A OR B`, as cargo-deny reads it).
fn satisfiable(expr: &str, allow: &BTreeSet<String>) -> Result<bool, String> {
    let spaced = expr
        .replace('/', " OR ")
        .replace('(', " ( ")
        .replace(')', " ) ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let mut pos = 0;
    let v = or_expr(&tokens, &mut pos, allow)?;
    if pos != tokens.len() {
        return Err(format!("`{expr}`: unexpected `{}`", tokens[pos]));
    }
    Ok(v)
}

fn or_expr(t: &[&str], pos: &mut usize, allow: &BTreeSet<String>) -> Result<bool, String> {
    let mut v = and_expr(t, pos, allow)?;
    while t.get(*pos) == Some(&"OR") {
        *pos += 1;
        v |= and_expr(t, pos, allow)?;
    }
    Ok(v)
}

fn and_expr(t: &[&str], pos: &mut usize, allow: &BTreeSet<String>) -> Result<bool, String> {
    let mut v = licence(t, pos, allow)?;
    while t.get(*pos) == Some(&"AND") {
        *pos += 1;
        v &= licence(t, pos, allow)?;
    }
    Ok(v)
}

fn licence(t: &[&str], pos: &mut usize, allow: &BTreeSet<String>) -> Result<bool, String> {
    match t.get(*pos) {
        Some(&"(") => {
            *pos += 1;
            let v = or_expr(t, pos, allow)?;
            if t.get(*pos) != Some(&")") {
                return Err("unbalanced parentheses".into());
            }
            *pos += 1;
            Ok(v)
        }
        Some(id) if !["AND", "OR", "WITH", ")"].contains(id) => {
            *pos += 1;
            let mut name = id.to_string();
            if t.get(*pos) == Some(&"WITH") {
                let exc = t.get(*pos + 1).ok_or("WITH without an exception")?;
                name = format!("{name} WITH {exc}");
                *pos += 2;
            }
            Ok(allow.contains(&name))
        }
        other => Err(format!("expected a licence, found {other:?}")),
    }
}

#[test]
fn the_licence_checker_reads_spdx_as_cargo_deny_does() {
    let allow: BTreeSet<String> = ["MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception"]
        .map(String::from)
        .into();
    for (expr, want) in [
        ("MIT", true),
        ("GPL-3.0", false),
        ("MIT OR GPL-3.0", true),
        ("MIT AND GPL-3.0", false),
        ("(MIT OR GPL-3.0) AND Apache-2.0", true),
        ("(GPL-2.0 OR LGPL-2.1) AND MIT", false),
        ("MIT/Apache-2.0", true),
        ("Apache-2.0 WITH LLVM-exception", true),
        ("GPL-2.0 WITH Classpath-exception-2.0 OR ISC", false),
    ] {
        assert_eq!(satisfiable(expr, &allow), Ok(want), "{expr}");
    }
    assert!(satisfiable("MIT AND (", &allow).is_err());
}

/// Every dependency's licence is allowed by `deny.toml`, no banned crate
/// (OpenSSL: TLS is rustls everywhere) is in the graph, and every package
/// comes from crates.io or this repository.
#[test]
fn every_dependency_is_allowed_by_deny_toml() {
    let deny = deny_toml();
    let allow: BTreeSet<String> = deny["licenses"]["allow"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let banned: BTreeSet<&str> = deny["bans"]["deny"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    let registries: Vec<String> = deny["sources"]["allow-registry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| format!("registry+{}", v.as_str().unwrap()))
        .collect();
    let pkgs = packages();
    assert!(pkgs.len() > 100, "the graph has {} packages", pkgs.len());
    let mut problems = Vec::new();
    for p in &pkgs {
        let id = format!("{} {}", p["name"].as_str().unwrap(), p["version"]);
        match p["license"].as_str() {
            Some(l) => match satisfiable(l, &allow) {
                Ok(true) => {}
                Ok(false) => problems.push(format!("{id}: licence `{l}` is not allowed")),
                Err(e) => problems.push(format!("{id}: licence `{l}` unreadable: {e}")),
            },
            None => problems.push(format!(
                "{id}: no SPDX licence (only a licence file): add a [[licenses.clarify]]"
            )),
        }
        if banned.contains(p["name"].as_str().unwrap()) {
            problems.push(format!("{id}: banned by deny.toml"));
        }
        if let Some(src) = p["source"].as_str() {
            if !registries.iter().any(|r| src == r) {
                problems.push(format!("{id}: from `{src}`, not an allowed registry"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Whether `tag` of `image` names an exact release: it starts with a dotted
/// version whose parts are all numbers — three (`1.95.0-bookworm`,
/// `7.4.6-bookworm`), or two for Debian, whose point releases have two
/// (`12.11-slim`) — not a floating name (`latest`, `bookworm-slim`,
/// `1.95-bookworm`).
fn exact_tag(image: &str, tag: &str) -> bool {
    let need = if image == "debian" { 2 } else { 3 };
    let version = tag.split('-').next().unwrap_or("");
    let parts: Vec<&str> = version.split('.').collect();
    parts.len() >= need
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Every base image of the Dockerfile (each `FROM` that is not an earlier
/// stage, and the `REDIS_IMAGE` default) is pinned by an exact version tag
/// (docs/security.md "Supply chain").
#[test]
fn dockerfile_bases_are_pinned_by_exact_version_tags() {
    assert!(exact_tag("rust", "1.95.0-bookworm") && exact_tag("debian", "12.11-slim"));
    for floating in [
        "latest",
        "bookworm-slim",
        "7",
        "7.x-bookworm",
        "1.95-bookworm",
        "",
    ] {
        assert!(!exact_tag("rust", floating), "{floating}");
    }
    assert!(!exact_tag("debian", "12-slim"));
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    let mut stages = BTreeSet::new();
    let mut images = Vec::new();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["FROM", image, rest @ ..] => {
                if !stages.contains(*image) && !image.starts_with("${") {
                    images.push(image.to_string());
                }
                if let ["AS", name] = rest {
                    stages.insert(name.to_string());
                }
            }
            ["ARG", arg] if arg.starts_with("REDIS_IMAGE=") => {
                images.push(arg.trim_start_matches("REDIS_IMAGE=").to_string());
            }
            _ => {}
        }
    }
    assert!(images.len() >= 3, "{images:?}");
    for image in images {
        let pinned = image
            .split('@')
            .next()
            .unwrap()
            .rsplit_once(':')
            .is_some_and(|(name, tag)| exact_tag(name, tag));
        assert!(
            pinned,
            "Dockerfile base `{image}` is not pinned by an exact version tag"
        );
    }
}
