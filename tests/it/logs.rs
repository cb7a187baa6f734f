//! `--log-format json`: every stderr line of a real run is one JSON object
//! whose keys are unique (serde_json alone keeps the last of repeated keys).

use std::collections::HashSet;
use std::fmt;
use std::process::Output;

use assert_cmd::Command;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::cli::Fixture;
use crate::support::gsdr_bin;

/// A JSON value that fails to deserialize if any object repeats a key.
struct Unique;

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Unique, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Unique, A::Error> {
        while s.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Unique, A::Error> {
        let mut seen = HashSet::new();
        while let Some(k) = m.next_key::<String>()? {
            if !seen.insert(k.clone()) {
                return Err(de::Error::custom(format!("duplicate key `{k}`")));
            }
            m.next_value::<Unique>()?;
        }
        Ok(Unique)
    }
}

/// Asserts every stderr line is a JSON object with unique keys and a
/// `module`; returns the lines parsed.
fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    let text = String::from_utf8_lossy(&o.stderr);
    text.lines()
        .map(|l| {
            serde_json::from_str::<Unique>(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}"));
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["module"].is_string(), "no module in {l}");
            assert!(v["level"].is_string(), "no level in {l}");
            v
        })
        .collect()
}

/// Runs gsdr with info-level JSON logs.
fn gsdr_logged(f: &Fixture, args: &[&str]) -> Output {
    let out = Command::new(gsdr_bin())
        .arg("--policy")
        .arg(&f.policy)
        .args(["--log-format", "json"])
        .args(args)
        .env("GSDR_LOG", "debug")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gsdr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn json_log_lines_have_unique_keys() {
    let data = crate::support::tempdir();
    let input = data.path().join("in.txt");
    std::fs::write(&input, "glucose 104 mg/dL\n".repeat(1000)).unwrap();
    let f = Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n\
         [sources.data]\nkind = \"command\"\n[sources.data.command]\nargv = [\"cat\", \"{}\"]\n",
        input.display()
    ));
    // The duplicate-key checker itself rejects what the old format wrote.
    assert!(serde_json::from_str::<Unique>(r#"{"target":"a","target":"b"}"#).is_err());

    let mut lines = json_lines(&gsdr_logged(&f, &["backup"]));
    let list = f.gsdr_json(&["list"]);
    let id = list["backups"][0]["id"].as_str().unwrap().to_string();
    lines.extend(json_lines(&gsdr_logged(&f, &["verify", &id])));
    let out = f.dir.path().join("restored.txt");
    lines.extend(json_lines(&gsdr_logged(
        &f,
        &["restore", &id, "--to-file", out.to_str().unwrap()],
    )));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&input).unwrap());
    assert!(
        lines
            .iter()
            .any(|v| v["module"] == "gsdr::job::backup" && v["event"] == "backup_committed"),
        "no backup_committed event from gsdr::job::backup in {lines:?}"
    );
}

/// A Redis restore's event names the server under `uri`; the module has its
/// own key (the two used to share `target`).
#[test]
fn redis_restore_log_names_the_server_under_uri() {
    use crate::support::redis::{Opts, RedisServer};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let src = RedisServer::start(Opts::default());
    let dst = RedisServer::start(Opts::default());
    rt.block_on(async {
        let mut c = src.conn(0).await;
        redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query_async::<()>(&mut c)
            .await
            .unwrap();
    });
    let f = Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n[defaults]\ntarget = \"local\"\n\
         [sources.cache]\nkind = \"redis\"\n[sources.cache.redis]\naddr = \"{}\"\n",
        src.addr()
    ));
    let mut lines = json_lines(&gsdr_logged(&f, &["backup", "--source", "cache"]));
    let url = dst.url(0);
    lines.extend(json_lines(&gsdr_logged(
        &f,
        &[
            "restore", "--source", "cache", "--to", &url, "--flush", "--yes",
        ],
    )));
    let done = lines
        .iter()
        .find(|v| v["event"] == "redis_restore_finished")
        .unwrap_or_else(|| panic!("no redis_restore_finished in {lines:?}"));
    assert_eq!(done["module"], "gsdr::source::redis::restore");
    assert!(
        done["uri"].as_str().unwrap().starts_with("redis://"),
        "{done}"
    );
    assert_eq!(done["keys"], 1, "{done}");
}
