//! Oplog replay: each captured oplog entry translated into ordinary
//! commands (`update` with upsert, `delete`, `create`, `createIndexes`,
//! `renameCollection`…) instead of one `applyOps` per entry.
//!
//! Why translate: the commands can be checked without a server (the plan is
//! a value, [`ReplayOp`]), the namespace mapping of the restore applies to
//! every name inside an entry (a rename's target, a view's `viewOn`, the
//! entries of a transaction), and servers without `applyOps` (nx-27017)
//! replay too. Coverage (the entry shapes of MongoDB 5.0–7.0):
//!
//! - `i` → an upsert by `_id` (mongorestore's oplog insert is an upsert: the
//!   dump may already hold the document); `d` → delete one by `_id`.
//! - `u` → `$v: 2` diffs (`u`/`i`/`d` fields, `s<field>` sub-diffs, array
//!   diffs with `a`, `u<idx>`, `s<idx>` and `l` resize) become `$set`/`$unset`
//!   plus a `$push {$each: [], $slice: n}` per truncated array; `$v: 1` and
//!   older operator updates are sent as they are; replacements replace.
//! - Transactions: `applyOps` under `admin.$cmd` is replayed entry by entry,
//!   nested `applyOps` included (`ui` dropped, names mapped). Large
//!   transactions (`partialTxn`) and prepared ones (`prepare`) are held per
//!   `lsid`/`txnNumber` until the entry that commits them (the final
//!   `applyOps`, `commitTransaction`); `abortTransaction` drops them.
//! - Index builds: `startIndexBuild`/`abortIndexBuild` are ignored,
//!   `commitIndexBuild` and `createIndexes` create the indexes (as mongorestore).
//! - Time-series: writes to `db.system.buckets.X` go to the buckets of the
//!   mapped `X` (never to the view); `create system.buckets.X` creates the
//!   time-series collection `X` with its `timeseries` options and the
//!   matching `create X viewOn system.buckets.X` is then skipped.
//! - `renameCollection`, `drop`, `dropIndexes`, `dropDatabase`, `collMod`,
//!   `convertToCapped`, views (`create` with `viewOn`): names mapped.
//! - Noops (`n`), `dbCheck` are skipped; any other entry is an error naming
//!   it (never skipped silently).

use std::collections::HashMap;

use mongodb::bson::{doc, Bson, Document, Timestamp};
use mongodb::Client;

use super::config::rename;

/// An oplog entry that cannot be replayed.
#[derive(Debug, thiserror::Error)]
#[error("oplog entry at {ts}: {message}")]
pub struct ReplayError {
    /// `Timestamp(t, i)` of the entry, for the operator.
    pub ts: String,
    /// What is wrong with it.
    pub message: String,
}

/// One command a replayed entry becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayOp {
    /// `update {q: filter, u: doc, upsert: true}`: an oplog insert.
    Upsert {
        /// Database.
        db: String,
        /// Collection.
        coll: String,
        /// `{_id: …}`.
        filter: Document,
        /// The whole document.
        doc: Document,
    },
    /// `update {q: filter, u: update, upsert}`.
    Update {
        /// Database.
        db: String,
        /// Collection.
        coll: String,
        /// The entry's `o2`.
        filter: Document,
        /// Operators or a replacement.
        update: Document,
        /// The entry's `b` (upsert).
        upsert: bool,
    },
    /// `delete {q: filter, limit: 1}`.
    Delete {
        /// Database.
        db: String,
        /// Collection.
        coll: String,
        /// `{_id: …}`.
        filter: Document,
    },
    /// A database command.
    Command {
        /// Database it runs on.
        db: String,
        /// The command.
        cmd: Document,
        /// Server error codes that mean "already done" (48 NamespaceExists,
        /// 26 NamespaceNotFound, 27 IndexNotFound).
        tolerate: Vec<i32>,
    },
}

/// The timestamp of an entry: a BSON Timestamp, or (the `oplog_namespace`
/// test hook, for servers without the Timestamp type) an int64 `t << 32 | i`.
pub fn entry_ts(e: &Document) -> Option<Timestamp> {
    match e.get("ts")? {
        Bson::Timestamp(t) => Some(*t),
        Bson::Int64(v) => Some(Timestamp {
            time: (*v as u64 >> 32) as u32,
            increment: *v as u32,
        }),
        _ => None,
    }
}

