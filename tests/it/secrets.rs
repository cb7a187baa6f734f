//! Secrets never leave their reference (issue #15): the identity file's
//! permissions, the incident state file, the scratch servers' passwords,
//! command stderr, restore targets' credentials.

use std::os::unix::fs::PermissionsExt;

use crate::cli::{fixture_with_backup, stderr};

#[test]
fn a_readable_identity_file_is_refused_with_the_chmod_to_run() {
    let (f, id, want) = fixture_with_backup();
    let out = f.dir.path().join("restored.jsonl");
    let restore = || f.gsdr(&["restore", &id, "--to-file", out.to_str().unwrap()]);
    std::fs::set_permissions(&f.identity, std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = restore();
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
    let e = stderr(&r);
    assert!(
        e.contains(&format!("run `chmod 600 {}`", f.identity.display())),
        "names the chmod to run: {e}"
    );
    assert!(!e.contains("AGE-SECRET-KEY"), "{e}");
    assert!(!out.exists(), "nothing restored");
    // Verify reads the identity too.
    let v = f.gsdr(&["verify", &id]);
    assert_eq!(v.status.code(), Some(2), "{}", stderr(&v));
    let text = format!("{}{}", String::from_utf8_lossy(&v.stdout), stderr(&v));
    assert!(text.contains("chmod 600"), "{text}");

    std::fs::set_permissions(&f.identity, std::fs::Permissions::from_mode(0o600)).unwrap();
    let r = restore();
    assert!(r.status.success(), "{}", stderr(&r));
    assert_eq!(crate::cli::sha256_file(&out), want);
}

use std::path::Path;
use std::process::{Command, Output};

use crate::cli::Fixture;
use crate::support::{gsdr_bin, tempdir};

/// Runs gsdr with the fixture's policy and extra environment variables.
fn gsdr_env(f: &Fixture, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(gsdr_bin())
        .arg("--policy")
        .arg(&f.policy)
        .args(args)
        .env("GSDR_LOG", "info")
        .envs(envs.iter().copied())
        .output()
        .unwrap()
}

/// Everything gsdr printed.
pub(crate) fn printed(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Files below `dir` (but `except`) whose bytes contain `marker`.
pub(crate) fn files_holding(dir: &Path, marker: &str, except: &[&Path]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if !except.contains(&p.as_path())
                && std::fs::read(&p)
                    .is_ok_and(|b| b.windows(marker.len()).any(|w| w == marker.as_bytes()))
            {
                out.push(p);
            }
        }
    }
    out
}

const PW_MARKER: &str = "gsdr-marker-cmdpw-5e1f";
const URI_PW_MARKER: &str = "gsdr-marker-uripw-77ab";

/// A command source whose stderr prints secrets of the policy (a Redis
/// password from the environment, the password inside a Mongo URI from a
/// file): the error, the log, the JSON output and the job record say
/// `<redacted>` instead, and no file gsdr wrote holds them.
#[test]
fn command_stderr_is_filtered_for_every_secret_the_policy_references() {
    let pre = tempdir();
    let uri_file = pre.path().join("mongo-uri");
    std::fs::write(
        &uri_file,
        format!("mongodb://backup:{URI_PW_MARKER}@127.0.0.1:1/?directConnection=true\n"),
    )
    .unwrap();
    let f = Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n[daemon]\nretry_max_attempts = 1\n\
         [sources.cache]\nkind = \"redis\"\n[sources.cache.redis]\naddr = \"127.0.0.1:1\"\npassword = {{ env = \"GSDR_T_REDIS_PW\" }}\n\
         [sources.docs]\nkind = \"mongo\"\n[sources.docs.mongo]\nuri = {{ file = \"{}\" }}\n\
         [sources.bad]\nkind = \"command\"\n[sources.bad.command]\n\
         argv = [\"sh\", \"-c\", \"echo \\\"AUTH $GSDR_T_REDIS_PW refused; tried {{ud}}\\\" >&2; exit 3\"]\n",
        uri_file.display()
    )
    .replace("{ud}", &format!("$(cat {})", uri_file.display())));
    let envs = [("GSDR_T_REDIS_PW", PW_MARKER)];
    for args in [
        &["backup", "--source", "bad"][..],
        &["--json", "backup", "--source", "bad"],
        &["run", "--once", "--source", "bad"],
        &["--json", "run", "--once", "--source", "bad"],
    ] {
        let o = gsdr_env(&f, args, &envs);
        assert!(!o.status.success(), "{args:?}: {}", printed(&o));
        let text = printed(&o);
        assert!(
            text.contains("exited with exit status: 3"),
            "{args:?}: {text}"
        );
        assert!(text.contains("AUTH <redacted> refused"), "{args:?}: {text}");
        assert!(
            text.contains("tried <redacted>"),
            "the whole URI: {args:?}: {text}"
        );
        for m in [PW_MARKER, URI_PW_MARKER] {
            assert!(!text.contains(m), "{args:?} printed a secret: {text}");
        }
    }
    // The job records (and anything else gsdr wrote) hold no secret either.
    let store = f.dir.path().join("store");
    assert!(store.exists(), "the runs wrote their records");
    for m in [PW_MARKER, URI_PW_MARKER] {
        assert_eq!(
            files_holding(f.dir.path(), m, &[]),
            Vec::<std::path::PathBuf>::new()
        );
    }
}

