//! The shape of the crate, checked over its source text (no server needed):
//! the layers of `docs/ARCHITECTURE.md` hold (no module imports one above
//! it), no folder's files import each other in a cycle, and no code outside
//! an engine's folder names an engine.
//!
//! The scanner reads every `crate::…` and `super::…` path in `src/` (comments
//! and string literals blanked, inline `mod x { … }` blocks followed), maps
//! it to the module it names, and checks the edges. `src/main.rs` and
//! `src/cli/` are the binary: they reach the library as `gsdr::…`, from the
//! top, and are not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The library's top-level modules, bottom first. A module may import only
/// modules of a lower layer; modules in one layer do not import each other.
const LAYERS: &[&[&str]] = &[
    &["fault", "units", "secret", "tls", "cron", "job_id"],
    &["stream", "layout", "signing"],
    &["metrics"],
    &["storage"],
    &["pipeline"],
    &["catalog"],
    &["retention"],
    &["source", "velero"],
    &["policy"],
    &["error"],
    &["job"],
    &["replicate"],
    &["drill"],
    &["scheduler"],
    &["notify"],
    &["daemon"],
    &["failure"],
];

/// A module path inside the crate (`["source", "postgres", "wal"]`).
type Module = Vec<String>;

/// One `crate::`/`super::` reference: where it is and what module it names.
#[derive(Debug, Clone)]
struct Edge {
    from: Module,
    to: Module,
    file: String,
    line: usize,
}

