//! A FAKE Kubernetes API server for Velero's `velero.io/v1` resources. It is
//! not Kubernetes and not Velero: there is no Kubernetes API server on these
//! machines (none in Debian, PyPI or npm), so this in-process axum server on a
//! loopback port serves exactly the endpoints kube-rs uses for these
//! resources, and plays Velero's part by a per-test script:
//!
//! - `POST   /apis/velero.io/v1/namespaces/{ns}/{plural}`          create (201, 409 if it exists)
//! - `GET    /apis/velero.io/v1/namespaces/{ns}/{plural}`          list (with `metadata.resourceVersion`)
//! - `GET    /apis/velero.io/v1/namespaces/{ns}/{plural}?watch=true&resourceVersion=N&fieldSelector=metadata.name%3DX&timeoutSeconds=S`
//!   watch: one JSON event per line (`{"type":"MODIFIED","object":{…}}`) for
//!   every change after resourceVersion N, until `timeoutSeconds`
//! - `GET    /apis/velero.io/v1/namespaces/{ns}/{plural}/{name}`   get (404 `Status` if missing)
//! - `GET    /download/{name}`                                     a DownloadRequest's "presigned" URL
//! - `GET    /api/v1/namespaces/{name}`, `DELETE` the same        core namespaces (drill scratch
//!   namespaces): 404 unless added with [`FakeKube::add_namespace`]; a delete answers the
//!   namespace `Terminating` and removes it. A created Restore adds the
//!   namespaces of its `namespaceMapping`, as Velero creates them.
//!
//! Every object gets a `resourceVersion` from one counter, as in etcd. When a
//! Backup or Restore is created, the fake takes the next [`Script`] queued for
//! that plural and applies its status steps after their delays (no script: the
//! object never gets a status, like a Velero that is not running). A created
//! DownloadRequest is `Processed` after a few milliseconds with a `downloadURL`
//! on this server serving the gzip log registered with [`FakeKube::set_log`].
//! Everything gsdr POSTs is kept for contract checks ([`FakeKube::created`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// One status change: after `after`, the object's `status` becomes `status`.
#[derive(Clone, Debug)]
pub struct Step {
    /// Delay since the previous step (or since creation).
    pub after: Duration,
    /// The whole new `status`.
    pub status: Value,
}

/// The status steps one created object goes through.
pub type Script = Vec<Step>;

/// A step after `ms` milliseconds.
pub fn step(ms: u64, status: Value) -> Step {
    Step {
        after: Duration::from_millis(ms),
        status,
    }
}

#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    plural: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    objects: BTreeMap<(String, String), Value>,
    history: Vec<Event>,
    created: Vec<(String, Value)>,
    scripts: HashMap<String, VecDeque<Script>>,
    logs: HashMap<String, Vec<u8>>,
    requests: Vec<String>,
    gone_once: bool,
    namespaces: std::collections::BTreeSet<String>,
}

struct Shared {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
    base: String,
}

/// The running fake; stops when dropped.
pub struct FakeKube {
    /// Base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn kind_of(plural: &str) -> &'static str {
    match plural {
        "backups" => "Backup",
        "restores" => "Restore",
        "downloadrequests" => "DownloadRequest",
        "deletebackuprequests" => "DeleteBackupRequest",
        "backupstoragelocations" => "BackupStorageLocation",
        "schedules" => "Schedule",
        _ => "Unknown",
    }
}

fn status_error(code: u16, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (StatusCode::from_u16(code).unwrap(), Json(body)).into_response()
}

