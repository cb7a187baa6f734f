//! Least privilege for PostgreSQL (docs/security.md): the role gsdr needs,
//! used for real on a throwaway PostgreSQL 15 — a login role with
//! `REPLICATION` and `pg_read_all_settings`, plus `SELECT, INSERT` on a
//! canary table the DBA created. No superuser.

use crate::cli::Fixture;
use crate::postgres::{ok, WAIT};
use crate::support::postgres::{give_to_pg_user, pg_gsdr_bin, PgCluster, PG_BIN};

/// With the least-privilege role a base backup (with WAL archiving beside
/// it) and a canary succeed, and the canary is in the restored data; without
/// `REPLICATION` the backup fails and says so.
#[test]
fn pg_least_privilege_role_backs_up_archives_and_writes_the_canary() {
    let mut cluster = PgCluster::init("");
    let fx = Fixture::new(&format!(
        "[targets.local]\nkind = \"fs\"\npath = \"{{dir}}/store\"\n[defaults]\ntarget = \"local\"\n\
         [sources.pg]\nkind = \"postgres\"\n[sources.pg.postgres]\nhost = \"127.0.0.1\"\nport = {}\n\
         user = \"gsdr\"\npg_bin = \"{PG_BIN}\"\ngsdr_bin = \"{}\"\n",
        cluster.port,
        pg_gsdr_bin().display()
    ));
    std::fs::create_dir_all(fx.dir.path().join("store/pg/wal")).unwrap();
    give_to_pg_user(fx.dir.path());
    cluster.append_conf(&format!(
        "archive_mode = on\narchive_command = '{} --policy {} -q wal-push --source pg %p'\n",
        pg_gsdr_bin().display(),
        fx.policy.display()
    ));
    cluster.start();
    for sql in [
        "CREATE ROLE gsdr LOGIN REPLICATION",
        "GRANT pg_read_all_settings TO gsdr",
        "CREATE TABLE gsdr_canary (id bigserial PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT clock_timestamp())",
        "GRANT SELECT, INSERT ON gsdr_canary TO gsdr",
        "GRANT USAGE ON SEQUENCE gsdr_canary_id_seq TO gsdr",
        "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g",
    ] {
        cluster.psql(sql);
    }
    assert_eq!(
        cluster.psql("SELECT rolsuper FROM pg_roles WHERE rolname = 'gsdr'"),
        "f"
    );
    ok(
        &fx.gsdr(&["canary", "--source", "pg"]),
        "gsdr canary as the gsdr role",
    );
    ok(
        &fx.gsdr(&["backup", "--source", "pg"]),
        "gsdr backup as the gsdr role",
    );
    cluster.switch_and_wait_archived(WAIT);
    assert_eq!(cluster.psql("SELECT count(*) FROM gsdr_canary"), "1");
    let dir = fx.dir.path().join("restored");
    ok(
        &fx.gsdr(&[
            "restore",
            "--source",
            "pg",
            "--to-dir",
            dir.to_str().unwrap(),
            "--latest",
        ]),
        "restore",
    );
    let restored = crate::postgres::start_restored(&dir);
    assert_eq!(restored.psql("SELECT count(*) FROM gsdr_canary"), "1");
    assert_eq!(restored.psql("SELECT count(*) FROM t"), "1000");

    cluster.psql("ALTER ROLE gsdr NOREPLICATION");
    let out = fx.gsdr(&["backup", "--source", "pg"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a backup without REPLICATION: {err}");
    assert!(err.contains("replication"), "{err}");
}