/// Blanks comments, string and char literals (keeping newlines), so braces
/// and paths inside them are not read as code.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && (i == 0 || !is_ident(b[i - 1]))
        {
            // Raw string r"…" / r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            j += 1;
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            let end = (j + close.len()).min(b.len());
            for &x in &b[i..end] {
                blank(&mut out, x);
            }
            i = end;
        } else if c == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                if b[j] == b'\\' {
                    j += 1;
                }
                j += 1;
            }
            let end = (j + 1).min(b.len());
            for &x in &b[i..end] {
                blank(&mut out, x);
            }
            i = end;
        } else if c == b'\'' {
            // A char literal ('{', '\n', '\u{7f}') or a lifetime ('a).
            let lit = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&x| x == b'\'')
                    .map(|p| i + 3 + p)
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 3)
            } else {
                None
            };
            match lit {
                Some(end) => {
                    for &x in &b[i..end] {
                        blank(&mut out, x);
                    }
                    i = end;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The module of a file: `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`.
fn module_of(rel: &Path) -> Module {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// Expands a path starting at `s[i..]` (after `crate::` or `super::`s) into
/// the full paths it names: `a::{b, c::{d}}` is `a::b` and `a::c::d`.
fn expand(s: &[u8], mut i: usize, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let mut path = prefix.to_vec();
    loop {
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        if s.get(i) == Some(&b'{') {
            i += 1;
            loop {
                while i < s.len() && (s[i].is_ascii_whitespace() || s[i] == b',') {
                    i += 1;
                }
                if i >= s.len() || s[i] == b'}' {
                    return i + 1;
                }
                i = expand(s, i, &path, out);
            }
        }
        let start = i;
        while i < s.len() && is_ident(s[i]) {
            i += 1;
        }
        if start == i {
            out.push(path);
            return i;
        }
        path.push(String::from_utf8_lossy(&s[start..i]).into_owned());
        let mut j = i;
        while j < s.len() && s[j].is_ascii_whitespace() {
            j += 1;
        }
        if s[j..].starts_with(b"::") {
            i = j + 2;
        } else {
            out.push(path);
            return i;
        }
    }
}

/// Every `crate::`/`super::` reference of one file whose module is `file_mod`,
/// as (module the reference is in, path it names, line).
fn references(code: &str, file_mod: &Module) -> Vec<(Module, Vec<String>, usize)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    // Inline `mod x {` blocks: (name, brace depth at which it closes).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut line = 1;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let word_start = i == 0 || !is_ident(b[i - 1]);
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c == b'{' {
            depth += 1;
            i += 1;
        } else if c == b'}' {
            depth = depth.saturating_sub(1);
            if inline.last().is_some_and(|(_, d)| *d == depth) {
                inline.pop();
            }
            i += 1;
        } else if word_start && b[i..].starts_with(b"mod ") {
            let mut j = i + 4;
            let start = j;
            while j < b.len() && is_ident(b[j]) {
                j += 1;
            }
            let name = String::from_utf8_lossy(&b[start..j]).into_owned();
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if b.get(j) == Some(&b'{') {
                inline.push((name, depth));
            }
            i = j;
        } else if word_start && (b[i..].starts_with(b"crate::") || b[i..].starts_with(b"super::")) {
            let mut here = file_mod.clone();
            here.extend(inline.iter().map(|(n, _)| n.clone()));
            let base = if b[i..].starts_with(b"crate::") {
                i += 7;
                Vec::new()
            } else {
                let mut up = here.clone();
                while b[i..].starts_with(b"super::") {
                    up.pop();
                    i += 7;
                }
                up
            };
            let mut paths = Vec::new();
            i = expand(b, i, &base, &mut paths);
            for p in paths {
                out.push((here.clone(), p, line));
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Reads `src/` (minus the binary) into its modules and reference edges.
fn scan(files: &BTreeMap<String, String>) -> Vec<Edge> {
    let mut modules: BTreeSet<Module> = BTreeSet::new();
    let mut refs = Vec::new();
    for (rel, text) in files {
        let m = module_of(Path::new(rel));
        modules.insert(m.clone());
        let code = code_only(text);
        for (here, path, line) in references(&code, &m) {
            modules.insert(here.clone());
            refs.push((rel.clone(), here, path, line));
        }
    }
    // `pub use m::{A, B};` in lib.rs: `crate::A` names module `m`.
    let mut root_items: BTreeMap<String, String> = BTreeMap::new();
    for l in files
        .get("lib.rs")
        .map(String::as_str)
        .unwrap_or("")
        .lines()
    {
        if let Some(rest) = l.trim().strip_prefix("pub use ") {
            let mut paths = Vec::new();
            expand(rest.as_bytes(), 0, &[], &mut paths);
            for p in paths.into_iter().filter(|p| p.len() > 1) {
                root_items.insert(p[p.len() - 1].clone(), p[0].clone());
            }
        }
    }
    let mut edges = Vec::new();
    for (file, from, mut path, line) in refs {
        if let Some(m) = path.first().and_then(|f| root_items.get(f)) {
            path.insert(0, m.clone());
        }
        // The longest prefix of the path that is a module is what it names.
        let Some(to) = (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains(p))
        else {
            continue;
        };
        edges.push(Edge {
            from,
            to,
            file,
            line,
        });
    }
    edges
}

/// The layer index of every top-level module.
fn layer_of() -> BTreeMap<&'static str, usize> {
    LAYERS
        .iter()
        .enumerate()
        .flat_map(|(i, l)| l.iter().map(move |m| (*m, i)))
        .collect()
}

/// Everything wrong with the edges: upward or same-layer imports between
/// top-level modules, modules missing from [`LAYERS`], and cycles among the
/// children of any module.
fn violations(edges: &[Edge]) -> Vec<String> {
    let layers = layer_of();
    let mut out = BTreeSet::new();
    // Sibling graphs: namespace -> (child a -> child b -> one example).
    let mut sib: BTreeMap<Module, BTreeMap<String, BTreeMap<String, String>>> = BTreeMap::new();
    for e in edges {
        let n = e.from.iter().zip(&e.to).take_while(|(a, b)| a == b).count();
        if n >= e.from.len() || n >= e.to.len() {
            continue; // into an ancestor or a descendant
        }
        let at = format!("{}:{}", e.file, e.line);
        if n == 0 {
            let (a, b) = (e.from[0].as_str(), e.to[0].as_str());
            match (layers.get(a), layers.get(b)) {
                (Some(la), Some(lb)) if la > lb => {}
                (Some(_), Some(_)) => {
                    out.insert(format!(
                        "{at}: `{a}` imports `crate::{}`, which is not in a lower layer",
                        e.to.join("::")
                    ));
                }
                _ => {
                    for m in [a, b].into_iter().filter(|m| !layers.contains_key(m)) {
                        out.insert(format!("{at}: module `{m}` is in no layer of LAYERS (tests/it/architecture.rs): place it"));
                    }
                }
            }
        }
        sib.entry(e.from[..n].to_vec())
            .or_default()
            .entry(e.from[n].clone())
            .or_default()
            .entry(e.to[n].clone())
            .or_insert(at);
    }
    // Among the top-level modules the layers already forbid every cycle.
    for (ns, g) in sib.iter().filter(|(ns, _)| !ns.is_empty()) {
        for cycle in cycles(g) {
            let steps: Vec<String> = cycle
                .iter()
                .zip(cycle.iter().cycle().skip(1))
                .map(|(a, b)| format!("{a} -> {b} ({})", g[a][b]))
                .collect();
            out.insert(format!(
                "import cycle in `{}`: {}",
                ns.join("::"),
                steps.join(", ")
            ));
        }
    }
    out.into_iter().collect()
}

/// One cycle through each strongly connected component of more than one node.
fn cycles(g: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = g.keys().chain(g.values().flat_map(|m| m.keys())).collect();
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for next in g.get(&n).into_iter().flat_map(|m| m.keys()) {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    for n in nodes {
        if done.contains(n) || !reach(n).contains(n) {
            continue;
        }
        // A shortest path back to `n` (breadth first), as the cycle shown.
        let mut prev: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([n.clone()]);
        'bfs: while let Some(x) = queue.pop_front() {
            for y in g.get(&x).into_iter().flat_map(|m| m.keys()) {
                if y == n {
                    prev.insert(format!("{n}#end"), x.clone());
                    break 'bfs;
                }
                if !prev.contains_key(y) {
                    prev.insert(y.clone(), x.clone());
                    queue.push_back(y.clone());
                }
            }
        }
        let mut path = vec![];
        let mut cur = prev[&format!("{n}#end")].clone();
        while &cur != n {
            path.push(cur.clone());
            cur = prev[&cur].clone();
        }
        path.push(n.clone());
        path.reverse();
        let comp: BTreeSet<String> = reach(n)
            .into_iter()
            .filter(|m| reach(m).contains(n))
            .collect();
        done.extend(comp);
        out.push(path);
    }
    out
}

/// The crate's library sources, by path relative to `src/`.
fn library_sources() -> BTreeMap<String, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut todo = vec![root.clone()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).expect("read src/") {
            let p = e.expect("dir entry").path();
            let rel = p.strip_prefix(&root).expect("under src").to_path_buf();
            if rel == Path::new("cli") || rel == Path::new("main.rs") {
                continue;
            }
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).expect("read source");
                out.insert(rel.to_string_lossy().into_owned(), text);
            }
        }
    }
    out
}