/// The processes whose command line contains `needle`, and the lines.
pub(crate) fn cmdlines_with(needle: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(b) = std::fs::read(e.path().join("cmdline")) {
            let line = String::from_utf8_lossy(&b).replace('\0', " ");
            if line.contains(needle) {
                out.push((pid, line));
            }
        }
    }
    out
}

/// The scratch `redis-server` (restores, deep verify, drills) holds production
/// data: loopback only, protected mode on, a random password gsdr uses and no
/// one else knows, which is in no process's argv.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scratch_redis_is_locked_with_a_random_password_not_in_argv() {
    crate::support::require_program("redis-server", "apt-get install redis-server");
    let dir = tempdir();
    let s = gsdr::source::redis::ScratchServer::start("redis-server", dir.path())
        .await
        .unwrap();
    let pw = s.password().expose().to_string();
    assert!(pw.len() >= 32, "a long random password");
    let other = gsdr::source::redis::ScratchServer::start("redis-server", tempdir().path())
        .await
        .unwrap();
    assert_ne!(other.password().expose(), pw, "one password per server");
    drop(other);

    // Without the password: refused.
    let anon = redis::Client::open(format!("redis://127.0.0.1:{}/0", s.port)).unwrap();
    let mut c = anon.get_multiplexed_async_connection().await.unwrap();
    let e = redis::cmd("DBSIZE")
        .query_async::<i64>(&mut c)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("NOAUTH"), "{e}");
    // gsdr's own client has it.
    let mut c = s
        .client(0)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let n: i64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
    assert_eq!(n, 0);
    let get = |name: &'static str| {
        let mut c = c.clone();
        async move {
            let v: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut c)
                .await
                .unwrap();
            v[1].clone()
        }
    };
    assert_eq!(get("protected-mode").await, "yes");
    assert_eq!(get("bind").await, "127.0.0.1");
    assert_eq!(get("requirepass").await, pw);

    // The password is in a 0600 config file, not in the server's argv.
    let conf = dir.path().join("gsdr-scratch.conf");
    assert_eq!(
        std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // (redis-server retitles itself `redis-server 127.0.0.1:PORT`.)
    let procs = cmdlines_with(&format!("127.0.0.1:{}", s.port));
    assert_eq!(procs.len(), 1, "the scratch server: {procs:?}");
    assert!(!procs[0].1.contains(&pw), "{procs:?}");
    assert!(cmdlines_with(&pw).is_empty(), "no argv holds the password");
}

