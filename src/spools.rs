//! The demo's gateway spools belong to the database they feed.
//!
//! A gateway's spool keeps its batch sequence and every batch not yet handed
//! to the broker. The demo keeps its spools under `{state_dir}/spool`, so they
//! outlive the process: that is right while the demo keeps feeding the same
//! database (a killed run's unsent readings arrive on the next run), and wrong
//! on a fresh one, which would receive an earlier database's readings and see
//! the sequence start in the middle ("batch sequence gap").
//!
//! So each database carries an identity of its own, a random id written once
//! in `demo.instance` (one row), and the spool folder records the id of the
//! database it feeds in `{state_dir}/spool/database`. When the ids differ, or
//! the folder has spools but no record (an older demo), the demo removes the
//! spools before any gateway starts and says so.

use anyhow::Context;
use sqlx::PgPool;
use std::path::{Path, PathBuf};

/// The file, in the spool folder, naming the database the spools feed.
const RECORD: &str = "database";

/// What [`claim`] found and did, for the demo's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolClaim {
    /// No spools yet: they start empty, for this database.
    Fresh,
    /// The spools already feed this database and are kept as they are.
    Kept,
    /// The spools fed another database (or one not recorded) and were removed.
    Cleared {
        /// The id recorded for the spools, if any.
        previous: Option<String>,
        /// Gateway spool folders removed.
        gateways: usize,
        /// Bytes of spooled batches removed.
        bytes: u64,
    },
}

impl SpoolClaim {
    /// A line for the demo's output, when there is something to say.
    pub fn describe(&self, database_id: &str) -> Option<String> {
        match self {
            SpoolClaim::Fresh | SpoolClaim::Kept => None,
            SpoolClaim::Cleared {
                previous,
                gateways,
                bytes,
            } => Some(format!(
                "spools:   removed {gateways} gateway spool(s) ({bytes} bytes) of {}; \
                 this database ({database_id}) starts with fresh spools, so no earlier run's \
                 readings reach it",
                match previous {
                    Some(p) => format!("another database ({p})"),
                    None => "a database that was not recorded".to_string(),
                }
            )),
        }
    }
}

/// The identity of the database behind `pool`: created on first use, then
/// read back. A dropped and re-created database gets a new one.
pub async fn database_id(pool: &PgPool) -> anyhow::Result<String> {
    sqlx::query("CREATE SCHEMA IF NOT EXISTS demo")
        .execute(pool)
        .await
        .context("creating schema demo")?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS demo.instance ( \
           one boolean PRIMARY KEY DEFAULT true CHECK (one), \
           id text NOT NULL, \
           created_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(pool)
    .await
    .context("creating demo.instance")?;
    let fresh = format!("db-{:032x}", rand::random::<u128>());
    sqlx::query("INSERT INTO demo.instance (id) VALUES ($1) ON CONFLICT (one) DO NOTHING")
        .bind(&fresh)
        .execute(pool)
        .await
        .context("recording the database's identity")?;
    let id: String = sqlx::query_scalar("SELECT id FROM demo.instance")
        .fetch_one(pool)
        .await?;
    Ok(id)
}

/// The spool folder of the demo's gateways under `state_dir`.
pub fn spool_root(state_dir: &Path) -> PathBuf {
    state_dir.join("spool")
}

/// Makes the spools under `root` those of database `database_id`: keeps
/// them when they already are, removes them when they fed another database,
/// and records the id. Call before any gateway opens its spool.
pub fn claim(root: &Path, database_id: &str) -> anyhow::Result<SpoolClaim> {
    let record = root.join(RECORD);
    let previous = match std::fs::read_to_string(&record) {
        Ok(s) => Some(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", record.display())),
    };
    let outcome = if previous.as_deref() == Some(database_id) {
        SpoolClaim::Kept
    } else {
        let (gateways, bytes) = remove_spools(root)?;
        if gateways == 0 && previous.is_none() {
            SpoolClaim::Fresh
        } else {
            SpoolClaim::Cleared {
                previous,
                gateways,
                bytes,
            }
        }
    };
    if outcome != SpoolClaim::Kept {
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        // Written whole then renamed, so a crash leaves the old record or the new.
        let tmp = root.join(format!("{RECORD}.tmp"));
        std::fs::write(&tmp, format!("{database_id}\n"))
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &record)
            .with_context(|| format!("cannot write {}", record.display()))?;
    }
    Ok(outcome)
}

/// Removes every gateway spool folder under `root`; returns how many and
/// the bytes they held.
fn remove_spools(root: &Path) -> anyhow::Result<(usize, u64)> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", root.display())),
    };
    let (mut gateways, mut bytes) = (0, 0);
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if !entry.file_type()?.is_dir() {
            continue;
        }
        bytes += dir_bytes(&path);
        std::fs::remove_dir_all(&path)
            .with_context(|| format!("cannot remove the spool {}", path.display()))?;
        gateways += 1;
    }
    Ok((gateways, bytes))
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spools_of_another_database_are_removed_and_the_same_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = spool_root(dir.path());
        assert_eq!(claim(&root, "db-a").expect("claim"), SpoolClaim::Fresh);
        std::fs::create_dir_all(root.join("gw-01")).expect("mkdir");
        std::fs::write(root.join("gw-01").join("seg-1.wws"), b"12345").expect("write");
        assert_eq!(claim(&root, "db-a").expect("claim"), SpoolClaim::Kept);
        assert!(root.join("gw-01").join("seg-1.wws").exists());
        let c = claim(&root, "db-b").expect("claim");
        assert_eq!(
            c,
            SpoolClaim::Cleared {
                previous: Some("db-a".into()),
                gateways: 1,
                bytes: 5
            }
        );
        assert!(c.describe("db-b").expect("a line").contains("removed 1"));
        assert!(!root.join("gw-01").exists());
        assert_eq!(claim(&root, "db-b").expect("claim"), SpoolClaim::Kept);
    }

    #[test]
    fn unrecorded_spools_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = spool_root(dir.path());
        std::fs::create_dir_all(root.join("gw-02")).expect("mkdir");
        let c = claim(&root, "db-a").expect("claim");
        assert!(matches!(
            c,
            SpoolClaim::Cleared {
                previous: None,
                gateways: 1,
                ..
            }
        ));
    }
}