impl FakeKube {
    /// Starts the fake on a free loopback port.
    pub async fn start() -> FakeKube {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            events,
            base: url.clone(),
        });
        let prefix = "/apis/velero.io/v1/namespaces/{ns}/{plural}";
        let app = Router::new()
            .route(prefix, get(list_or_watch).post(create))
            .route(&format!("{prefix}/{{name}}"), get(get_one))
            .route("/download/{name}", get(download))
            .route(
                "/api/v1/namespaces/{name}",
                get(get_namespace).delete(delete_namespace),
            )
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeKube { url, shared, task }
    }

    /// Queues the script for the next object created under `plural` (`backups`, `restores`).
    pub fn script(&self, plural: &str, script: Script) {
        self.shared
            .inner
            .lock()
            .unwrap()
            .scripts
            .entry(plural.to_string())
            .or_default()
            .push_back(script);
    }

    /// Serves `text` (gzipped, as Velero stores logs) for the log of Backup/Restore `target` (`*`: any).
    pub fn set_log(&self, target: &str, text: &str) {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        self.shared
            .inner
            .lock()
            .unwrap()
            .logs
            .insert(target.to_string(), gz.finish().unwrap());
    }

    /// Makes the next watch answer `410 Gone` (resourceVersion too old), as an API server does after compaction.
    pub fn expire_next_watch(&self) {
        self.shared.inner.lock().unwrap().gone_once = true;
    }

    /// Puts an object in place without going through gsdr (storage locations, backups made elsewhere).
    pub fn insert(&self, plural: &str, object: Value) {
        let mut inner = self.shared.inner.lock().unwrap();
        store(&self.shared, &mut inner, plural, object, "ADDED");
    }

    /// Makes namespace `name` exist.
    pub fn add_namespace(&self, name: &str) {
        self.shared
            .inner
            .lock()
            .unwrap()
            .namespaces
            .insert(name.to_string());
    }

    /// Every object POSTed, as received: (plural, body).
    pub fn created(&self) -> Vec<(String, Value)> {
        self.shared.inner.lock().unwrap().created.clone()
    }

    /// Every request: `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.shared.inner.lock().unwrap().requests.clone()
    }

    /// The current object, if any.
    pub fn object(&self, plural: &str, name: &str) -> Option<Value> {
        self.shared
            .inner
            .lock()
            .unwrap()
            .objects
            .get(&(plural.to_string(), name.to_string()))
            .cloned()
    }
}

/// Stamps a new resourceVersion, stores the object and tells watchers.
fn store(
    shared: &Shared,
    inner: &mut Inner,
    plural: &str,
    mut object: Value,
    kind: &'static str,
) -> Value {
    inner.rv += 1;
    let rv = inner.rv;
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    let name = object["metadata"]["name"].as_str().unwrap().to_string();
    inner
        .objects
        .insert((plural.to_string(), name), object.clone());
    let ev = Event {
        rv,
        plural: plural.to_string(),
        kind,
        object: object.clone(),
    };
    inner.history.push(ev.clone());
    let _ = shared.events.send(ev);
    object
}

fn log_request(shared: &Shared, line: String) {
    shared.inner.lock().unwrap().requests.push(line);
}

fn query_string(q: &HashMap<String, String>) -> String {
    let mut v: Vec<_> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
    v.sort();
    v.join("&")
}

async fn create(
    State(shared): State<Arc<Shared>>,
    Path((ns, plural)): Path<(String, String)>,
    Json(mut body): Json<Value>,
) -> Response {
    log_request(
        &shared,
        format!("POST /apis/velero.io/v1/namespaces/{ns}/{plural}"),
    );
    let Some(name) = body["metadata"]["name"].as_str().map(str::to_string) else {
        return status_error(422, "Invalid", "metadata.name: Required value".into());
    };
    let stored = {
        let mut inner = shared.inner.lock().unwrap();
        inner.created.push((plural.clone(), body.clone()));
        if inner.objects.contains_key(&(plural.clone(), name.clone())) {
            return status_error(
                409,
                "AlreadyExists",
                format!("{plural}.velero.io \"{name}\" already exists"),
            );
        }
        body["metadata"]["uid"] = json!(format!("00000000-0000-0000-0000-{:012}", inner.rv + 1));
        body["metadata"]["creationTimestamp"] =
            json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string());
        body["metadata"]["generation"] = json!(1);
        let stored = store(&shared, &mut inner, &plural, body, "ADDED");
        let script = inner.scripts.get_mut(&plural).and_then(VecDeque::pop_front);
        if plural == "restores" {
            // Velero creates the mapped namespaces it restores into.
            if let Some(m) = stored["spec"]["namespaceMapping"].as_object() {
                let to: Vec<String> = m
                    .values()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect();
                inner.namespaces.extend(to);
            }
        }
        if plural == "downloadrequests" {
            let target = stored["spec"]["target"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let status = json!({
                "phase": "Processed",
                // Looks like a presigned URL: gsdr must never log it.
                "downloadURL": format!("{}/download/{target}?X-Amz-Signature=not-a-real-secret", shared.base),
                "expiration": "2099-01-01T00:00:00Z",
            });
            run_script(
                shared.clone(),
                plural.clone(),
                name.clone(),
                vec![step(10, status)],
            );
        } else if let Some(script) = script {
            run_script(shared.clone(), plural.clone(), name.clone(), script);
        }
        stored
    };
    (StatusCode::CREATED, Json(stored)).into_response()
}