/// `ts` as the int64 the test hook stores.
pub fn ts_as_i64(ts: Timestamp) -> i64 {
    (((ts.time as u64) << 32) | ts.increment as u64) as i64
}

/// Which namespaces are replayed and where they go.
pub struct Replayer {
    ns_from: Option<String>,
    ns_to: Option<String>,
    selects: Box<dyn Fn(&str) -> bool + Send + Sync>,
    /// Transactions not committed yet: `lsid/txnNumber` → their entries.
    pending: HashMap<String, Vec<Document>>,
}

impl std::fmt::Debug for Replayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer")
            .field("ns_from", &self.ns_from)
            .field("ns_to", &self.ns_to)
            .field("pending", &self.pending.len())
            .finish()
    }
}

fn ts_text(e: &Document) -> String {
    entry_ts(e)
        .map(|t| format!("Timestamp({}, {})", t.time, t.increment))
        .unwrap_or_else(|| "(no ts)".into())
}

impl Replayer {
    /// A replayer renaming `ns_from` → `ns_to` (patterns with one `*`) and
    /// replaying only the namespaces `selects` (`db.coll`) accepts.
    pub fn new(
        ns_from: Option<String>,
        ns_to: Option<String>,
        selects: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Replayer {
        Replayer {
            ns_from,
            ns_to,
            selects: Box::new(selects),
            pending: HashMap::new(),
        }
    }

    /// Transactions seen but not committed (held, not applied).
    pub fn pending_transactions(&self) -> usize {
        self.pending.len()
    }

    fn map_ns(&self, ns: &str) -> (String, String) {
        let m = rename(self.ns_from.as_deref(), self.ns_to.as_deref(), ns);
        match m.split_once('.') {
            Some((d, c)) => (d.to_string(), c.to_string()),
            None => (m, String::new()),
        }
    }

    /// Where collection `coll` of `db` goes (buckets follow their time-series collection).
    fn map_coll(&self, db: &str, coll: &str) -> (String, String) {
        match coll.strip_prefix("system.buckets.") {
            Some(base) => {
                let (d, c) = self.map_ns(&format!("{db}.{base}"));
                (d, format!("system.buckets.{c}"))
            }
            None => self.map_ns(&format!("{db}.{coll}")),
        }
    }

    /// Whether `db.coll` is replayed.
    fn selected(&self, db: &str, coll: &str) -> bool {
        if matches!(db, "admin" | "local" | "config") || db.is_empty() || coll.is_empty() {
            return false;
        }
        if let Some(base) = coll.strip_prefix("system.buckets.") {
            return (self.selects)(&format!("{db}.{base}"));
        }
        if coll.starts_with("system.") && coll != "system.js" {
            return false;
        }
        (self.selects)(&format!("{db}.{coll}"))
    }

    fn selected_ns(&self, ns: &str) -> bool {
        ns.split_once('.')
            .is_some_and(|(d, c)| self.selected(d, c))
    }

    /// The commands entry `e` becomes (none for an entry outside the
    /// selection, a noop, or a transaction not yet committed).
    pub fn plan(&mut self, e: &Document) -> Result<Vec<ReplayOp>, ReplayError> {
        let err = |m: String| ReplayError {
            ts: ts_text(e),
            message: m,
        };
        let op = e.get_str("op").unwrap_or("");
        let ns = e.get_str("ns").unwrap_or("");
        match op {
            "n" => Ok(Vec::new()),
            "i" | "u" | "d" => self.crud(op, ns, e).map_err(err),
            "c" => self.command(ns, e).map_err(err),
            other => Err(err(format!(
                "unknown oplog operation `{other}` on `{ns}`; gsdr replays i, u, d, c and n entries"
            ))),
        }
    }

    fn crud(&self, op: &str, ns: &str, e: &Document) -> Result<Vec<ReplayOp>, String> {
        let Some((db, coll)) = ns.split_once('.') else {
            return Err(format!("`{op}` entry with namespace `{ns}`"));
        };
        if !self.selected(db, coll) {
            return Ok(Vec::new());
        }
        let (db, coll) = self.map_coll(db, coll);
        let o = e
            .get_document("o")
            .map_err(|_| format!("`{op}` entry on `{ns}` without an `o` document"))?;
        Ok(match op {
            "i" => {
                let id = o
                    .get("_id")
                    .ok_or_else(|| format!("insert on `{ns}` without an `_id`"))?;
                vec![ReplayOp::Upsert {
                    db,
                    coll,
                    filter: doc! {"_id": id.clone()},
                    doc: o.clone(),
                }]
            }
            "d" => vec![ReplayOp::Delete {
                db,
                coll,
                filter: o.clone(),
            }],
            _ => {
                let filter = e
                    .get_document("o2")
                    .map_err(|_| format!("update on `{ns}` without an `o2` filter"))?
                    .clone();
                let upsert = e.get_bool("b").unwrap_or(false);
                translate_update(o)?
                    .into_iter()
                    .enumerate()
                    .map(|(i, update)| ReplayOp::Update {
                        db: db.clone(),
                        coll: coll.clone(),
                        filter: filter.clone(),
                        update,
                        upsert: upsert && i == 0,
                    })
                    .collect()
            }
        })
    }

    fn txn_key(e: &Document) -> Option<String> {
        let lsid = e.get("lsid")?;
        let n = e.get("txnNumber").map(|b| b.to_string()).unwrap_or_default();
        Some(format!("{lsid}/{n}"))
    }

    fn inner(&mut self, entries: Vec<Document>) -> Result<Vec<ReplayOp>, String> {
        let mut out = Vec::new();
        for mut i in entries {
            i.remove("ui");
            out.extend(self.plan(&i).map_err(|e| e.message)?);
        }
        Ok(out)
    }

    fn command(&mut self, ns: &str, e: &Document) -> Result<Vec<ReplayOp>, String> {
        let db = ns.strip_suffix(".$cmd").unwrap_or(ns);
        let o = e
            .get_document("o")
            .map_err(|_| format!("command entry on `{ns}` without an `o` document"))?;
        let Some((name, arg)) = o.iter().next() else {
            return Err(format!("empty command entry on `{ns}`"));
        };
        let coll = arg.as_str().unwrap_or("");
        let tol = |v: &[i32]| v.to_vec();
        let cmd_on = |db: String, cmd: Document, t: &[i32]| ReplayOp::Command {
            db,
            cmd,
            tolerate: tol(t),
        };
        match name.as_str() {
            "applyOps" => {
                let Ok(list) = o.get_array("applyOps") else {
                    return Err("applyOps entry without an array".into());
                };
                let mut entries = Vec::new();
                for b in list {
                    match b {
                        Bson::Document(d) => entries.push(d.clone()),
                        _ => return Err("applyOps holds a non-document".into()),
                    }
                }
                let held = o.get_bool("partialTxn").unwrap_or(false)
                    || o.get_bool("prepare").unwrap_or(false);
                match Self::txn_key(e) {
                    Some(k) if held => {
                        self.pending.entry(k).or_default().extend(entries);
                        Ok(Vec::new())
                    }
                    Some(k) => {
                        let mut all = self.pending.remove(&k).unwrap_or_default();
                        all.extend(entries);
                        self.inner(all)
                    }
                    None => self.inner(entries),
                }
            }
            "commitTransaction" => {
                let k = Self::txn_key(e).unwrap_or_default();
                let all = self.pending.remove(&k).unwrap_or_default();
                self.inner(all)
            }
            "abortTransaction" => {
                if let Some(k) = Self::txn_key(e) {
                    self.pending.remove(&k);
                }
                Ok(Vec::new())
            }
            "startIndexBuild" | "abortIndexBuild" | "dbCheck" => Ok(Vec::new()),
            "renameCollection" => {
                let from = coll;
                let to = o.get_str("to").unwrap_or("");
                let (fs, ts) = (self.selected_ns(from), self.selected_ns(to));
                match (fs, ts) {
                    (false, false) => Ok(Vec::new()),
                    (true, false) => {
                        // Renamed out of the restored set: it leaves it.
                        let (d, c) = self.map_ns(from);
                        Ok(vec![cmd_on(d, doc! {"drop": c}, &[26])])
                    }
                    (false, true) => Err(format!(
                        "renames `{from}` (not restored) into `{to}` (restored); include `{from}` in the source's namespaces"
                    )),
                    (true, true) => {
                        let (fd, fc) = self.map_ns(from);
                        let (td, tc) = self.map_ns(to);
                        // `dropTarget` is the dropped target's UUID (4.2+) or a bool.
                        let drop_target = !matches!(
                            o.get("dropTarget"),
                            None | Some(Bson::Boolean(false))
                        );
                        Ok(vec![cmd_on(
                            "admin".into(),
                            doc! {"renameCollection": format!("{fd}.{fc}"), "to": format!("{td}.{tc}"), "dropTarget": drop_target},
                            &[],
                        )])
                    }
                }
            }
            "dropDatabase" => {
                let probe = format!("{db}.gsdr_probe");
                if !self.selected_ns(&probe) {
                    return Ok(Vec::new());
                }
                let (d, _) = self.map_ns(&probe);
                Ok(vec![cmd_on(d, doc! {"dropDatabase": 1}, &[])])
            }
            _ if !self.selected(db, coll) => Ok(Vec::new()),
            "create" => {
                if let Some(base) = coll.strip_prefix("system.buckets.") {
                    let (d, c) = self.map_ns(&format!("{db}.{base}"));
                    let mut cmd = doc! {"create": c};
                    if let Ok(ts) = o.get_document("timeseries") {
                        let mut ts = ts.clone();
                        // Internal: the server derives it from the granularity.
                        ts.remove("bucketMaxSpanSeconds");
                        cmd.insert("timeseries", ts);
                    }
                    if let Some(x) = o.get("expireAfterSeconds") {
                        cmd.insert("expireAfterSeconds", x.clone());
                    }
                    return Ok(vec![cmd_on(d, cmd, &[48])]);
                }
                let (d, c) = self.map_coll(db, coll);
                let mut cmd = doc! {"create": &c};
                if let Ok(on) = o.get_str("viewOn") {
                    if on == format!("system.buckets.{coll}") {
                        return Ok(Vec::new()); // the time-series view, made with its buckets
                    }
                    let (_, von) = self.map_ns(&format!("{db}.{on}"));
                    cmd.insert("viewOn", von);
                }
                for (k, v) in o.iter().skip(1) {
                    if !matches!(k.as_str(), "idIndex" | "viewOn" | "uuid") {
                        cmd.insert(k.clone(), v.clone());
                    }
                }
                Ok(vec![cmd_on(d, cmd, &[48])])
            }
            "drop" => {
                let (d, c) = self.map_coll(db, coll);
                Ok(vec![cmd_on(d, doc! {"drop": c}, &[26])])
            }
            "createIndexes" => {
                let (d, c) = self.map_coll(db, coll);
                let mut spec = o.clone();
                spec.remove("createIndexes");
                Ok(vec![cmd_on(
                    d,
                    doc! {"createIndexes": c, "indexes": [spec]},
                    &[],
                )])
            }
            "commitIndexBuild" => {
                let (d, c) = self.map_coll(db, coll);
                let specs = o
                    .get_array("indexes")
                    .map_err(|_| "commitIndexBuild without `indexes`".to_string())?;
                Ok(vec![cmd_on(
                    d,
                    doc! {"createIndexes": c, "indexes": specs.clone()},
                    &[],
                )])
            }
            "dropIndexes" | "deleteIndex" | "deleteIndexes" => {
                let (d, c) = self.map_coll(db, coll);
                let index = o.get("index").cloned().unwrap_or(Bson::String("*".into()));
                Ok(vec![cmd_on(
                    d,
                    doc! {"dropIndexes": c, "index": index},
                    &[26, 27],
                )])
            }
            "collMod" | "convertToCapped" | "emptycapped" => {
                let (d, c) = self.map_coll(db, coll);
                let mut cmd = doc! {name.as_str(): c};
                for (k, v) in o.iter().skip(1) {
                    cmd.insert(k.clone(), v.clone());
                }
                Ok(vec![cmd_on(d, cmd, &[])])
            }
            other => Err(format!(
                "the command `{other}` on `{ns}` is not replayed by gsdr; restore to a time before it"
            )),
        }
    }
}

/// An update entry's `o` as the update documents to send, in order.
pub fn translate_update(o: &Document) -> Result<Vec<Document>, String> {
    let v = o.get("$v").and_then(|v| match v {
        Bson::Int32(i) => Some(*i as i64),
        Bson::Int64(i) => Some(*i),
        Bson::Double(d) => Some(*d as i64),
        _ => None,
    });
    if v == Some(2) {
        let diff = o
            .get_document("diff")
            .map_err(|_| "a `$v: 2` update without `diff`".to_string())?;
        let mut acc = DiffAcc::default();
        walk_object(diff, "", &mut acc)?;
        let mut first = Document::new();
        if !acc.set.is_empty() {
            first.insert("$set", acc.set);
        }
        if !acc.unset.is_empty() {
            first.insert("$unset", acc.unset);
        }
        let mut out = Vec::new();
        if !first.is_empty() {
            out.push(first);
        }
        for (path, n) in acc.truncate {
            out.push(doc! {"$push": {path: {"$each": [], "$slice": n}}});
        }
        return Ok(out);
    }
    if o.keys().any(|k| k.starts_with('$')) {
        let mut u = o.clone();
        u.remove("$v");
        return Ok(if u.is_empty() { Vec::new() } else { vec![u] });
    }
    Ok(vec![o.clone()])
}

#[derive(Default)]
struct DiffAcc {
    set: Document,
    unset: Document,
    truncate: Vec<(String, i64)>,
}

fn join(prefix: &str, f: &str) -> String {
    if prefix.is_empty() {
        f.to_string()
    } else {
        format!("{prefix}.{f}")
    }
}

fn walk_object(diff: &Document, prefix: &str, acc: &mut DiffAcc) -> Result<(), String> {
    if diff.get_bool("a").unwrap_or(false) {
        return walk_array(diff, prefix, acc);
    }
    for (k, v) in diff {
        match k.as_str() {
            "u" | "i" => {
                let d = v
                    .as_document()
                    .ok_or_else(|| format!("diff section `{k}` is not a document"))?;
                for (f, val) in d {
                    acc.set.insert(join(prefix, f), val.clone());
                }
            }
            "d" => {
                let d = v
                    .as_document()
                    .ok_or_else(|| "diff section `d` is not a document".to_string())?;
                for (f, _) in d {
                    acc.unset.insert(join(prefix, f), "");
                }
            }
            _ if k.starts_with('s') && k.len() > 1 => {
                let d = v
                    .as_document()
                    .ok_or_else(|| format!("sub-diff `{k}` is not a document"))?;
                walk_object(d, &join(prefix, &k[1..]), acc)?;
            }
            other => return Err(format!("unknown `$v: 2` diff section `{other}`")),
        }
    }
    Ok(())
}

fn walk_array(diff: &Document, prefix: &str, acc: &mut DiffAcc) -> Result<(), String> {
    for (k, v) in diff {
        match k.as_str() {
            "a" => {}
            "l" => {
                let n = match v {
                    Bson::Int32(i) => *i as i64,
                    Bson::Int64(i) => *i,
                    _ => return Err("array resize `l` is not an integer".into()),
                };
                acc.truncate.push((prefix.to_string(), n));
            }
            _ if k.starts_with('u') => {
                acc.set.insert(join(prefix, &k[1..]), v.clone());
            }
            _ if k.starts_with('s') => {
                let d = v
                    .as_document()
                    .ok_or_else(|| format!("array sub-diff `{k}` is not a document"))?;
                walk_object(d, &join(prefix, &k[1..]), acc)?;
            }
            other => return Err(format!("unknown array diff section `{other}`")),
        }
    }
    Ok(())
}

/// Why applying a replayed command failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The server refused the command.
    #[error("{what}: {source}")]
    Server {
        /// The command, in words.
        what: String,
        /// The driver's error.
        #[source]
        source: mongodb::error::Error,
    },
    /// The server accepted the command but reported a write error.
    #[error("{what}: {message}")]
    Write {
        /// The command, in words.
        what: String,
        /// The write error.
        message: String,
    },
}

