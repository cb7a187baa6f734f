//! A small Velero client on the Kubernetes API: create objects, wait for a
//! terminal phase (get, then watch from its resourceVersion, re-getting when a
//! watch ends or expires), fetch logs through a DownloadRequest.
//!
//! Memory: a fetched log is streamed through gunzip into a bounded tail
//! ([`LOG_TAIL_LINES`] lines of at most [`LOG_LINE_MAX`] bytes, plus the first
//! [`LOG_ERROR_LINES`] error lines), whatever the log's size.

use std::collections::VecDeque;
use std::io::Write;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams, WatchEvent,
    WatchParams,
};
use serde_json::Value;

use super::objects::{LogKind, RunStatus};
use super::VeleroError;

/// Lines kept from the end of a log.
pub const LOG_TAIL_LINES: usize = 100;
/// Error lines (`level=error`) kept from anywhere in a log.
pub const LOG_ERROR_LINES: usize = 50;
/// Longest line kept, in bytes (longer lines are cut).
pub const LOG_LINE_MAX: usize = 2000;
/// How long to wait for Velero to process a DownloadRequest.
const DOWNLOAD_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest single watch (the API server's own limit is a little above 5 minutes).
const MAX_WATCH_SECS: u64 = 290;

/// The Velero resources gsdr uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `backups.velero.io`
    Backup,
    /// `restores.velero.io`
    Restore,
    /// `downloadrequests.velero.io`
    DownloadRequest,
    /// `deletebackuprequests.velero.io`
    DeleteBackupRequest,
    /// `backupstoragelocations.velero.io`
    BackupStorageLocation,
}

impl Resource {
    /// Kind and plural.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            Resource::Backup => ("Backup", "backups"),
            Resource::Restore => ("Restore", "restores"),
            Resource::DownloadRequest => ("DownloadRequest", "downloadrequests"),
            Resource::DeleteBackupRequest => ("DeleteBackupRequest", "deletebackuprequests"),
            Resource::BackupStorageLocation => ("BackupStorageLocation", "backupstoragelocations"),
        }
    }

    fn api_resource(self) -> ApiResource {
        let (kind, plural) = self.names();
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("velero.io", "v1", kind), plural)
    }
}

/// A connection to the Kubernetes API, scoped to Velero's namespace.
#[derive(Clone)]
pub struct VeleroClient {
    client: kube::Client,
    namespace: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for VeleroClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VeleroClient")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl VeleroClient {
    /// Wraps a kube client.
    ///
    /// (The constructors below install rustls' process-wide crypto provider, ring, if none is:
    /// two are compiled in (the AWS SDK brings aws-lc-rs) and kube's TLS setup
    /// panics when it cannot pick one.)
    pub fn new(client: kube::Client, namespace: impl Into<String>) -> Self {
        VeleroClient {
            client,
            namespace: namespace.into(),
            http: reqwest::Client::new(),
        }
    }

    /// Connects with the in-cluster service account, or `KUBECONFIG` / `~/.kube/config`.
    pub async fn connect(namespace: impl Into<String>) -> Result<Self, VeleroError> {
        crate::tls::install_default_provider();
        let client = kube::Client::try_default()
            .await
            .map_err(|e| VeleroError::Kube {
                what: "connecting to the Kubernetes API (in-cluster service account or KUBECONFIG)"
                    .into(),
                source: Box::new(e),
            })?;
        Ok(Self::new(client, namespace))
    }

