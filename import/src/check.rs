//! Whether billing's master data and ingest's device registry agree, as
//! four lists ([`MasterCheck`]):
//!
//! - meters installed now in billing that ingest does not know (their
//!   readings are quarantined `unknown_meter`);
//! - meters ingest knows that are installed nowhere now (their readings are
//!   stored but billed to nobody);
//! - meters reporting under another gateway: billing's record and ingest's
//!   registry disagree, or ingest quarantined a reading of the meter as
//!   `wrong_gateway` in the last `days` days;
//! - premises without a meter installed now (they cannot be billed).
//!
//! `waterworks check master` fills them from the database (both schemas, in
//! one query each); the console, which has no database, with [`over_http`]:
//! ingest's `GET /api/v1/meters` and `GET /api/v1/quarantine`, billing's
//! master-data searches and details, with the caller's token. The APIs page
//! only so far ([`HTTP_MAX_METERS`] registered meters, [`HTTP_MAX_MASTER`]
//! premises and meters of billing); past that the check says it saw only a
//! part ([`MasterCheck::partial`]).

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use waterworks_api::ingest::{MeterList, QuarantinePage, QuarantineReason};
use waterworks_api::master::{Installation, Meter, MeterDetail, Premises, PremisesDetail};

/// One finding: the meter or premises and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub key: String,
    pub detail: String,
}

/// The four lists of the check.
#[derive(Debug, Clone, Default)]
pub struct MasterCheck {
    pub installed_unknown_to_ingest: Vec<Finding>,
    pub registered_not_installed: Vec<Finding>,
    pub other_gateway: Vec<Finding>,
    pub premises_without_meter: Vec<Finding>,
    /// Set when the check saw only part of the data (over HTTP, past the
    /// APIs' page sizes): what it left out.
    pub partial: Option<String>,
}

impl MasterCheck {
    pub fn is_clean(&self) -> bool {
        self.installed_unknown_to_ingest.is_empty()
            && self.registered_not_installed.is_empty()
            && self.other_gateway.is_empty()
            && self.premises_without_meter.is_empty()
    }

    /// The report; each list shows its first `show` findings.
    pub fn render(&self, show: usize) -> String {
        let mut s = String::new();
        for (title, list) in [
            (
                "meters installed in billing, unknown to ingest",
                &self.installed_unknown_to_ingest,
            ),
            (
                "meters registered with ingest, installed nowhere",
                &self.registered_not_installed,
            ),
            (
                "meters reporting under another gateway",
                &self.other_gateway,
            ),
            ("premises without a meter", &self.premises_without_meter),
        ] {
            let _ = writeln!(s, "{title}: {}", list.len());
            for f in list.iter().take(show) {
                let _ = writeln!(s, "  {} {}", f.key, f.detail);
            }
            if list.len() > show {
                let _ = writeln!(s, "  ... and {} more", list.len() - show);
            }
        }
        if let Some(p) = &self.partial {
            let _ = writeln!(s, "partial check: {p}");
        }
        if self.is_clean() {
            let _ = writeln!(s, "billing and ingest agree");
        }
        s
    }
}

/// Registered meters [`over_http`] reads (one page of ingest's list).
pub const HTTP_MAX_METERS: i64 = waterworks_api::ingest::MAX_ROWS;
/// Premises, and meters, of billing [`over_http`] reads (one search page
/// each; each premises and meter then one detail request).
pub const HTTP_MAX_MASTER: i64 = waterworks_api::master::MAX_SEARCH_LIMIT;
/// Quarantined `wrong_gateway` rows [`over_http`] reads, newest first.
const HTTP_MAX_QUARANTINE: usize = 10_000;