impl ReplayOp {
    /// The command, in words (no document contents).
    pub fn describe(&self) -> String {
        match self {
            ReplayOp::Upsert { db, coll, .. } => format!("upserting a document into `{db}.{coll}`"),
            ReplayOp::Update { db, coll, .. } => format!("updating a document of `{db}.{coll}`"),
            ReplayOp::Delete { db, coll, .. } => format!("deleting a document of `{db}.{coll}`"),
            ReplayOp::Command { db, cmd, .. } => format!(
                "`{}` on `{db}`",
                cmd.keys().next().map(String::as_str).unwrap_or("?")
            ),
        }
    }

    /// Runs the command on `client`.
    pub async fn apply(&self, client: &Client) -> Result<(), ApplyError> {
        let what = self.describe();
        let (db, cmd, tolerate): (&str, Document, &[i32]) = match self {
            ReplayOp::Upsert {
                db,
                coll,
                filter,
                doc,
            } => (
                db,
                doc! {"update": coll, "updates": [{"q": filter, "u": doc, "upsert": true}]},
                &[],
            ),
            ReplayOp::Update {
                db,
                coll,
                filter,
                update,
                upsert,
            } => (
                db,
                doc! {"update": coll, "updates": [{"q": filter, "u": update, "upsert": *upsert}]},
                &[],
            ),
            ReplayOp::Delete { db, coll, filter } => (
                db,
                doc! {"delete": coll, "deletes": [{"q": filter, "limit": 1}]},
                &[],
            ),
            ReplayOp::Command { db, cmd, tolerate } => (db, cmd.clone(), tolerate),
        };
        match client.database(db).run_command(cmd).await {
            Ok(reply) => match reply.get_array("writeErrors") {
                Ok(errs) if !errs.is_empty() => Err(ApplyError::Write {
                    what,
                    message: errs
                        .iter()
                        .filter_map(|e| e.as_document()?.get_str("errmsg").ok())
                        .collect::<Vec<_>>()
                        .join("; "),
                }),
                _ => Ok(()),
            },
            Err(e) if server_code(&e).is_some_and(|c| tolerate.contains(&c)) => Ok(()),
            Err(source) => Err(ApplyError::Server { what, source }),
        }
    }
}

