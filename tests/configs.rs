//! The example configurations the README points to must stay loadable.

use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .expect("example exists")
}

#[test]
fn gateway_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config/gateway.toml");
    let cfg = gateway::load_config(&path).expect("deploy/config/gateway.toml is valid");
    assert_eq!(cfg.gateway_id.as_str(), "gw-01");
    assert_eq!(cfg.poll.interval_s, 900);
}

#[test]
fn ingest_example_is_valid() {
    let cfg: ingest::IngestConfig =
        toml::from_str(&read("deploy/config/ingest.toml")).expect("ingest.toml");
    assert_eq!(
        cfg.mqtt.subscription,
        waterworks_wire::topic::SHARED_READINGS_FILTER
    );
    assert_tokens_from_secret(&cfg.tokens);
}

/// The examples the images copy in carry no token, only the directory the
/// Secret is mounted on (a placeholder there would be a working token).
fn assert_tokens_from_secret(tokens: &[waterworks_service::auth::TokenConfig]) {
    assert!(!tokens.is_empty());
    for t in tokens {
        assert!(t.token.is_none(), "{t:?}: an inline token");
        assert_eq!(
            t.dir.as_deref(),
            Some(Path::new("/run/secrets/waterworks-tokens"))
        );
    }
}

#[test]
fn billing_example_is_valid() {
    let cfg: billing::BillingConfig =
        toml::from_str(&read("deploy/config/billing.toml")).expect("billing.toml");
    let tariff = Path::new(env!("CARGO_MANIFEST_DIR")).join(&cfg.tariff_file);
    billing::tariff::TariffBook::load(&tariff).expect("its tariff file loads");
    assert_tokens_from_secret(&cfg.tokens);
}

#[test]
fn embedded_tariff_and_profile_load() {
    waterworks::demo::load_tariff(None).expect("embedded Daejeon tariff");
    waterworks_wire::profile::DeviceProfile::from_toml(
        waterworks::demo::SIM_PROFILE_TOML,
        "embedded",
    )
    .expect("profile");
}

#[test]
fn demo_tokens_are_strong_and_independent() {
    let admin = "5f0c9a3e7b1d84c2a6e0f9b3d7c1a5e82b4f6d0c9e3a7b1d5f8c2e6a0b4d9f3c";
    let tokens = waterworks::demo::demo_tokens(admin);
    waterworks_service::auth::ApiTokens::new(&tokens).expect("every demo token passes the rule");
    for t in &tokens[1..] {
        let token = t.token.as_ref().map(|s| s.expose()).unwrap();
        // A role's token no longer carries the admin token inside it.
        assert!(!token.contains(admin), "{}", t.name);
    }
}
