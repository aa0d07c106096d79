//! A throw-away PostgreSQL cluster of the test's own: `initdb` and `pg_ctl`
//! from the newest /usr/lib/postgresql/*/bin, in a temp folder, on a free
//! port, trust authentication, fsync off (the OS does not crash in these
//! tests, the server does). As root, the server runs as `postgres` on a
//! folder chowned to it. Stopped on drop; the shared server is never touched.

use crate::net::{free_port, wait_port};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub struct PgCluster {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

/// The newest PostgreSQL server installation's `bin` folder.
pub fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("/usr/lib/postgresql (scripts/test installs the server)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("a PostgreSQL installation")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

fn as_postgres(bin: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgCluster {
    /// initdb, then [`up`](Self::up).
    pub fn start() -> PgCluster {
        let bin = pg_bin();
        let dir = tempfile::tempdir().expect("tempdir");
        if is_root() {
            let mut c = Command::new("chown");
            c.args(["-R", "postgres:postgres"]).arg(dir.path());
            run(c, "chown");
        }
        let mut c = as_postgres(&bin, "initdb");
        c.arg("-D")
            .arg(dir.path().join("data"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null());
        run(c, "initdb");
        let pg = PgCluster {
            port: free_port(),
            bin,
            dir,
        };
        pg.up();
        pg
    }

    /// The cluster's `postgres` database as the `postgres` role.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The data folder (postgresql.conf, pg_hba.conf), owned by the server's user.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let mut c = as_postgres(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=40",
                self.port,
                self.dir.path().display()
            ))
            .args(["-w", "-t", "30", "start"])
            .stdout(Stdio::null());
        run(c, "pg_ctl start");
        wait_port(self.port, "postgres", Duration::from_secs(10));
    }

    /// A clean shutdown (`pg_ctl stop -m fast`): the next [`up`](Self::up)
    /// reads the data folder as changed meanwhile.
    pub fn stop(&self) {
        let mut c = as_postgres(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null());
        run(c, "pg_ctl stop");
    }

    /// Stops the server the hard way (like a crash: no checkpoint, clients
    /// cut mid-transaction; the next start recovers from WAL).
    pub fn crash(&self) {
        let mut c = as_postgres(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null());
        run(c, "pg_ctl stop");
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let mut c = as_postgres(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = c.status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_private_cluster_serves_crashes_recovers_and_stops() {
        let pg = PgCluster::start();
        let pool = sqlx::PgPool::connect(&pg.url()).await.expect("connects");
        let port: i32 = sqlx::query_scalar("SELECT current_setting('port')::int")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(port as u16, pg.port);
        pool.close().await;
        pg.crash();
        // One attempt each (a pool would retry until its timeout).
        use sqlx::Connection;
        assert!(sqlx::PgConnection::connect(&pg.url()).await.is_err());
        pg.up();
        let pool = sqlx::PgPool::connect(&pg.url()).await.expect("recovered");
        pool.close().await;
        pg.stop();
        assert!(
            sqlx::PgConnection::connect(&pg.url()).await.is_err(),
            "stopped"
        );
    }
}
