//! Finding a PostgreSQL for the demo, in this order:
//! 1. `--database-url` or `DATABASE_URL`, used as given (except the default
//!    `.cargo/config.toml` sets for the tests, see [`given_url`]);
//! 2. the local server on 127.0.0.1:5432 (user `postgres`), in a database
//!    named `waterworks` created on first use;
//! 3. a private cluster started from the PostgreSQL binaries on the machine
//!    (`/usr/lib/postgresql/*/bin`), kept under `.waterworks/postgres` and
//!    stopped when the demo ends;
//! 4. otherwise a clear message saying what to install.

use anyhow::{bail, Context};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

pub const LOCAL_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const DEMO_DATABASE: &str = "waterworks";

/// Where the demo's data lives, and how to let go of it.
pub struct Database {
    pub url: String,
    pub origin: Origin,
}

pub enum Origin {
    Given,
    LocalServer,
    Private(PrivateCluster),
}

impl Database {
    pub fn describe(&self) -> String {
        let shown = redact(&self.url);
        match &self.origin {
            Origin::Given => format!("{shown} (from DATABASE_URL / --database-url)"),
            Origin::LocalServer => format!("{shown} (the local server)"),
            Origin::Private(c) => format!("{shown} (private cluster in {})", c.dir.display()),
        }
    }
}

/// Hides a password in a URL shown to the user.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let opts = PgConnectOptions::from_str(url)
        .with_context(|| format!("{} is not a PostgreSQL URL", redact(url)))?
        .log_statements(tracing::log::LevelFilter::Trace);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", redact(url)))
}

/// Set by `.cargo/config.toml` to the same value as the `DATABASE_URL` it
/// gives the tests (the server's `postgres` database), so that a
/// `DATABASE_URL` that only cargo set can be told from one the user set.
pub const CARGO_DEFAULT_URL_VAR: &str = "WATERWORKS_CARGO_DEFAULT_DATABASE_URL";

/// The database URL the demo was given: `given` (from `--database-url` or
/// `DATABASE_URL`), unless it is only cargo's default for the tests
/// (`cargo_default`, from [`CARGO_DEFAULT_URL_VAR`]): then none, and the demo
/// uses its own database `waterworks` as the README says.
pub fn given_url(given: Option<String>, cargo_default: Option<String>) -> Option<String> {
    let given = given.filter(|u| !u.is_empty())?;
    match cargo_default {
        Some(d) if d == given => {
            tracing::info!("DATABASE_URL is cargo's default for the tests: the demo uses database {DEMO_DATABASE}");
            None
        }
        _ => Some(given),
    }
}

/// Resolves the demo's database (see the module doc for the order).
pub async fn resolve(given: Option<String>, state_dir: &Path) -> anyhow::Result<Database> {
    if let Some(url) = given.filter(|u| !u.is_empty()) {
        connect(&url, 1).await?.close().await;
        return Ok(Database {
            url,
            origin: Origin::Given,
        });
    }
    match connect(LOCAL_SERVER_URL, 1).await {
        Ok(pool) => {
            let url = ensure_database(&pool, LOCAL_SERVER_URL, DEMO_DATABASE).await?;
            pool.close().await;
            return Ok(Database {
                url,
                origin: Origin::LocalServer,
            });
        }
        Err(e) => {
            tracing::info!(error = %format!("{e:#}"), "no local PostgreSQL on 127.0.0.1:5432")
        }
    }
    let cluster = PrivateCluster::start(&state_dir.join("postgres"))?;
    let admin = cluster.url("postgres");
    let pool = connect(&admin, 1).await?;
    let url = ensure_database(&pool, &admin, DEMO_DATABASE).await?;
    pool.close().await;
    Ok(Database {
        url,
        origin: Origin::Private(cluster),
    })
}

/// Creates database `name` on the server of `pool` if missing; returns its URL.
pub async fn ensure_database(
    pool: &PgPool,
    server_url: &str,
    name: &str,
) -> anyhow::Result<String> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(pool)
            .await?;
    if !exists {
        // Identifiers cannot be bound; `name` is ours and quoted.
        let create = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        if let Err(e) = sqlx::query(&create).execute(pool).await {
            // Another process may have created it at the same moment.
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                    .bind(name)
                    .fetch_one(pool)
                    .await?;
            if !exists {
                return Err(e).context(format!("cannot create database {name}"));
            }
        }
    }
    let mut u = url::Url::parse(server_url).context("server URL")?;
    u.set_path(&format!("/{name}"));
    Ok(u.to_string())
}