/// A scratch PostgreSQL (drills) listens on no TCP port: only on a Unix
/// socket of mode 0700 in its own directory, admitted by gsdr's `hba_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scratch_postgres_listens_only_on_a_private_socket() {
    use crate::support::postgres::{pg_program, PgCluster};
    let mut pg = PgCluster::init("");
    pg.start();
    pg.psql("CREATE TABLE t AS SELECT generate_series(1, 42) AS i");
    pg.stop();
    let bin = pg_program("pg_ctl");
    let cfg: gsdr::source::postgres::PostgresConfig = toml::from_str(&format!(
        "user = \"postgres\"\npg_bin = \"{}\"",
        bin.parent().unwrap().display()
    ))
    .unwrap();
    let s = gsdr::source::postgres::scratch::ScratchPg::start("pg", &cfg, &pg.data)
        .await
        .unwrap();
    let conn =
        gsdr::source::postgres::canary::restored_conn("pg", &s.conn_string(&cfg), Some(&cfg))
            .unwrap();
    let n = gsdr::source::postgres::scratch::query_i64(&conn, "SELECT count(*) FROM t")
        .await
        .unwrap();
    assert_eq!(n, 42, "gsdr reaches it through its socket");
    // A source with TLS: the socket is plaintext (PostgreSQL offers no TLS there).
    let tls_cfg: gsdr::source::postgres::PostgresConfig = toml::from_str(&format!(
        "user = \"postgres\"\npg_bin = \"{}\"\ntls = true\ntls_mode = \"require\"",
        bin.parent().unwrap().display()
    ))
    .unwrap();
    let conn = gsdr::source::postgres::canary::restored_conn(
        "pg",
        &s.conn_string(&tls_cfg),
        Some(&tls_cfg),
    )
    .unwrap();
    let n = gsdr::source::postgres::scratch::query_i64(&conn, "SELECT count(*) FROM t")
        .await
        .unwrap();
    assert_eq!(
        n, 42,
        "a TLS source's scratch is reached through its socket"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", s.port)).is_err(),
        "no TCP listener on port {}",
        s.port
    );
    let sock = pg
        .data
        .parent()
        .unwrap()
        .join(format!(".s.PGSQL.{}", s.port));
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "socket {}", sock.display());
    let show = |name: &str| {
        let out = crate::support::postgres::as_pg_user(&pg_program("psql"))
            .args(["-h", &pg.data.parent().unwrap().display().to_string()])
            .args(["-p", &s.port.to_string(), "-U", "postgres", "-Atc"])
            .arg(format!("SHOW {name}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(show("listen_addresses"), "");
    assert!(show("hba_file").ends_with("gsdr_hba.conf"));
    s.stop().await;
}

const SRC_PW: &str = "gsdr-marker-srcpw-91c3";
const EP_PW: &str = "gsdr-marker-endpointpw-04d2";

fn redis_incident_scenario(min: u32) -> String {
    format!(
        "name = \"redis-loss\"\ntitle = \"Redis is lost\"\ndescription = \"Restore and count.\"\n\
         [[steps]]\nname = \"restore-redis\"\nkind = \"restore_redis\"\nsource = \"cache\"\n\
         [[steps]]\nname = \"keys\"\nkind = \"redis_keys\"\nsource = \"cache\"\nmin = {min}\nafter = [\"restore-redis\"]\n"
    )
}

/// Incident endpoints take their password by reference: `--into
/// SOURCE=URI` without one, the password from `--password-file` (or the
/// source's own policy secret); the state file (0600) holds none, and a
/// resumed run gets it back from the same references. A password in argv
/// still works, with a warning that says what to do instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incident_endpoints_take_passwords_by_reference_and_the_state_file_holds_none() {
    use crate::support::redis::{write_file, Opts, RedisServer};
    let src = RedisServer::start(Opts {
        password: Some(SRC_PW.into()),
        ..Opts::default()
    });
    let mut c = src.conn(0).await;
    for i in 0..150 {
        redis::cmd("SET")
            .arg(format!("reading:{i}"))
            .arg(i)
            .query_async::<()>(&mut c)
            .await
            .unwrap();
    }
    let secrets = tempdir();
    let src_pw = write_file(secrets.path(), "src-pw", &format!("{SRC_PW}\n"));
    let ep_pw = write_file(secrets.path(), "ep-pw", &format!("{EP_PW}\n"));
    let f = Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n[defaults]\nobjectives = {{ rto = \"1h\", rpo = \"6h\" }}\n\
         [sources.cache]\nkind = \"redis\"\n[sources.cache.redis]\naddr = \"{}\"\npassword = {{ file = \"{}\" }}\n",
        src.addr(),
        src_pw.display()
    ));
    f.gsdr_json(&["backup", "--source", "cache"]);
    let rb = crate::drill::runbooks(&f, "redis-loss", &redis_incident_scenario(1_000_000));

    // An endpoint with its own password, given by file; the check fails (too
    // few keys): the state file stays.
    let ep = RedisServer::start(Opts {
        password: Some(EP_PW.into()),
        ..Opts::default()
    });
    let into = format!("cache=redis://127.0.0.1:{}/0", ep.port);
    let state = f.dir.path().join("inc.state.json");
    let incident = |extra: &[&str]| {
        let mut a = vec![
            "--json",
            "restore",
            "--scenario",
            "redis-loss",
            "--runbooks",
            rb.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--yes",
        ];
        a.extend_from_slice(extra);
        gsdr_env(&f, &a, &[])
    };
    let pw_flag = format!("cache={}", ep_pw.display());
    // While gsdr and its children (the scratch redis-server proving the
    // backup readable) run, no process's argv holds either password.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut scans = 0u64;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                for m in [SRC_PW, EP_PW] {
                    seen.extend(cmdlines_with(m));
                }
                scans += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            (seen, scans)
        })
    };
    let o = incident(&["--into", &into, "--password-file", &pw_flag]);
    assert_eq!(o.status.code(), Some(1), "{}", printed(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let steps = &j["reports"][0]["report"]["steps"];
    assert_eq!(
        steps[0]["status"], "ok",
        "restored with the password by reference: {j}"
    );
    assert_eq!(steps[1]["status"], "failed", "{j}");
    let mut ec = ep.conn(0).await;
    let n: i64 = redis::cmd("DBSIZE").query_async(&mut ec).await.unwrap();
    assert_eq!(n, 150);
    let text = std::fs::read_to_string(&state).unwrap();
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        text.contains(&format!("redis://127.0.0.1:{}/0", ep.port)),
        "{text}"
    );
    for m in [SRC_PW, EP_PW] {
        assert!(!text.contains(m), "the state file holds a password: {text}");
        assert!(!printed(&o).contains(m), "{}", printed(&o));
    }

    // Resumed with the check fixed: the restored server is reached again with
    // the password from the same reference (the state file had none).
    crate::drill::runbooks(&f, "redis-loss", &redis_incident_scenario(150));
    let o = incident(&["--into", &into, "--password-file", &pw_flag, "--resume"]);
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let steps = &j["reports"][0]["report"]["steps"];
    assert_eq!(steps[0]["status"], "already_done", "{j}");
    assert_eq!(steps[1]["status"], "ok", "{j}");
    assert!(!state.exists());
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let (seen, scans) = watcher.join().unwrap();
    assert!(scans > 0);
    assert!(
        seen.is_empty(),
        "a process's argv held a password: {seen:?}"
    );

    // A replacement keeping the source's credentials: the URI alone is
    // enough, the password is the source's own policy secret.
    let twin = RedisServer::start(Opts {
        password: Some(SRC_PW.into()),
        ..Opts::default()
    });
    let into_twin = format!("cache=redis://127.0.0.1:{}/0", twin.port);
    let o = incident(&["--into", &into_twin]);
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    for m in [SRC_PW, EP_PW] {
        assert!(!printed(&o).contains(m), "{}", printed(&o));
    }

    // A password in argv works, warned about, and is never printed back.
    let in_argv = format!("cache=redis://:{EP_PW}@127.0.0.1:{}/0", ep.port);
    let o = incident(&["--into", &in_argv, "--plan"]);
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning: the URI of --into holds a password")
            && err.contains("--password-env"),
        "{err}"
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains(EP_PW), "the plan shows no password: {out}");
    assert!(
        out.contains(&format!("redis://127.0.0.1:{}/0", ep.port)),
        "{out}"
    );
}