/// A GET answered with `T`, or why not.
async fn get<T: DeserializeOwned>(
    http: &reqwest::Client,
    service: &str,
    url: String,
    token: &str,
) -> anyhow::Result<T> {
    let resp = http
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach {service} at {url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body: waterworks_api::ErrorBody = resp.json().await.unwrap_or_else(|_| {
            waterworks_api::ErrorBody::new(waterworks_api::ErrorCode::Internal, "no error body")
        });
        anyhow::bail!("{service} answered {status} to {url}: {}", body.message);
    }
    resp.json()
        .await
        .map_err(|e| anyhow::anyhow!("{service}'s answer to {url} is not the expected one: {e}"))
}

/// Whether an installation is in place at `now`.
fn current(i: &Installation, now: DateTime<Utc>) -> bool {
    i.installed_at <= now && i.removed_at.is_none_or(|r| r > now)
}

/// The check over the services' HTTP APIs with `token` (billing: viewer;
/// ingest: operator, for the quarantine), for `wrong_gateway` readings in
/// the last `days` days.
pub async fn over_http(
    billing_url: &str,
    ingest_url: &str,
    token: &str,
    days: i64,
) -> anyhow::Result<MasterCheck> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()?;
    let (b, i) = (
        billing_url.trim_end_matches('/'),
        ingest_url.trim_end_matches('/'),
    );
    let now = Utc::now();
    let mut partial = Vec::new();

    let registry: MeterList = get(
        &http,
        "ingest",
        format!("{i}/api/v1/meters?limit={HTTP_MAX_METERS}"),
        token,
    )
    .await?;
    if registry.meters.len() as i64 >= HTTP_MAX_METERS {
        partial.push(format!("the first {HTTP_MAX_METERS} meters of ingest"));
    }
    let registered: BTreeMap<&str, &str> = registry
        .meters
        .iter()
        .map(|m| (m.meter_id.as_str(), m.gateway_id.as_str()))
        .collect();

    let premises: Vec<Premises> = get(
        &http,
        "billing",
        format!("{b}/api/v1/master/premises?limit={HTTP_MAX_MASTER}"),
        token,
    )
    .await?;
    let meters: Vec<Meter> = get(
        &http,
        "billing",
        format!("{b}/api/v1/master/meters?limit={HTTP_MAX_MASTER}"),
        token,
    )
    .await?;
    if premises.len() as i64 >= HTTP_MAX_MASTER || meters.len() as i64 >= HTTP_MAX_MASTER {
        partial.push(format!(
            "the first {HTTP_MAX_MASTER} premises and meters of billing"
        ));
    }
    // Installations in place now, from both sides' details.
    let mut installed: BTreeMap<String, String> = BTreeMap::new();
    let mut premises_without_meter = Vec::new();
    for p in &premises {
        let d: PremisesDetail = get(
            &http,
            "billing",
            format!("{b}/api/v1/master/premises/{}", seg(&p.account_no)),
            token,
        )
        .await?;
        let mut any = false;
        for inst in d.installations.iter().filter(|x| current(x, now)) {
            installed.insert(inst.meter_id.clone(), inst.account_no.clone());
            any = true;
        }
        if !any {
            premises_without_meter.push(Finding {
                key: p.account_no.clone(),
                detail: format!("customer {}", p.customer_id),
            });
        }
    }
    for m in &meters {
        let d: MeterDetail = get(
            &http,
            "billing",
            format!("{b}/api/v1/master/meters/{}", seg(&m.meter_id)),
            token,
        )
        .await?;
        for inst in d.installations.iter().filter(|x| current(x, now)) {
            installed.insert(inst.meter_id.clone(), inst.account_no.clone());
        }
    }

    let installed_unknown_to_ingest = installed
        .iter()
        .filter(|(m, _)| !registered.contains_key(m.as_str()))
        .map(|(m, a)| Finding {
            key: m.clone(),
            detail: format!("at premises {a}"),
        })
        .collect();
    let registered_not_installed = registry
        .meters
        .iter()
        .filter(|m| !installed.contains_key(&m.meter_id))
        .map(|m| Finding {
            key: m.meter_id.clone(),
            detail: format!("under gateway {}", m.gateway_id),
        })
        .collect();

    let mut other: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in &meters {
        if let Some(g) = registered.get(m.meter_id.as_str()) {
            if *g != m.gateway_id {
                other
                    .entry(m.meter_id.clone())
                    .or_default()
                    .insert(format!("billing says gateway {}, ingest {g}", m.gateway_id));
            }
        }
    }
    let since = now - chrono::Duration::days(days);
    let (mut cursor, mut seen) = (None::<i64>, 0usize);
    'pages: loop {
        let mut url = format!("{i}/api/v1/quarantine?reason=wrong_gateway&limit=1000");
        if let Some(c) = cursor {
            let _ = write!(url, "&cursor={c}");
        }
        let page: QuarantinePage = get(&http, "ingest", url, token).await?;
        for q in &page.items {
            seen += 1;
            if q.received_at <= since {
                break 'pages;
            }
            if q.reason != QuarantineReason::WrongGateway {
                continue;
            }
            if let Some(m) = &q.meter_id {
                other.entry(m.clone()).or_default().insert(format!(
                    "readings sent by gateway {} (quarantined wrong_gateway)",
                    q.gateway_id.as_deref().unwrap_or("?")
                ));
            }
        }
        match page.next_cursor {
            Some(c) if seen < HTTP_MAX_QUARANTINE => cursor = Some(c),
            Some(_) => {
                partial.push(format!(
                    "the newest {HTTP_MAX_QUARANTINE} wrong_gateway quarantine rows"
                ));
                break;
            }
            None => break,
        }
    }
    let other_gateway = other
        .into_iter()
        .map(|(key, d)| Finding {
            key,
            detail: d.into_iter().collect::<Vec<_>>().join("; "),
        })
        .collect();

    Ok(MasterCheck {
        installed_unknown_to_ingest,
        registered_not_installed,
        other_gateway,
        premises_without_meter,
        partial: (!partial.is_empty()).then(|| format!("read only {}", partial.join(", "))),
    })
}

