//! Private service instances for fault tests: a Mosquitto and a PostgreSQL
//! cluster of the test's own, on free ports, stopped (and their files
//! removed) when dropped. The shared services are never touched.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_tcp(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} never listened on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The broker settings ingest needs (see deploy/mosquitto/mosquitto.conf):
/// no per-session queue limit (Mosquitto drops QoS 1 beyond it even after
/// PUBACK to the publisher) and a wide in-flight window for manual acks.
pub const MOSQUITTO_SETTINGS: &str = "persistence false
allow_anonymous true
max_queued_messages 0
max_inflight_messages 0
";

pub struct Mosquitto {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\n{MOSQUITTO_SETTINGS}"),
        )
        .expect("write mosquitto.conf");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto on PATH");
        wait_tcp(port, "mosquitto");
        Mosquitto {
            port,
            child,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throw-away PostgreSQL cluster (trust auth, fsync off: the OS does not
/// crash in these tests, the server does). As root, the server runs as
/// `postgres` on a directory chowned to it.
pub struct PgCluster {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

fn pg_bin() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("/usr/lib/postgresql")
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
    pub fn start() -> PgCluster {
        let bin = pg_bin();
        let dir = tempfile::tempdir().expect("tempdir");
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(dir.path());
                    c
                },
                "chown",
            );
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

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let mut c = as_postgres(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.path().join("data"))
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
        wait_tcp(self.port, "postgres");
    }

    /// Stops the server the hard way (like a crash: no checkpoint, clients
    /// cut mid-transaction; the next start recovers from WAL).
    pub fn crash(&self) {
        let mut c = as_postgres(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null());
        run(c, "pg_ctl stop");
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let mut c = as_postgres(&self.bin, "pg_ctl");
        c.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = c.status();
    }
}
