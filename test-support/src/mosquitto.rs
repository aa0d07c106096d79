//! A private Mosquitto for tests that stop, kill or reconfigure the broker
//! (the machine's shared one on 1883 is never touched): `mosquitto -c` on a
//! free loopback port with a configuration the test chooses (its own lines,
//! or the project's reference `deploy/mosquitto/mosquitto.conf` with its
//! password file and ACL), started and waited for, killed on drop. Needs
//! `mosquitto` (and for passwords `mosquitto_passwd`) on PATH.

use crate::net::{free_port, wait_port};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The broker settings ingest needs (see deploy/mosquitto/mosquitto.conf):
/// no per-session queue limit (Mosquitto drops QoS 1 beyond it even after
/// PUBACK to the publisher) and a wide in-flight window for manual acks.
pub const INGEST_SETTINGS: &str = "persistence false
allow_anonymous true
max_queued_messages 0
max_inflight_messages 0
";

/// How long a start may take before the test fails.
const START_WITHIN: Duration = Duration::from_secs(10);

/// Lines that send the broker's errors and warnings to `dir/mosquitto.log`.
pub fn log_to(dir: &Path) -> String {
    format!(
        "log_dest file {}/mosquitto.log\nlog_type error\nlog_type warning\n",
        dir.display()
    )
}

/// Listener options for TLS with [`crate::certs::broker_certs`]'s files in `dir`.
pub fn tls_listener_options(dir: &Path, ca_file: &str) -> String {
    let d = dir.display();
    format!("cafile {d}/{ca_file}\ncertfile {d}/server.crt\nkeyfile {d}/server.key\n")
}

/// A running (or stopped, to be restarted) private broker.
pub struct Mosquitto {
    pub port: u16,
    tls: bool,
    conf: PathBuf,
    child: Option<Child>,
    _own_dir: Option<tempfile::TempDir>,
}

impl Mosquitto {
    /// `listener PORT 127.0.0.1` and `settings`, in a temp folder of its own
    /// (removed on drop).
    pub fn start(settings: &str) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = Mosquitto::start_in(dir.path(), settings);
        m._own_dir = Some(dir);
        m
    }

    /// `listener PORT 127.0.0.1` and `settings` (persistence, TLS options:
    /// they apply to its one listener), the config written in `dir`.
    pub fn start_in(dir: &Path, settings: &str) -> Mosquitto {
        Mosquitto::start_with_conf(dir, |port| format!("listener {port} 127.0.0.1\n{settings}"))
    }

    /// The whole configuration made by `conf` for the free port it is given.
    pub fn start_with_conf(dir: &Path, conf: impl FnOnce(u16) -> String) -> Mosquitto {
        let port = free_port();
        let path = dir.join("mosquitto.conf");
        std::fs::write(&path, conf(port)).expect("write mosquitto.conf");
        let mut m = Mosquitto {
            port,
            tls: false,
            conf: path,
            child: None,
            _own_dir: None,
        };
        m.restart();
        m
    }

    /// The project's reference configuration (`repo/deploy/mosquitto/`),
    /// rewritten only in its listener address, its paths (persistence,
    /// password file, ACL, all in `dir`) and its log destination, with
    /// `extra` listener options last (TLS). The ACL is copied into `dir`;
    /// `users` (name, password) make the password file, hashed with
    /// `mosquitto_passwd -U`. The broker runs as root in tests (`user root`).
    pub fn start_project(
        repo: &Path,
        dir: &Path,
        users: &[(&str, &str)],
        extra: &str,
    ) -> Mosquitto {
        let reference = std::fs::read_to_string(repo.join("deploy/mosquitto/mosquitto.conf"))
            .expect("deploy/mosquitto/mosquitto.conf");
        std::fs::copy(repo.join("deploy/mosquitto/acl"), dir.join("acl"))
            .expect("deploy/mosquitto/acl");
        let passwords: String = users.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
        std::fs::write(dir.join("passwd"), passwords).expect("password file");
        let hashed = Command::new("mosquitto_passwd")
            .arg("-U")
            .arg(dir.join("passwd"))
            .status()
            .expect("mosquitto_passwd must be installed (apt-get install -y mosquitto)");
        assert!(hashed.success(), "mosquitto_passwd -U");
        let mut m = Mosquitto::start_with_conf(dir, |port| {
            let conf = project_conf(&reference, dir, port);
            conf + "user root\n" + &log_to(dir) + extra
        });
        m.tls = extra.contains("certfile");
        m
    }

    /// Marks the listener as TLS: [`url`](Self::url) says `mqtts://`.
    pub fn with_tls(mut self) -> Mosquitto {
        self.tls = true;
        self
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts the broker (again) from its configuration and waits until it listens.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the broker is running");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (apt-get install -y mosquitto)");
        self.child = Some(child);
        wait_port(self.port, "the private mosquitto", START_WITHIN);
    }

    /// SIGTERM (the broker saves its persistent sessions), then waits.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// SIGKILL: no save; what arrived since the last autosave is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGHUP: Mosquitto reloads its password file and ACL.
    pub fn reload(&self) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -HUP {pid}");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `reference` with its `listener` on 127.0.0.1:`port` and its persistence
