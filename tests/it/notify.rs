//! Notifications over real HTTP: a loopback listener records what the
//! [`Sender`] posts (exact bodies in both formats, the heartbeat on its own
//! URL) and answers as the test says (an error status, or never).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gsdr::notify::{
    evaluate, JobKind, JobObservation, JobOutcome, Notice, NotifyError, Observations, Rules,
    Sender, WatchState,
};
use gsdr::policy::{Policy, WebhookFormat};
use gsdr::secret::Secret;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One recorded request.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    content_type: String,
    body: Value,
}

/// How the listener answers.
#[derive(Clone, Copy)]
enum Answer {
    Status(u16),
    Never,
}

/// A listener on a free loopback port recording every request.
struct Recorder {
    base: String,
    got: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let len: usize = header("content-length").parse().unwrap_or(0);
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        path,
        content_type: header("content-type"),
        body: serde_json::from_slice(&buf[head_end..head_end + len]).ok()?,
    })
}

async fn recorder(answer: Answer) -> Recorder {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let got: Arc<Mutex<Vec<Request>>> = Arc::default();
    let rec = got.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let rec = rec.clone();
            tokio::spawn(async move {
                while let Some(r) = read_request(&mut sock).await {
                    rec.lock().unwrap().push(r);
                    match answer {
                        Answer::Status(code) => {
                            let resp = format!(
                                "HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                            );
                            let _ = sock.write_all(resp.as_bytes()).await;
                            return;
                        }
                        Answer::Never => tokio::time::sleep(Duration::from_secs(3600)).await,
                    }
                }
            });
        }
    });
    Recorder { base, got, task }
}

const TOKEN: &str = "T0000/B0000/SECRETTOKEN";

fn sender(base: &str, format: WebhookFormat, timeout: Duration) -> Sender {
    Sender::new(
        "glucosync",
        format,
        Some(Secret::new(format!("{base}/hooks/{TOKEN}"))),
        Some(Secret::new(format!("{base}/ping/{TOKEN}"))),
        timeout,
    )
    .unwrap()
}

#[tokio::test]
async fn sender_posts_exact_bodies_in_both_formats_and_pings_the_heartbeat() {
    let r = recorder(Answer::Status(200)).await;
    // The policy's settings pick the format and read both URLs from their secrets.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hook"),
        format!("{}/hooks/{TOKEN}\n", r.base),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("ping"),
        format!("{}/ping/{TOKEN}\n", r.base),
    )
    .unwrap();
    let policy = |format: &str| {
        Policy::parse(
            &format!(
                "name = \"glucosync\"\n[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n\
                 [targets.a]\nkind = \"fs\"\npath = \"/tmp\"\n[daemon]\nwebhook_format = \"{format}\"\n\
                 webhook_url = {{ file = \"{}\" }}\nheartbeat_url = {{ file = \"{}\" }}\n",
                dir.path().join("hook").display(),
                dir.path().join("ping").display()
            ),
            Path::new("p.toml"),
        )
        .unwrap()
    };
    let slack = Sender::from_policy(&policy("slack")).unwrap();
    let generic = Sender::from_policy(&policy("json")).unwrap();

    // What the watch decides for a failed backup, sent in both formats.
    let obs = Observations {
        jobs: vec![JobObservation {
            kind: JobKind::Backup,
            name: "mongo".into(),
            finished_at: chrono::Utc::now(),
            outcome: JobOutcome::Failed {
                error: "disk full".into(),
            },
        }],
        ..Default::default()
    };
    let rules = Rules::from_policy(&policy("slack").daemon);
    let (_, notices) = evaluate(&WatchState::default(), &obs, &rules, chrono::Utc::now());
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(slack.send(&notices[0]).await.unwrap());
    assert!(generic.send(&notices[0]).await.unwrap());
    let rpo = Notice::RpoAboveTarget {
        source: "pg".into(),
        exposure_secs: 5400.0,
        target_secs: 3600.0,
    };
    assert!(generic.send(&rpo).await.unwrap());
    assert!(slack.send(&Notice::Heartbeat).await.unwrap());

    let got = r.got.lock().unwrap().clone();
    let text = ":x: gsdr glucosync: backup of `mongo` failed: disk full";
    let want = [
        (
            format!("/hooks/{TOKEN}"),
            json!({
                "text": text,
                "blocks": [
                    { "type": "section", "text": { "type": "mrkdwn", "text": text } },
                    { "type": "context", "elements": [
                        { "type": "mrkdwn", "text": "critical · backup_failed · glucosync" }
                    ] }
                ]
            }),
        ),
        (
            format!("/hooks/{TOKEN}"),
            json!({
                "kind": "backup_failed", "severity": "critical", "policy": "glucosync",
                "text": text, "source": "mongo", "error": "disk full"
            }),
        ),
        (
            format!("/hooks/{TOKEN}"),
            json!({
                "kind": "rpo_above_target", "severity": "critical", "policy": "glucosync",
                "text": ":x: gsdr glucosync: RPO of `pg` is 1h 30m, above its target of 1h",
                "source": "pg", "exposure_secs": 5400.0, "target_secs": 3600.0
            }),
        ),
        // The heartbeat goes to its own URL, always as generic JSON.
        (
            format!("/ping/{TOKEN}"),
            json!({
                "kind": "heartbeat", "severity": "info", "policy": "glucosync",
                "text": ":heartbeat: gsdr glucosync: nothing is failing"
            }),
        ),
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (g, (path, body)) in got.iter().zip(want) {
        assert_eq!(g.method, "POST");
        assert_eq!(g.path, path);
        assert_eq!(g.content_type, "application/json");
        assert_eq!(g.body, body);
    }
}

#[tokio::test]
async fn sender_errors_are_typed_and_never_show_the_url() {
    let no_url = |e: &NotifyError| {
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains("SECRETTOKEN") && !text.contains("127.0.0.1"),
            "the URL leaked: {text}"
        );
    };
    let n = Notice::Heartbeat;

    let refusing = recorder(Answer::Status(500)).await;
    let e = sender(&refusing.base, WebhookFormat::Slack, Duration::from_secs(5))
        .send(&n)
        .await
        .unwrap_err();
    assert!(
        matches!(e, NotifyError::Status { status: 500, .. }),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("the heartbeat URL (daemon.heartbeat_url) answered HTTP 500"),
        "{e}"
    );
    no_url(&e);

    let silent = recorder(Answer::Never).await;
    let t0 = std::time::Instant::now();
    let e = sender(
        &silent.base,
        WebhookFormat::Json,
        Duration::from_millis(300),
    )
    .send(&Notice::BackupFailed {
        source: "s".into(),
        error: "x".into(),
    })
    .await
    .unwrap_err();
    assert!(matches!(e, NotifyError::Timeout { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "the webhook (daemon.webhook_url) did not answer within 300ms; check that it is reachable from the pod"
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(silent.got.lock().unwrap().len(), 1, "the request arrived");
    no_url(&e);

    // A closed port: connection refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let e = sender(&closed, WebhookFormat::Slack, Duration::from_secs(5))
        .send(&n)
        .await
        .unwrap_err();
    assert!(matches!(e, NotifyError::Request { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with(
            "cannot reach the heartbeat URL (daemon.heartbeat_url): connect: Connection refused"
        ),
        "{e}"
    );
    no_url(&e);

    // No URL configured: nothing sent, not an error.
    let none = Sender::new(
        "p",
        WebhookFormat::Slack,
        None,
        None,
        Duration::from_secs(1),
    )
    .unwrap();
    assert!(!none.sends(&n));
    assert!(!none.send(&n).await.unwrap());
}