    /// Connects with the current context of the kubeconfig file at `path`.
    pub async fn from_kubeconfig(
        path: &std::path::Path,
        namespace: impl Into<String>,
    ) -> Result<Self, VeleroError> {
        let bad = |e: String| VeleroError::Invalid(format!("kubeconfig `{}`: {e}", path.display()));
        let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| bad(e.to_string()))?;
        crate::tls::install_default_provider();
        let client = kube::Client::try_from(config).map_err(|e| VeleroError::Kube {
            what: format!("building a Kubernetes client from {}", path.display()),
            source: Box::new(e),
        })?;
        Ok(Self::new(client, namespace))
    }

    /// Connects to an API server at `url` without credentials (tests, `kubectl proxy`).
    pub fn from_url(url: &str, namespace: impl Into<String>) -> Result<Self, VeleroError> {
        let uri = url
            .parse()
            .map_err(|e| VeleroError::Invalid(format!("`{url}` is not a URL: {e}")))?;
        crate::tls::install_default_provider();
        let client =
            kube::Client::try_from(kube::Config::new(uri)).map_err(|e| VeleroError::Kube {
                what: format!("building a Kubernetes client for {url}"),
                source: Box::new(e),
            })?;
        Ok(Self::new(client, namespace))
    }

    /// Velero's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Whether namespace `name` exists (a drill's scratch namespace must not).
    pub async fn namespace_exists(&self, name: &str) -> Result<bool, VeleroError> {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        api.get_opt(name)
            .await
            .map(|n| n.is_some())
            .map_err(self.kube_err(format!("looking up namespace `{name}`")))
    }

    /// Deletes namespace `name` and everything in it (a drill's scratch
    /// namespace); an absent namespace is not an error.
    pub async fn delete_namespace(&self, name: &str) -> Result<(), VeleroError> {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        match api
            .delete(name, &kube::api::DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(self.kube_err(format!("deleting namespace `{name}`"))(e)),
        }
    }

    fn api(&self, r: Resource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &r.api_resource())
    }

    fn kube_err(&self, what: String) -> impl FnOnce(kube::Error) -> VeleroError {
        move |e| VeleroError::Kube {
            what,
            source: Box::new(e),
        }
    }

    /// Creates an object (a JSON value built by [`super::objects`]); returns it as stored.
    pub async fn create(&self, r: Resource, object: &Value) -> Result<Value, VeleroError> {
        let (kind, _) = r.names();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        let what = format!("creating {kind} `{name}` in namespace `{}`", self.namespace);
        let obj: DynamicObject =
            serde_json::from_value(object.clone()).map_err(|e| VeleroError::Decode {
                what: what.clone(),
                source: e,
            })?;
        let created = self
            .api(r)
            .create(&PostParams::default(), &obj)
            .await
            .map_err(self.kube_err(what.clone()))?;
        serde_json::to_value(created).map_err(|e| VeleroError::Decode { what, source: e })
    }

    /// Reads one object.
    pub async fn get(&self, r: Resource, name: &str) -> Result<Value, VeleroError> {
        let what = format!(
            "reading {} `{name}` in namespace `{}`",
            r.names().0,
            self.namespace
        );
        let obj = self
            .api(r)
            .get(name)
            .await
            .map_err(self.kube_err(what.clone()))?;
        serde_json::to_value(obj).map_err(|e| VeleroError::Decode { what, source: e })
    }

    /// Lists every object of a kind in Velero's namespace.
    pub async fn list(&self, r: Resource) -> Result<Vec<Value>, VeleroError> {
        let what = format!("listing {} in namespace `{}`", r.names().1, self.namespace);
        let list = self
            .api(r)
            .list(&ListParams::default())
            .await
            .map_err(self.kube_err(what.clone()))?;
        list.items
            .into_iter()
            .map(|o| {
                serde_json::to_value(o).map_err(|e| VeleroError::Decode {
                    what: what.clone(),
                    source: e,
                })
            })
            .collect()
    }

    /// Waits until a Backup or Restore reaches a terminal phase; returns the object then.
    /// Unknown phases count as running. Gives up after `timeout` (the object goes on in Velero).
    pub async fn wait_terminal(
        &self,
        r: Resource,
        name: &str,
        timeout: Duration,
    ) -> Result<Value, VeleroError> {
        let mut last_phase = None;
        match tokio::time::timeout(timeout, self.wait_loop(r, name, &mut last_phase)).await {
            Ok(res) => res,
            Err(_) => Err(VeleroError::Timeout {
                kind: r.names().0,
                name: name.to_string(),
                namespace: self.namespace.clone(),
                phase: last_phase,
                waited: timeout,
            }),
        }
    }

    async fn wait_loop(
        &self,
        r: Resource,
        name: &str,
        last_phase: &mut Option<String>,
    ) -> Result<Value, VeleroError> {
        let api = self.api(r);
        let (kind, _) = r.names();
        loop {
            let obj = self.get(r, name).await?;
            let status = RunStatus::of(&obj);
            if status.outcome().is_terminal() {
                return Ok(obj);
            }
            note_phase(kind, name, last_phase, &status);
            let rv = obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("0")
                .to_string();
            let wp = WatchParams::default()
                .fields(&format!("metadata.name={name}"))
                .timeout(MAX_WATCH_SECS as u32);
            let what = format!("watching {kind} `{name}` in namespace `{}`", self.namespace);
            let mut stream = api
                .watch(&wp, &rv)
                .await
                .map_err(self.kube_err(what))?
                .boxed();
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(WatchEvent::Added(o)) | Ok(WatchEvent::Modified(o)) => {
                        let v = serde_json::to_value(&o).map_err(|e| VeleroError::Decode {
                            what: format!("reading a watch event of {kind} `{name}`"),
                            source: e,
                        })?;
                        let status = RunStatus::of(&v);
                        if status.outcome().is_terminal() {
                            return Ok(v);
                        }
                        note_phase(kind, name, last_phase, &status);
                    }
                    Ok(WatchEvent::Deleted(_)) => {
                        return Err(VeleroError::Vanished {
                            kind,
                            name: name.to_string(),
                            namespace: self.namespace.clone(),
                        })
                    }
                    Ok(WatchEvent::Bookmark(_)) => {}
                    // 410 Gone (resourceVersion too old) and other watch errors: start over with a fresh get.
                    Ok(WatchEvent::Error(e)) => {
                        tracing::debug!(kind, name, code = e.code, message = %e.message, "watch error; re-reading");
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(kind, name, error = %e, "watch stream failed; re-reading");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        break;
                    }
                }
            }
        }
    }

    /// Fetches the log of a Backup or Restore through a DownloadRequest; keeps a bounded excerpt.
    pub async fn fetch_log(&self, kind: LogKind, target: &str) -> Result<LogExcerpt, VeleroError> {
        let name = format!("{}-log-{:08x}", truncate(target, 40), rand::random::<u32>());
        self.create(
            Resource::DownloadRequest,
            &super::objects::download_request_object(&name, &self.namespace, kind, target),
        )
        .await?;
        let start = tokio::time::Instant::now();
        let url = loop {
            let obj = self.get(Resource::DownloadRequest, &name).await?;
            let status = &obj["status"];
            if status["phase"] == "Processed" {
                if let Some(u) = status["downloadURL"].as_str().filter(|u| !u.is_empty()) {
                    break u.to_string();
                }
            }
            if start.elapsed() > DOWNLOAD_REQUEST_TIMEOUT {
                return Err(VeleroError::Timeout {
                    kind: "DownloadRequest",
                    name,
                    namespace: self.namespace.clone(),
                    phase: status["phase"].as_str().map(str::to_string),
                    waited: DOWNLOAD_REQUEST_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // The URL is presigned: it is a credential, so it is never logged or put in an error.
        let what = format!("downloading the log of `{target}` (DownloadRequest `{name}`)");
        let mut resp = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| VeleroError::Http {
                what: what.clone(),
                source: e.without_url(),
            })?;
        let mut sink = LogSink::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| VeleroError::Http {
            what: what.clone(),
            source: e.without_url(),
        })? {
            sink.write_all(&chunk).map_err(|e| VeleroError::LogFormat {
                what: what.clone(),
                source: e,
            })?;
        }
        sink.finish()
            .map_err(|e| VeleroError::LogFormat { what, source: e })
    }
}

fn note_phase(kind: &str, name: &str, last: &mut Option<String>, status: &RunStatus) {
    if status.phase != *last {
        tracing::info!(
            kind,
            name,
            phase = status.phase.as_deref().unwrap_or("(none)"),
            "velero phase"
        );
        last.clone_from(&status.phase);
    }
}

fn truncate(s: &str, n: usize) -> &str {
    let mut end = s.len().min(n);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].trim_end_matches('-')
}