/// A PostgreSQL cluster of our own, started from the machine's binaries.
pub struct PrivateCluster {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    run_as_postgres: bool,
}

impl PrivateCluster {
    /// The newest `/usr/lib/postgresql/N/bin` that has `initdb` and `pg_ctl`.
    pub fn find_binaries() -> Option<PathBuf> {
        let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let v: u32 = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((v, bin))
            })
            .collect();
        dirs.sort();
        dirs.pop().map(|(_, b)| b)
    }

    pub fn start(dir: &Path) -> anyhow::Result<PrivateCluster> {
        let Some(bin) = Self::find_binaries() else {
            bail!(
                "no PostgreSQL found: nothing answers on 127.0.0.1:5432, DATABASE_URL is not set, and no \
                 server binaries are under /usr/lib/postgresql/*/bin.\n\
                 Install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`) or set DATABASE_URL."
            );
        };
        // initdb refuses to run as root: then the cluster belongs to `postgres`.
        let run_as_postgres = running_as_root();
        let port = crate::broker::free_port()?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let cluster = PrivateCluster {
            dir: dir.clone(),
            port,
            bin,
            run_as_postgres,
        };
        if run_as_postgres {
            cluster.chown_to_postgres(&dir)?;
        }
        let data = dir.join("data");
        if !data.join("PG_VERSION").exists() {
            cluster.pg(
                "initdb",
                &[
                    "-D",
                    path_str(&data)?,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
            )?;
        }
        let log = dir.join("postgres.log");
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=on -c max_connections=50",
            path_str(&dir)?
        );
        cluster.pg(
            "pg_ctl",
            &[
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&log)?,
                "-o",
                &opts,
                "-w",
                "-t",
                "60",
                "start",
            ],
        )?;
        tracing::info!(port, dir = %dir.display(), "private PostgreSQL cluster started");
        Ok(cluster)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn stop(&self) {
        let data = self.dir.join("data");
        if let Ok(d) = path_str(&data) {
            if let Err(e) = self.pg("pg_ctl", &["-D", d, "-m", "fast", "-w", "stop"]) {
                tracing::warn!(error = %format!("{e:#}"), "could not stop the private cluster");
            }
        }
    }

    fn chown_to_postgres(&self, dir: &Path) -> anyhow::Result<()> {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres", path_str(dir)?])
            .status()
            .context("chown")?;
        if !status.success() {
            bail!(
                "cannot give {} to the postgres user (does it exist?)",
                dir.display()
            );
        }
        Ok(())
    }

    fn pg(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .output()
            .with_context(|| format!("cannot run {}", exe.display()))?;
        if !out.status.success() {
            bail!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

fn running_as_root() -> bool {
    // The real uid, read without unsafe code.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargos_test_default_is_not_the_users_choice() {
        let cargo = Some(LOCAL_SERVER_URL.to_string());
        assert_eq!(
            given_url(Some(LOCAL_SERVER_URL.into()), cargo.clone()),
            None
        );
        assert_eq!(given_url(None, cargo.clone()), None);
        assert_eq!(given_url(Some(String::new()), None), None);
        let mine = "postgres://me@db.example:5432/mine".to_string();
        assert_eq!(given_url(Some(mine.clone()), cargo), Some(mine.clone()));
        // Outside cargo (no marker), DATABASE_URL is always the user's.
        assert_eq!(
            given_url(Some(LOCAL_SERVER_URL.into()), None),
            Some(LOCAL_SERVER_URL.into())
        );
    }

    #[test]
    fn cargo_config_marks_its_test_default() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.cargo/config.toml"))
                .expect(".cargo/config.toml");
        let v: toml::Value = toml::from_str(&text).expect("TOML");
        let env = &v["env"];
        let url = env["DATABASE_URL"]["value"].as_str().unwrap();
        let marker = env[CARGO_DEFAULT_URL_VAR]["value"].as_str().unwrap();
        assert_eq!(url, marker, "the marker must equal cargo's DATABASE_URL");
        assert_eq!(
            env[CARGO_DEFAULT_URL_VAR]["force"].as_bool(),
            Some(true),
            "the marker always says what cargo's default is"
        );
        assert!(url.ends_with("/postgres"), "the tests' server database");
    }
}