/// A path segment, percent-encoded (keys are ASCII letters, digits and
/// `-_.`, but a 수용가번호 may hold anything).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Json;
    use waterworks_api::ingest::QuarantineItem;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn registered(id: &str, gw: &str) -> waterworks_api::ingest::Meter {
        waterworks_api::ingest::Meter {
            meter_id: id.into(),
            gateway_id: gw.into(),
            profile_id: "waterworks-sim-v1".into(),
            max_flow_lph: None,
            last_ts: None,
            last_volume_l: None,
            last_alarms: None,
            last_seen_at: None,
        }
    }

    fn meter(id: &str, gw: &str) -> Meter {
        Meter {
            meter_id: id.into(),
            serial: format!("S-{id}"),
            maker: String::new(),
            model: String::new(),
            profile_id: "waterworks-sim-v1".into(),
            diameter_mm: 15,
            manufactured_on: None,
            verified_on: None,
            gateway_id: gw.into(),
        }
    }

    fn premises(no: &str) -> Premises {
        Premises {
            account_no: no.into(),
            customer_id: "C1".into(),
            address: "대전".into(),
            road_address: String::new(),
            usage_type: "household".into(),
            diameter_mm: 15,
            households: 1,
            sewer_connected: true,
            levy_exempt: false,
            billing_group: "G".into(),
            reading_route: String::new(),
        }
    }

    fn inst(no: &str, m: &str, removed: Option<&str>) -> Installation {
        Installation {
            account_no: no.into(),
            meter_id: m.into(),
            installed_at: at("2024-01-01T00:00:00Z"),
            removed_at: removed.map(at),
            install_read_m3: rust_decimal::Decimal::ZERO,
        }
    }

    fn wrong_gateway(id: i64, meter: &str, gw: &str, days_ago: i64) -> QuarantineItem {
        let t = Utc::now() - chrono::Duration::days(days_ago);
        QuarantineItem {
            id,
            received_at: t,
            last_seen_at: t,
            seen_count: 1,
            gateway_id: Some(gw.into()),
            topic: String::new(),
            batch_seq: None,
            reason: QuarantineReason::WrongGateway,
            detail: String::new(),
            reading: None,
            payload: None,
            payload_len: None,
            payload_sha256: None,
            meter_id: Some(meter.into()),
            ts: None,
        }
    }

    /// Billing and ingest stand-ins on one port: ingest knows M-REG (not
    /// installed), M-OK and M-GW (under G2; billing says G1), and
    /// quarantined M-OK from G9 lately and M-OLD long ago; billing has P1
    /// with M-OK, M-GW and M-UNK (unknown to ingest) installed and P2 whose
    /// only meter was removed.
    async fn services() -> String {
        let app = axum::Router::new()
            .route(
                "/api/v1/meters",
                get(|| async {
                    Json(MeterList {
                        meters: vec![
                            registered("M-GW", "G2"),
                            registered("M-OK", "G1"),
                            registered("M-REG", "G1"),
                        ],
                    })
                }),
            )
            .route(
                "/api/v1/quarantine",
                get(|| async {
                    Json(QuarantinePage {
                        counts: BTreeMap::new(),
                        rows: BTreeMap::new(),
                        items: vec![
                            wrong_gateway(2, "M-OK", "G9", 1),
                            wrong_gateway(1, "M-OLD", "G9", 30),
                        ],
                        next_cursor: None,
                        truncated: false,
                    })
                }),
            )
            .route(
                "/api/v1/master/premises",
                get(|| async { Json(vec![premises("P1"), premises("P2")]) }),
            )
            .route(
                "/api/v1/master/premises/{no}",
                get(
                    |axum::extract::Path(no): axum::extract::Path<String>| async move {
                        let installations = if no == "P1" {
                            vec![
                                inst("P1", "M-OK", None),
                                inst("P1", "M-GW", None),
                                inst("P1", "M-UNK", None),
                            ]
                        } else {
                            vec![inst("P2", "M-GONE", Some("2024-06-01T00:00:00Z"))]
                        };
                        Json(PremisesDetail {
                            premises: premises(&no),
                            customer: None,
                            installations,
                        })
                    },
                ),
            )
            .route(
                "/api/v1/master/meters",
                get(|| async {
                    Json(vec![
                        meter("M-GONE", "G1"),
                        meter("M-GW", "G1"),
                        meter("M-OK", "G1"),
                        meter("M-UNK", "G1"),
                    ])
                }),
            )
            .route(
                "/api/v1/master/meters/{id}",
                get(
                    |axum::extract::Path(id): axum::extract::Path<String>| async move {
                        Json(MeterDetail {
                            meter: meter(&id, "G1"),
                            installations: vec![],
                        })
                    },
                ),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    fn keys(l: &[Finding]) -> Vec<&str> {
        l.iter().map(|f| f.key.as_str()).collect()
    }

    #[tokio::test]
    async fn the_four_lists_over_http() {
        let url = services().await;
        let c = over_http(&url, &url, "t", 7).await.unwrap();
        assert_eq!(keys(&c.installed_unknown_to_ingest), ["M-UNK"]);
        assert_eq!(c.installed_unknown_to_ingest[0].detail, "at premises P1");
        assert_eq!(keys(&c.registered_not_installed), ["M-REG"]);
        assert_eq!(keys(&c.other_gateway), ["M-GW", "M-OK"]);
        assert_eq!(
            c.other_gateway[0].detail,
            "billing says gateway G1, ingest G2"
        );
        assert!(
            c.other_gateway[1].detail.contains("G9"),
            "{:?}",
            c.other_gateway
        );
        assert_eq!(keys(&c.premises_without_meter), ["P2"]);
        assert_eq!(c.partial, None);
        assert!(!c.is_clean());
    }
}