/// No module imports one above it or beside it in `LAYERS`, and no
/// folder's files import each other in a cycle (`scripts/test.sh` runs it).
#[test]
fn modules_import_only_lower_layers_and_nothing_in_a_cycle() {
    let files = library_sources();
    assert!(
        files.len() > 50 && files.contains_key("lib.rs"),
        "the scan found too few files: {}",
        files.len()
    );
    let edges = scan(&files);
    assert!(
        edges.len() > 300,
        "the scan found too few imports: {}",
        edges.len()
    );
    let bad = violations(&edges);
    assert!(
        bad.is_empty(),
        "{} layering violation(s) (see docs/ARCHITECTURE.md):\n{}",
        bad.len(),
        bad.join("\n")
    );
    // Every top-level module is placed in a layer.
    let layers = layer_of();
    for rel in files.keys() {
        let m = module_of(Path::new(rel));
        if let Some(top) = m.first() {
            assert!(
                layers.contains_key(top.as_str()),
                "src/{rel}: module `{top}` is in no layer of LAYERS: place it"
            );
        }
    }
}

/// The checker itself finds what it must: an upward import, a same-layer
/// import, a cycle among a folder's files (through `super::`, a group and
/// an inline module), and ignores paths in comments and strings.
#[test]
fn the_layer_check_finds_upward_imports_and_cycles() {
    let files: BTreeMap<String, String> = [
        ("lib.rs", "pub mod storage; pub mod job;\npub use job::{Env};"),
        (
            "storage/mod.rs",
            "// use crate::job::Env; is only a comment\nconst S: &str = \"crate::job::Env\";\nuse crate::job::Env;\n",
        ),
        ("job/mod.rs", "mod a; mod b;\nuse crate::storage::Store;\n"),
        ("job/a.rs", "use super::{b::Thing, a_helper};\n"),
        (
            "job/b.rs",
            "fn f() {}\n#[cfg(test)]\nmod tests {\n    use super::super::a::X;\n}\n",
        ),
        ("fault.rs", "use crate::units::Size;"),
        ("units.rs", ""),
        ("pipeline/mod.rs", "fn f() -> crate::Env { todo!() }"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let bad = violations(&scan(&files));
    assert_eq!(bad.len(), 4, "{bad:#?}");
    assert!(
        bad[0].starts_with("fault.rs:1: `fault` imports `crate::units`"),
        "{bad:#?}"
    );
    assert!(
        bad[1].starts_with("import cycle in `job`: a -> b (job/a.rs:1), b -> a (job/b.rs:4)"),
        "{bad:#?}"
    );
    assert!(
        bad[2].starts_with("pipeline/mod.rs:1: `pipeline` imports `crate::job`"),
        "{bad:#?}"
    );
    assert!(
        bad[3].starts_with("storage/mod.rs:3: `storage` imports `crate::job`"),
        "{bad:#?}"
    );
}

/// The engines: every folder of `src/source/` with a `KIND`.
fn engines(files: &BTreeMap<String, String>) -> Vec<String> {
    files
        .iter()
        .filter_map(|(rel, text)| {
            let e = rel.strip_prefix("source/")?.strip_suffix("/mod.rs")?;
            text.contains("pub const KIND: &str").then(|| e.to_string())
        })
        .collect()
}

/// Byte ranges of `#[cfg(test)]` modules in `code` (comments and strings blanked).
fn test_modules(code: &str) -> Vec<std::ops::Range<usize>> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(p) = code[from..].find("#[cfg(test)]") {
        let at = from + p;
        let Some(open) = code[at..].find('{').map(|o| at + o) else {
            break;
        };
        let mut depth = 0;
        let mut end = b.len();
        for (i, &c) in b.iter().enumerate().skip(open) {
            if c == b'{' {
                depth += 1;
            } else if c == b'}' {
                depth -= 1;
                if depth == 0 {
                    end = i + 1;
                    break;
                }
            }
        }
        out.push(at..end);
        from = end;
    }
    out
}

/// Where `text` (whose code, comments and strings blanked, is `code`) names
/// an engine outside the engine folders: a path into an engine's module
/// (`source::redis::…`), a config variant (`EngineConfig::Redis`), or a
/// match on an engine's kind (`== "redis"`, `"redis" =>`) outside test modules.
fn engine_names(text: &str, code: &str, engines: &[String]) -> Vec<(usize, String)> {
    let tests = test_modules(code);
    let line_of = |pos: usize| text[..pos].matches('\n').count() + 1;
    let mut out = Vec::new();
    for e in engines {
        let variant = format!("EngineConfig::{}{}", e[..1].to_uppercase(), &e[1..]);
        for pat in [format!("source::{e}::"), format!("source::{e};"), variant] {
            for (pos, _) in code.match_indices(&pat) {
                out.push((line_of(pos), pat.clone()));
            }
        }
        let lit = format!("\"{e}\"");
        for (pos, _) in text.match_indices(&lit) {
            // A literal: blanked in the code view, and not in a comment
            // (a comment's line in the code view is blank from its start).
            let in_string = code.as_bytes()[pos] == b' ';
            let line_start = text[..pos].rfind('\n').map_or(0, |n| n + 1);
            let commented = text[line_start..pos].contains("//");
            // Matched on: compared (`== "redis"`) or a match arm (`"redis" =>`).
            let before = text[..pos].trim_end();
            let after = text[pos + lit.len()..].trim_start();
            let matched = before.ends_with("==")
                || before.ends_with("!=")
                || after.starts_with("=>")
                || after.starts_with('|');
            if in_string && matched && !commented && !tests.iter().any(|r| r.contains(&pos)) {
                out.push((line_of(pos), lit.clone()));
            }
        }
    }
    out
}

/// Outside `src/source/<engine>/` no code names an engine: everything asks
/// the `dyn Engine` (adding an engine is one folder plus its line in the
/// `engines!` registration of `src/source/mod.rs`, which this allows).
/// `src/cli/wal.rs` is exempt: `wal-push`/`wal-fetch` are PostgreSQL's own
/// `archive_command`/`restore_command`, which PostgreSQL runs by name.
#[test]
fn no_code_outside_an_engine_folder_names_an_engine() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = library_sources();
    for e in std::fs::read_dir(root.join("cli")).expect("src/cli") {
        let p = e.expect("entry").path();
        if p.extension().is_some_and(|x| x == "rs") {
            let rel = format!("cli/{}", p.file_name().unwrap().to_string_lossy());
            files.insert(rel, std::fs::read_to_string(&p).expect("read"));
        }
    }
    let engines = engines(&files);
    assert_eq!(engines.len(), 4, "engines found: {engines:?}");
    let mut bad = Vec::new();
    for (rel, text) in &files {
        let in_engine = engines
            .iter()
            .any(|e| rel.starts_with(&format!("source/{e}/")));
        if in_engine || rel == "cli/wal.rs" {
            continue;
        }
        let mut text = text.clone();
        if rel == "source/mod.rs" {
            // The registration: the `engines!` invocation (it declares the modules too).
            let start = text.find("\nengines! {").expect("the engines! invocation");
            let end = start + text[start..].find("\n}\n").expect("its end");
            text.replace_range(start..end, &" ".repeat(end - start));
        }
        let code = code_only(&text);
        for (line, what) in engine_names(&text, &code, &engines) {
            bad.push(format!("src/{rel}:{line}: names an engine ({what})"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} place(s) outside src/source/<engine>/ name an engine; ask the dyn Engine instead:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// The engine check finds a module path, a config variant and a match on a
/// kind, and ignores comments, test modules and other uses of those words.
#[test]
fn the_engine_check_finds_names_and_ignores_comments_and_tests() {
    let text = "use crate::source::redis::canary;\n// source::mongo:: in a comment\nlet k = m.engine == \"postgres\";\nlet m = \"postgresql\";\nlet v = json!(\"command\");\nif let EngineConfig::Command(c) = x {}\n#[cfg(test)]\nmod tests {\n    const S: &str = \"redis\";\n}\n";
    let engines: Vec<String> = ["command", "mongo", "redis", "postgres"]
        .map(String::from)
        .to_vec();
    let found = engine_names(text, &code_only(text), &engines);
    let lines: Vec<usize> = found.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [6, 1, 3], "{found:?}");
}

/// `unsafe_code` is denied crate-wide; the one allowed exception is the
/// malloc tunable in `daemon/alloc.rs`. Any other `unsafe` (or a second
/// `allow(unsafe_code)`) in the library or the CLI fails here.
#[test]
fn unsafe_code_stands_only_in_the_allocator_setting() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = library_sources();
    for rel in ["main.rs", "cli"] {
        let p = root.join(rel);
        let paths: Vec<PathBuf> = if p.is_dir() {
            std::fs::read_dir(&p)
                .expect("read src/cli")
                .map(|e| e.expect("dir entry").path())
                .collect()
        } else {
            vec![p]
        };
        for f in paths
            .into_iter()
            .filter(|f| f.extension().is_some_and(|x| x == "rs"))
        {
            let rel = f
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            files.insert(rel, std::fs::read_to_string(&f).expect("read source"));
        }
    }
    let mut bad = Vec::new();
    for (rel, text) in &files {
        let code = code_only(text);
        let n = code.matches("unsafe ").count() + code.matches("unsafe{").count();
        let allowed = code.matches("allow(unsafe_code)").count();
        let ok = if rel == "daemon/alloc.rs" {
            n == 1 && allowed == 1
        } else {
            n == 0 && allowed == 0
        };
        if !ok {
            bad.push(format!(
                "src/{rel}: {n} unsafe block(s), {allowed} allow(unsafe_code)"
            ));
        }
    }
    assert!(
        files.contains_key("daemon/alloc.rs"),
        "the allocator setting moved: update this test"
    );
    assert!(
        bad.is_empty(),
        "unsafe code outside daemon/alloc.rs:\n{}",
        bad.join("\n")
    );
}