fn run_script(shared: Arc<Shared>, plural: String, name: String, script: Script) {
    tokio::spawn(async move {
        for s in script {
            tokio::time::sleep(s.after).await;
            let mut inner = shared.inner.lock().unwrap();
            let Some(mut obj) = inner.objects.get(&(plural.clone(), name.clone())).cloned() else {
                return;
            };
            obj["status"] = s.status;
            store(&shared, &mut inner, &plural, obj, "MODIFIED");
        }
    });
}

async fn get_one(
    State(shared): State<Arc<Shared>>,
    Path((ns, plural, name)): Path<(String, String, String)>,
) -> Response {
    log_request(
        &shared,
        format!("GET /apis/velero.io/v1/namespaces/{ns}/{plural}/{name}"),
    );
    match shared
        .inner
        .lock()
        .unwrap()
        .objects
        .get(&(plural.clone(), name.clone()))
    {
        Some(o) => Json(o.clone()).into_response(),
        None => status_error(
            404,
            "NotFound",
            format!("{plural}.velero.io \"{name}\" not found"),
        ),
    }
}

async fn download(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    log_request(&shared, format!("GET /download/{name}"));
    let inner = shared.inner.lock().unwrap();
    match inner.logs.get(&name).or_else(|| inner.logs.get("*")) {
        Some(b) => (StatusCode::OK, b.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "NoSuchKey").into_response(),
    }
}

async fn list_or_watch(
    State(shared): State<Arc<Shared>>,
    Path((ns, plural)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    log_request(
        &shared,
        format!(
            "GET /apis/velero.io/v1/namespaces/{ns}/{plural}?{}",
            query_string(&q)
        ),
    );
    if q.get("watch").map(String::as_str) == Some("true")
        || q.get("watch").map(String::as_str) == Some("1")
    {
        return watch(shared, plural, q);
    }
    let inner = shared.inner.lock().unwrap();
    let items: Vec<Value> = inner
        .objects
        .iter()
        .filter(|((p, _), _)| *p == plural)
        .map(|(_, o)| o.clone())
        .collect();
    Json(json!({
        "apiVersion": "velero.io/v1",
        "kind": format!("{}List", kind_of(&plural)),
        "metadata": { "resourceVersion": inner.rv.to_string() },
        "items": items,
    }))
    .into_response()
}

fn watch(shared: Arc<Shared>, plural: String, q: HashMap<String, String>) -> Response {
    let since: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let name = q
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("metadata.name="))
        .map(str::to_string);
    let timeout = Duration::from_secs(
        q.get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(290),
    );
    let matches = {
        let plural = plural.clone();
        move |e: &Event| {
            e.plural == plural
                && name
                    .as_deref()
                    .is_none_or(|n| e.object["metadata"]["name"] == n)
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::convert::Infallible>>(64);
    let line = |ty: &str, object: &Value| {
        let mut s = serde_json::to_string(&json!({ "type": ty, "object": object })).unwrap();
        s.push('\n');
        Ok(bytes::Bytes::from(s))
    };
    // Take the backlog and subscribe under one lock: no event falls between them.
    let (backlog, mut events, gone) = {
        let mut inner = shared.inner.lock().unwrap();
        let gone = std::mem::take(&mut inner.gone_once);
        let backlog: Vec<Event> = inner
            .history
            .iter()
            .filter(|e| e.rv > since && matches(e))
            .cloned()
            .collect();
        (backlog, shared.events.subscribe(), gone)
    };
    tokio::spawn(async move {
        if gone {
            let status = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {since}"), "reason": "Expired", "code": 410 });
            let _ = tx.send(line("ERROR", &status)).await;
            return;
        }
        for e in backlog {
            if tx.send(line(e.kind, &e.object)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                ev = events.recv() => match ev {
                    Ok(e) if e.rv > since && matches(&e) => {
                        if tx.send(line(e.kind, &e.object)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                },
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn namespace_object(name: &str, phase: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": name, "resourceVersion": "1" },
        "status": { "phase": phase }
    })
}

async fn get_namespace(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    log_request(&shared, format!("GET /api/v1/namespaces/{name}"));
    if shared.inner.lock().unwrap().namespaces.contains(&name) {
        Json(namespace_object(&name, "Active")).into_response()
    } else {
        status_error(404, "NotFound", format!("namespaces \"{name}\" not found"))
    }
}

async fn delete_namespace(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    log_request(&shared, format!("DELETE /api/v1/namespaces/{name}"));
    if shared.inner.lock().unwrap().namespaces.remove(&name) {
        Json(namespace_object(&name, "Terminating")).into_response()
    } else {
        status_error(404, "NotFound", format!("namespaces \"{name}\" not found"))
    }
}