/// `gsdr restore --to URI` takes the password of a URI written without one
/// from `--password-env` (and only from there: a `--to` server is any
/// server, often a fresh one without a password).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_to_takes_the_password_from_an_environment_variable() {
    use crate::support::redis::{Opts, RedisServer};
    let src = RedisServer::start(Opts::default());
    let mut c = src.conn(0).await;
    for i in 0..20 {
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query_async::<()>(&mut c)
            .await
            .unwrap();
    }
    let f = Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n\
         [sources.cache]\nkind = \"redis\"\n[sources.cache.redis]\naddr = \"{}\"\n",
        src.addr()
    ));
    f.gsdr_json(&["backup", "--source", "cache"]);
    let to = RedisServer::start(Opts {
        password: Some(EP_PW.into()),
        ..Opts::default()
    });
    let uri = format!("redis://127.0.0.1:{}/0", to.port);
    let o = gsdr_env(
        &f,
        &[
            "restore",
            "--source",
            "cache",
            "--to",
            &uri,
            "--password-env",
            "GSDR_T_TO_PW",
        ],
        &[("GSDR_T_TO_PW", EP_PW)],
    );
    assert!(o.status.success(), "{}", printed(&o));
    assert!(!printed(&o).contains(EP_PW), "{}", printed(&o));
    let mut tc = to.conn(0).await;
    let n: i64 = redis::cmd("DBSIZE").query_async(&mut tc).await.unwrap();
    assert_eq!(n, 20);
    // Without it: the server refuses, and the error says so.
    let o = gsdr_env(
        &f,
        &[
            "restore",
            "--source",
            "cache",
            "--to",
            &uri,
            "--replace",
            "--yes",
        ],
        &[],
    );
    assert!(!o.status.success());
    // An unset variable fails before anything is restored.
    let o = gsdr_env(
        &f,
        &[
            "restore",
            "--source",
            "cache",
            "--to",
            &uri,
            "--password-env",
            "GSDR_T_UNSET",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", printed(&o));
    assert!(
        printed(&o).contains("GSDR_T_UNSET is not set"),
        "{}",
        printed(&o)
    );
}

/// A webhook never carries a secret the policy references, whatever text
/// (a command's stderr) a failure notice holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_bodies_are_filtered_for_policy_secrets() {
    use axum::routing::post;
    use std::sync::{Arc, Mutex};
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = {
        let got = got.clone();
        axum::Router::new().route(
            "/hook",
            post(move |body: String| {
                let got = got.clone();
                async move {
                    got.lock().unwrap().push(body);
                    "ok"
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempdir();
    let url = dir.path().join("url");
    std::fs::write(&url, format!("http://{addr}/hook\n")).unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "gsdr-marker-hookpw-3f9a\n").unwrap();
    let policy = dir.path().join("p.toml");
    std::fs::write(
        &policy,
        format!(
            "name = \"t\"\n[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n\
             [targets.a]\nkind = \"fs\"\npath = \"{}\"\n[daemon]\nwebhook_url = {{ file = \"{}\" }}\n\
             [sources.c]\nkind = \"redis\"\n[sources.c.redis]\naddr = \"127.0.0.1:1\"\npassword = {{ file = \"{}\" }}\n",
            dir.path().display(),
            url.display(),
            pw.display()
        ),
    )
    .unwrap();
    let env = gsdr::job::Env::new(gsdr::policy::Policy::load(&policy).unwrap());
    let sender = gsdr::notify::Sender::from_policy(&env.policy).unwrap();
    let notice = gsdr::notify::Notice::BackupFailed {
        source: "bad".into(),
        error: "`sh` exited with exit status: 3; its stderr ends with: AUTH gsdr-marker-hookpw-3f9a refused".into(),
    };
    assert!(sender.send(&notice).await.unwrap());
    let bodies = got.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1);
    assert!(
        bodies[0].contains("AUTH <redacted> refused"),
        "{}",
        bodies[0]
    );
    assert!(
        !bodies[0].contains("gsdr-marker-hookpw-3f9a"),
        "{}",
        bodies[0]
    );
    server.abort();
}

/// Runs gsdr while another thread scans every process's argv for `markers`;
/// returns the output and the argv lines that held one.
fn run_watched(
    f: &Fixture,
    args: &[&str],
    markers: &[&'static str],
) -> (Output, Vec<(u32, String)>) {
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let markers: Vec<&'static str> = markers.to_vec();
    let watcher = {
        let watching = watching.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                for m in &markers {
                    seen.extend(cmdlines_with(m));
                }
                // Sampled (a scan reads every /proc/*/cmdline): spinning would take a core.
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            seen
        })
    };
    let o = gsdr_env(f, args, &[]);
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    (o, watcher.join().unwrap())
}

const MARK_REDIS: &str = "gsdr-marker-redis-c0ffee";
const MARK_MONGO: &str = "gsdr-marker-mongo-b4dd";
const MARK_HOOK: &str = "gsdr-marker-hook-7e57";

/// The secret-marker test of issue #15, for the commands it covers: every
/// secret of the policy has a unique marker value (the Redis password, the
/// password in a MongoDB URI, the webhook URL); canary, backup, list,
/// verify (deep: a scratch redis-server), a drill into a scratch
/// redis-server, a restore to a file and a failing backup (MongoDB
/// unreachable) run with every process's argv watched; then their output,
/// the logs (JSON, info level), and every file they wrote — manifests, drill
/// reports (JSON, Markdown, HTML), job records — are searched: no marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_marker_in_any_output_file_or_argv() {
    use crate::support::redis::{write_file, Opts, RedisServer};
    let src = RedisServer::start(Opts {
        password: Some(MARK_REDIS.into()),
        ..Opts::default()
    });
    let mut c = src.conn(0).await;
    for i in 0..300 {
        redis::cmd("SET")
            .arg(format!("reading:{i}"))
            .arg(i)
            .query_async::<()>(&mut c)
            .await
            .unwrap();
    }
    let secrets = tempdir();
    let redis_pw = write_file(secrets.path(), "redis-pw", &format!("{MARK_REDIS}\n"));
    let mongo_uri = write_file(
        secrets.path(),
        "mongo-uri",
        &format!("mongodb://backup:{MARK_MONGO}@127.0.0.1:1/?directConnection=true&serverSelectionTimeoutMS=300&connectTimeoutMS=300\n"),
    );
    let hook = write_file(
        secrets.path(),
        "hook",
        &format!("http://127.0.0.1:1/hooks/{MARK_HOOK}\n"),
    );
    let f = Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n\
         [defaults]\nobjectives = {{ rto = \"1h\", rpo = \"6h\" }}\n\
         [daemon]\nretry_max_attempts = 1\nwebhook_url = {{ file = \"{}\" }}\n\
         [sources.cache]\nkind = \"redis\"\n[sources.cache.redis]\naddr = \"{}\"\npassword = {{ file = \"{}\" }}\n\
         [sources.docs]\nkind = \"mongo\"\n[sources.docs.mongo]\nuri = {{ file = \"{}\" }}\nconnect_timeout_secs = 1\n",
        hook.display(),
        src.addr(),
        redis_pw.display(),
        mongo_uri.display()
    ));
    let rb = crate::drill::runbooks(&f, "redis-loss", &redis_incident_scenario(300));
    let scratch = f.dir.path().join("scratch");
    let out = f.dir.path().join("reports");
    let restored = f.dir.path().join("dump.rdb");
    let markers = [MARK_REDIS, MARK_MONGO, MARK_HOOK];
    let mut outputs = String::new();
    let mut covered = Vec::new();
    let t0 = std::time::Instant::now();
    for (args, ok) in [
        (vec!["policy", "check"], true),
        (vec!["--json", "canary", "--source", "cache"], true),
        (vec!["--json", "backup", "--source", "cache"], true),
        (vec!["list"], true),
        (
            vec!["--json", "verify", "--source", "cache", "--deep"],
            true,
        ),
        (
            vec![
                "--json",
                "drill",
                "--scenario",
                "redis-loss",
                "--runbooks",
                rb.to_str().unwrap(),
                "--scratch-dir",
                scratch.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            true,
        ),
        (
            vec![
                "restore",
                "--source",
                "cache",
                "--to-file",
                restored.to_str().unwrap(),
            ],
            true,
        ),
        (vec!["--json", "backup", "--source", "docs"], false),
        (vec!["run", "--once", "--source", "docs"], false),
    ] {
        let (o, seen) = run_watched(&f, &args, &markers);
        assert_eq!(o.status.success(), ok, "{args:?}: {}", printed(&o));
        assert!(seen.is_empty(), "{args:?}: an argv held a secret: {seen:?}");
        outputs += &printed(&o);
        covered.push(format!("{} ({:?})", args.join(" "), t0.elapsed()));
    }
    assert!(
        restored.is_file() && out.is_dir(),
        "the commands wrote their files"
    );
    for m in markers {
        assert!(!outputs.contains(m), "output holds {m}: {outputs}");
        let files = files_holding(f.dir.path(), m, &[]);
        assert!(files.is_empty(), "{m} in {files:?} (after {covered:?})");
    }
    eprintln!("covered: {covered:#?}");
}

/// The scratch MongoDB (drills, deep verify) holds production data and has
/// no password (nx-27017 has no authentication): one started from a
/// `drills.mongo_scratch_argv` that binds beyond loopback is killed and
/// refused with the argument to change; bound to 127.0.0.1 it is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scratch_mongo_bound_beyond_loopback_is_refused() {
    use gsdr::source::mongo::scratch::ScratchMongo;
    let nx =
        crate::support::require_program("nx-27017", "pip install nx-27017 into $GSDR_TEST_VENV");
    let dir = tempdir();
    let argv = |host: &str| -> Vec<String> {
        [
            nx.display().to_string().as_str(),
            "--db",
            "memory",
            "--host",
            host,
            "-p",
            "{port}",
            "--log-file",
            "{dir}/nx.log",
            "--pid-file",
            "{dir}/nx.pid",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let e = ScratchMongo::start(&argv("0.0.0.0"), dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("listens on 0.0.0.0") && e.contains("--host 127.0.0.1"),
        "{e}"
    );
    let port: u16 = e
        .split(" port ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in: {e}"));
    // Killed: nothing listens there any more.
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "still listening on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let ok = ScratchMongo::start(&argv("127.0.0.1"), dir.path())
        .await
        .unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", ok.port)).is_ok());
    ok.stop().await;
}
