//! The services reach PostgreSQL over TLS with `sslmode=verify-full` and the
//! cluster's CA (`sslrootcert=`), as the production Secrets' URLs say
//! (deploy/README.md). A private server (its own port and directory, the
//! shared one is never touched) is started with `ssl = on`, a test CA made
//! with `openssl` (`waterworks_test_support::certs`), and a pg_hba.conf that refuses connections without TLS.
//! Then, through the same `connect` every command uses:
//! - verify-full with the right CA and the certificate's host name connects,
//!   and the server reports the session as TLS;
//! - a CA that did not sign the server's certificate is refused;
//! - the right CA but another host name (127.0.0.1, the certificate names
//!   only `localhost`) is refused: verify-full checks the name (so does
//!   verify-ca with sqlx 0.8.6 on this rustls: production uses verify-full);
//! - sslmode=disable is refused by the server (so the first connection's TLS
//!   was not optional).

use std::path::Path;
use std::process::Command;
use waterworks::database::{connect, PrivateCluster};
use waterworks_test_support::certs as test_certs;

/// A CA (`NAME-ca.crt`, `NAME-ca.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    test_certs::make_ca(
        dir,
        &format!("{name}-ca"),
        &format!("waterworks test {name} CA"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_connects_with_the_cluster_ca_and_refuses_a_wrong_ca_or_name() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_ca(&certs, "cluster");
    make_ca(&certs, "other");
    // The server's certificate: signed by the cluster CA, for localhost only.
    test_certs::make_server_cert(&certs, "cluster-ca", "localhost", "DNS:localhost");

    // First start: initdb. Then TLS on, TLS required, restart.
    let pg_dir = tmp.path().join("pg");
    let first = PrivateCluster::start(&pg_dir).expect("private cluster starts");
    first.stop();
    let data = pg_dir.join("data");
    for f in ["server.crt", "server.key"] {
        std::fs::copy(certs.join(f), data.join(f)).unwrap();
    }
    let mut conf = std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .unwrap();
    use std::io::Write;
    writeln!(
        conf,
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
    )
    .unwrap();
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    // The key must belong to the server's user, mode 0600.
    let key = data.join("server.key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let st = Command::new("chown")
        .args(["-R", "--reference"])
        .arg(data.join("PG_VERSION"))
        .arg(&data)
        .status()
        .unwrap();
    assert!(st.success(), "chown of the data directory");
    let cluster = PrivateCluster::start(&pg_dir).expect("restarts with ssl = on");
    let port = cluster.port;
    let ca = certs.join("cluster-ca.crt");
    let other = certs.join("other-ca.crt");
    let url = |host: &str, mode: &str, root: &Path| {
        format!(
            "postgres://postgres@{host}:{port}/postgres?sslmode={mode}&sslrootcert={}",
            root.display()
        )
    };

    let pool = connect(&url("localhost", "verify-full", &ca), 1)
        .await
        .expect("verify-full with the cluster's CA and the certificate's name connects");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .expect("query over TLS");
    assert!(ssl, "the server sees the session as TLS");
    pool.close().await;

    let wrong_ca = connect(&url("localhost", "verify-full", &other), 1).await;
    let e = format!(
        "{:#}",
        wrong_ca.expect_err("a CA that did not sign the server is refused")
    );
    assert!(
        e.contains("invalid peer certificate") && e.contains("UnknownIssuer"),
        "refused for its issuer: {e}"
    );

    let wrong_name = connect(&url("127.0.0.1", "verify-full", &ca), 1).await;
    let e = format!(
        "{:#}",
        wrong_name.expect_err("a name the certificate does not carry is refused")
    );
    assert!(
        e.contains("invalid peer certificate") && e.contains("not valid for name"),
        "refused for the name: {e}"
    );

    let plain = connect(
        &format!("postgres://postgres@127.0.0.1:{port}/postgres?sslmode=disable"),
        1,
    )
    .await;
    assert!(plain.is_err(), "the server refuses connections without TLS");
    cluster.stop();
}