fn server_code(e: &mongodb::error::Error) -> Option<i32> {
    match &*e.kind {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    //! The recorded fixture `tests/data/mongo-oplog/fixture-5.0-7.0.json`
    //! (entry shapes of MongoDB 5.0–7.0, written from the documentation)
    //! planned into commands.
    use super::*;

    fn fixture() -> Vec<Document> {
        let v: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/data/mongo-oplog/fixture-5.0-7.0.json"
        ))
        .unwrap();
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| match Bson::try_from(e.clone()).unwrap() {
                Bson::Document(d) => d,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn plan_all(r: &mut Replayer) -> Vec<ReplayOp> {
        fixture()
            .iter()
            .flat_map(|e| r.plan(e).unwrap())
            .collect()
    }

    #[test]
    fn v2_diffs_become_set_unset_and_a_truncation() {
        let o = doc! {"$v": 2, "diff": {"u": {"qty": 7}, "i": {"price": 2.5}, "saddr": {"u": {"city": "Bergen"}, "d": {"zip": false}}, "stags": {"a": true, "l": 2, "u1": "B", "s0": {"u": {"x": 1}}}}};
        let u = translate_update(&o).unwrap();
        assert_eq!(
            u,
            vec![
                doc! {"$set": {"qty": 7, "price": 2.5, "addr.city": "Bergen", "tags.1": "B", "tags.0.x": 1}, "$unset": {"addr.zip": ""}},
                doc! {"$push": {"tags": {"$each": [], "$slice": 2i64}}},
            ]
        );
        assert_eq!(
            translate_update(&doc! {"$v": 1, "$set": {"a": 1}}).unwrap(),
            vec![doc! {"$set": {"a": 1}}]
        );
        assert_eq!(
            translate_update(&doc! {"_id": 1, "a": 2}).unwrap(),
            vec![doc! {"_id": 1, "a": 2}]
        );
    }

    #[test]
    fn fixture_plans_transactions_index_builds_timeseries_and_renames() {
        let mut r = Replayer::new(Some("*".into()), Some("r_*".into()), |_| true);
        let ops = plan_all(&mut r);
        assert_eq!(r.pending_transactions(), 0, "every transaction ended");
        let upserted: Vec<Bson> = ops
            .iter()
            .filter_map(|o| match o {
                ReplayOp::Upsert { db, coll, doc, .. } if db == "r_shop" && coll == "orders" => {
                    doc.get("_id").cloned()
                }
                _ => None,
            })
            .collect();
        // 1–3 plain, 4 in a transaction, 5–6 a partialTxn chain, 8 prepared
        // and committed; 7 prepared and aborted.
        let want: Vec<Bson> = [1, 2, 3, 4, 5, 6, 8].iter().map(|i| Bson::Int32(*i)).collect();
        assert_eq!(upserted, want);
        let cmds: Vec<(String, Document)> = ops
            .iter()
            .filter_map(|o| match o {
                ReplayOp::Command { db, cmd, .. } => Some((db.clone(), cmd.clone())),
                _ => None,
            })
            .collect();
        let names: Vec<String> = cmds
            .iter()
            .map(|(d, c)| format!("{d}:{}", c.keys().next().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                "r_shop:create",
                "r_shop:createIndexes", // commitIndexBuild (startIndexBuild ignored)
                "r_shop:createIndexes", // single-index createIndexes
                "r_shop:create",
                "admin:renameCollection",
                "r_shop:create",
                "r_shop:drop",
                "r_shop:dropIndexes",
                "r_metrics:create", // time-series, once (its view skipped)
                "r_metrics:create", // the view `hot`
            ]
        );
        let rename = &cmds[4].1;
        assert_eq!(rename.get_str("renameCollection").unwrap(), "r_shop.tmp");
        assert_eq!(rename.get_str("to").unwrap(), "r_shop.archived");
        let ts = &cmds[8].1;
        assert_eq!(ts.get_str("create").unwrap(), "weather");
        assert_eq!(
            ts.get_document("timeseries").unwrap(),
            &doc! {"timeField": "at", "metaField": "sensor", "granularity": "seconds"}
        );
        assert_eq!(cmds[9].1.get_str("viewOn").unwrap(), "weather");
        assert!(cmds[0].1.get("idIndex").is_none());
        // Bucket writes go to the buckets, never to the view.
        let buckets: Vec<&ReplayOp> = ops
            .iter()
            .filter(|o| matches!(o, ReplayOp::Upsert { coll, .. } | ReplayOp::Update { coll, .. } if coll.starts_with("system.buckets.")))
            .collect();
        assert_eq!(buckets.len(), 2);
        for b in buckets {
            match b {
                ReplayOp::Upsert { db, coll, .. } | ReplayOp::Update { db, coll, .. } => {
                    assert_eq!((db.as_str(), coll.as_str()), ("r_metrics", "system.buckets.weather"))
                }
                _ => unreachable!(),
            }
        }
        // No `ui` survives, anywhere.
        assert!(!format!("{ops:?}").contains("\"ui\""));
    }

    #[test]
    fn selection_and_unknown_entries() {
        let mut r = Replayer::new(None, None, |ns| ns.starts_with("shop."));
        let ops = plan_all(&mut r);
        assert!(ops.iter().all(|o| !o.describe().contains("metrics")));
        let bad = doc! {"op": "c", "ns": "shop.$cmd", "o": {"importCollection": "x"}, "ts": Timestamp { time: 5, increment: 1 }};
        let e = r.plan(&bad).unwrap_err().to_string();
        assert!(e.contains("Timestamp(5, 1)") && e.contains("importCollection"), "{e}");
        let bad = doc! {"op": "x", "ns": "shop.a"};
        assert!(r.plan(&bad).is_err());
        // A rename from outside the selection into it cannot be replayed.
        let mut r = Replayer::new(None, None, |ns| ns == "shop.b");
        let into = doc! {"op": "c", "ns": "admin.$cmd", "o": {"renameCollection": "shop.a", "to": "shop.b"}};
        assert!(r.plan(&into).is_err());
        let mut r = Replayer::new(None, None, |ns| ns == "shop.a");
        assert_eq!(
            r.plan(&into).unwrap(),
            vec![ReplayOp::Command {
                db: "shop".into(),
                cmd: doc! {"drop": "a"},
                tolerate: vec![26]
            }]
        );
    }

    #[test]
    fn int64_test_hook_timestamps_round_trip() {
        let ts = Timestamp {
            time: 1_700_000_000,
            increment: 7,
        };
        let d = doc! {"ts": ts_as_i64(ts)};
        assert_eq!(entry_ts(&d), Some(ts));
        assert_eq!(entry_ts(&doc! {"ts": ts}), Some(ts));
    }
}