/// folder, password file and ACL in `dir`; every other line as it is.
pub fn project_conf(reference: &str, dir: &Path, port: u16) -> String {
    let d = dir.display();
    let mut conf = String::new();
    for line in reference.lines() {
        let line = match line.split_whitespace().next() {
            Some("listener") => format!("listener {port} 127.0.0.1"),
            Some("persistence_location") => format!("persistence_location {d}/"),
            Some("password_file") => format!("password_file {d}/passwd"),
            Some("acl_file") => format!("acl_file {d}/acl"),
            _ => line.to_string(),
        };
        conf.push_str(&line);
        conf.push('\n');
    }
    for key in [
        "listener ",
        "persistence_location",
        "password_file",
        "acl_file",
        "allow_anonymous false",
    ] {
        assert!(conf.contains(key), "the reference config has {key}");
    }
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_conf_is_rewritten_in_port_and_paths_only() {
        let reference = "listener 1883\nallow_anonymous false\npersistence true\n\
                         persistence_location /mosquitto/data/\npassword_file /etc/m/passwd\n\
                         acl_file /etc/m/acl\nautosave_interval 30\n";
        let conf = project_conf(reference, Path::new("/tmp/x"), 4242);
        assert_eq!(
            conf,
            "listener 4242 127.0.0.1\nallow_anonymous false\npersistence true\n\
             persistence_location /tmp/x/\npassword_file /tmp/x/passwd\n\
             acl_file /tmp/x/acl\nautosave_interval 30\n"
        );
    }

    #[test]
    fn a_private_broker_listens_stops_and_restarts() {
        let mut m = Mosquitto::start(INGEST_SETTINGS);
        assert_eq!(m.url(), format!("mqtt://127.0.0.1:{}", m.port));
        assert!(std::net::TcpStream::connect(("127.0.0.1", m.port)).is_ok());
        m.stop();
        assert!(std::net::TcpStream::connect(("127.0.0.1", m.port)).is_err());
        m.restart();
        assert!(std::net::TcpStream::connect(("127.0.0.1", m.port)).is_ok());
        let port = m.port;
        drop(m);
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "killed on drop"
        );
    }

    #[test]
    fn the_project_broker_runs_from_the_reference_files() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let dir = tempfile::tempdir().unwrap();
        let m = Mosquitto::start_project(&repo, dir.path(), &[("ingest", "pw-1")], "");
        let passwd = std::fs::read_to_string(dir.path().join("passwd")).unwrap();
        assert!(
            passwd.starts_with("ingest:") && !passwd.contains("pw-1"),
            "hashed: {passwd}"
        );
        assert!(dir.path().join("acl").exists());
        m.reload();
        assert!(std::net::TcpStream::connect(("127.0.0.1", m.port)).is_ok());
    }
}