/// A bounded excerpt of a Velero log.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogExcerpt {
    /// The first error lines (`level=error`), at most [`LOG_ERROR_LINES`].
    pub errors: Vec<String>,
    /// The last lines, at most [`LOG_TAIL_LINES`].
    pub tail: Vec<String>,
    /// Lines in the whole log.
    pub total_lines: u64,
}

/// Gunzips (when gzip) and splits a log into lines, keeping a bounded excerpt.
enum LogSink {
    Sniffing(Vec<u8>, LineTail),
    Gzip(Box<flate2::write::GzDecoder<LineTail>>),
    Plain(LineTail),
}

impl LogSink {
    fn new() -> Self {
        LogSink::Sniffing(Vec::new(), LineTail::default())
    }

    fn finish(self) -> std::io::Result<LogExcerpt> {
        let tail = match self {
            LogSink::Sniffing(buf, mut t) => {
                t.write_all(&buf)?;
                t
            }
            LogSink::Gzip(d) => d.finish()?,
            LogSink::Plain(t) => t,
        };
        Ok(tail.finish())
    }
}

impl Write for LogSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        match self {
            LogSink::Sniffing(buf, t) => {
                buf.extend_from_slice(data);
                if buf.len() >= 2 {
                    let head = std::mem::take(buf);
                    let t = std::mem::take(t);
                    *self = if head[..2] == [0x1f, 0x8b] {
                        LogSink::Gzip(Box::new(flate2::write::GzDecoder::new(t)))
                    } else {
                        LogSink::Plain(t)
                    };
                    self.write_all(&head)?;
                }
                Ok(data.len())
            }
            LogSink::Gzip(d) => d.write(data),
            LogSink::Plain(t) => t.write(data),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct LineTail {
    partial: Vec<u8>,
    out: LogExcerpt,
    tail: VecDeque<String>,
}

impl LineTail {
    fn push_line(&mut self) {
        let line = String::from_utf8_lossy(&self.partial)
            .trim_end_matches('\r')
            .to_string();
        self.partial.clear();
        self.out.total_lines += 1;
        if self.out.errors.len() < LOG_ERROR_LINES
            && (line.contains("level=error") || line.contains("\"level\":\"error\""))
        {
            self.out.errors.push(line.clone());
        }
        if self.tail.len() == LOG_TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    fn finish(mut self) -> LogExcerpt {
        if !self.partial.is_empty() {
            self.push_line();
        }
        self.out.tail = self.tail.into_iter().collect();
        self.out
    }
}

impl Write for LineTail {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        for &b in data {
            if b == b'\n' {
                self.push_line();
            } else if self.partial.len() < LOG_LINE_MAX {
                self.partial.push(b);
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excerpt(bytes: &[u8], chunk: usize) -> LogExcerpt {
        let mut s = LogSink::new();
        for c in bytes.chunks(chunk) {
            s.write_all(c).unwrap();
        }
        s.finish().unwrap()
    }

    #[test]
    fn log_tail_is_bounded_and_gzip_is_sniffed() {
        let mut text = String::new();
        for i in 0..1000 {
            let level = if i % 10 == 0 { "error" } else { "info" };
            text.push_str(&format!("time=\"t\" level={level} msg=\"line {i}\"\n"));
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        for (bytes, chunk) in [(text.as_bytes(), 7), (&gz[..], 1), (&gz[..], 4096)] {
            let e = excerpt(bytes, chunk);
            assert_eq!(e.total_lines, 1000);
            assert_eq!(e.tail.len(), LOG_TAIL_LINES);
            assert!(e.tail.last().unwrap().contains("line 999"));
            assert_eq!(e.errors.len(), LOG_ERROR_LINES);
            assert!(e.errors[1].contains("line 10\""));
        }
        let long = "x".repeat(10 * LOG_LINE_MAX);
        assert_eq!(excerpt(long.as_bytes(), 100).tail[0].len(), LOG_LINE_MAX);
    }
}
