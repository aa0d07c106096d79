//! Bearer tokens against the running billing service: read from a Secret-like
//! directory, refused when weak, expired at `expires_at`, rotated without a
//! restart (service/src/auth.rs).

mod common;

use billing::{Billing, BillingConfig, BillingError};
use common::{database_url, http};
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use waterworks_service::auth::{TokenConfig, RELOAD_INTERVAL};

const OLD: &str = "9c4e1a7f3b8d2e6a0f5c9b1d7e3a8f2c6b0d4e9a";
const NEW: &str = "Xq3Lm8Rt1Wz6Kp0Nv4Bc7Hd2Jf9Gs5Ae3Yu8Io1";

fn config(pool: &PgPool, tokens: Vec<TokenConfig>) -> BillingConfig {
    let mut cfg = BillingConfig::new(
        &database_url(pool),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tariffs/daejeon.toml"),
    );
    cfg.http_listen = "127.0.0.1:0".parse().unwrap();
    cfg.tokens = tokens;
    cfg
}

fn token_file(dir: &Path, file: &str, name: &str, token: &str, expires_at: Option<&str>) {
    let mut text = format!("name = \"{name}\"\nrole = \"viewer\"\ntoken = \"{token}\"\n");
    if let Some(at) = expires_at {
        text.push_str(&format!("expires_at = \"{at}\"\n"));
    }
    // Written beside and renamed, as the kubelet swaps a Secret's files.
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(file)).unwrap();
}

async fn whoami(addr: std::net::SocketAddr, token: &str) -> u16 {
    http(addr, "GET", "/api/v1/whoami", Some(token), None)
        .await
        .0
}

/// Polls until `want` (or fails after a few reload intervals).
async fn eventually(addr: std::net::SocketAddr, token: &str, want: u16) {
    for _ in 0..40 {
        if whoami(addr, token).await == want {
            return;
        }
        tokio::time::sleep(RELOAD_INTERVAL / 8).await;
    }
    panic!("token never answered {want}");
}

#[sqlx::test(migrations = false)]
async fn placeholder_token_refuses_to_start(pool: PgPool) {
    let cfg = config(
        &pool,
        vec![TokenConfig::inline(
            "clerk-1",
            waterworks_service::auth::Role::Clerk,
            "change-me-clerk-token",
        )],
    );
    let Err(e) = Billing::build(cfg).await else {
        panic!("a placeholder token started the service");
    };
    assert!(matches!(e, BillingError::Token(_)), "{e}");
    let text = e.to_string();
    assert!(text.contains("tokens[0] (clerk-1)"), "{text}");
    assert!(!text.contains("change-me-clerk-token"), "{text}");
}

#[sqlx::test(migrations = false)]
async fn tokens_from_a_directory_expire_and_rotate_without_restart(pool: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    // The old token expires a few seconds from now.
    let expiry = chrono::Utc::now() + chrono::Duration::seconds(10);
    let expiry_text = expiry.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    token_file(dir.path(), "ops-2026", "ops", OLD, Some(&expiry_text));
    let billing = Billing::build(config(&pool, vec![TokenConfig::from_dir(dir.path())]))
        .await
        .unwrap();
    let addr = billing.http_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(billing.run_until_stopped(shutdown.clone()));

    assert_eq!(whoami(addr, OLD).await, 200);
    assert_eq!(whoami(addr, NEW).await, 401);

    // Rotation: the new token's file appears; the running service takes it
    // up, and the old one keeps working until its expiry.
    token_file(dir.path(), "ops-2027", "ops", NEW, None);
    eventually(addr, NEW, 200).await;
    assert!(chrono::Utc::now() < expiry);
    assert_eq!(whoami(addr, OLD).await, 200, "old token valid until expiry");

    // After the expiry the old token gets 401; the new one still works.
    let wait = (expiry - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_millis(200)).await;
    assert_eq!(whoami(addr, OLD).await, 401);
    assert_eq!(whoami(addr, NEW).await, 200);

    // Withdrawn: the file removed, the token stops working without a restart.
    std::fs::remove_file(dir.path().join("ops-2027")).unwrap();
    eventually(addr, NEW, 401).await;

    shutdown.cancel();
    task.await.unwrap().unwrap();
}
