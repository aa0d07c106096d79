//! The demo's city: meters, the gateways that read them, and the customer
//! accounts billed for them, all generated from one seed so that two runs
//! describe the same city (and the second stores nothing new).
//!
//! The mix follows a Korean city's customer base: mostly households (some of
//! them apartment blocks on one bulk meter), shops and offices on general
//! rates, a few bathhouses and factories.

use billing::accounts::{Account, MeterInstallation};
use chrono::{DateTime, Utc};
use edge_firmware::sim::{ConsumptionKind, Fault, SimMeter, Q4_SERIES_LPH};
use ingest::registry::MeterRegistration;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use waterworks_wire::{GatewayId, MeterId};

/// The profile every simulated meter speaks.
pub const SIM_PROFILE_ID: &str = "waterworks-sim-v1";
/// Its Q4 (permanent maximum flow), litres per hour, as the profile states.
pub const SIM_MAX_FLOW_LPH: f64 = 3125.0;

/// One premises: its meter as simulated, and its account as billed.
#[derive(Debug, Clone)]
pub struct Premises {
    pub meter: SimMeter,
    /// The meter's permanent maximum flow (Q4), L/h; ingest flags implied
    /// flows above it as spikes.
    pub max_flow_lph: f64,
    pub gateway: GatewayId,
    pub account: Account,
}

#[derive(Debug, Clone)]
pub struct Fleet {
    pub premises: Vec<Premises>,
    pub gateways: Vec<GatewayId>,
}

/// Options of a generated fleet.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub meters: usize,
    pub gateways: usize,
    pub seed: u64,
    /// Prefix of every id, so several fleets can share a broker (tests).
    pub id_prefix: String,
    /// Meters are installed from this instant (before the first read).
    pub installed_at: DateTime<Utc>,
    /// Adds a leaking and a back-flowing premises, as a real city has.
    pub with_faults: bool,
}

impl Fleet {
    pub fn generate(spec: &FleetSpec) -> Fleet {
        assert!(spec.gateways >= 1, "a fleet needs at least one gateway");
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let p = &spec.id_prefix;
        let gateways: Vec<GatewayId> = (1..=spec.gateways)
            .map(|g| GatewayId::parse(format!("{p}gw-{g:02}")).expect("generated ids are valid"))
            .collect();
        let premises = (0..spec.meters)
            .map(|i| {
                let meter_id = MeterId::parse(format!("{p}m-{:05}", i + 1)).expect("valid id");
                let roll: f64 = rng.gen();
                let (kind, usage_type, diameter_mm, households) = if roll < 0.70 {
                    (
                        ConsumptionKind::Household { households: 1 },
                        "household",
                        15,
                        1,
                    )
                } else if roll < 0.78 {
                    let h = rng.gen_range(4..=24u32);
                    let d = if h > 12 { 32 } else { 25 };
                    (
                        ConsumptionKind::Household { households: h },
                        "household",
                        d,
                        h,
                    )
                } else if roll < 0.92 {
                    let d = *[15u32, 20, 25].get(rng.gen_range(0..3)).unwrap_or(&20);
                    (ConsumptionKind::Commercial, "general", d, 1)
                } else if roll < 0.96 {
                    (ConsumptionKind::Bathhouse, "bathhouse", 50, 1)
                } else {
                    (ConsumptionKind::Industrial, "industrial", 80, 1)
                };
                let fault = if spec.with_faults && i == 6 {
                    Fault::Leak
                } else if spec.with_faults && i == 12 {
                    Fault::Backflow
                } else {
                    Fault::None
                };
                let meter = SimMeter {
                    meter_id: meter_id.clone(),
                    kind,
                    initial_volume_l: rng.gen_range(0..2_000_000u64),
                    fault,
                };
                let gateway = gateways[i % gateways.len()].clone();
                let account = Account {
                    account_no: format!("{p}{:07}", 1_000_001 + i),
                    customer: customer_name(&mut rng, usage_type),
                    address: format!("대전광역시 서구 둔산로 {}번길 {}", 10 + i / 40, 1 + i % 40),
                    usage_type: usage_type.to_string(),
                    diameter_mm,
                    households,
                    sewer_connected: rng.gen_bool(0.95),
                    levy_exempt: false,
                    billing_group: if i % 2 == 0 { "A".into() } else { "B".into() },
                    meters: vec![MeterInstallation {
                        meter_id: meter_id.as_str().to_string(),
                        installed_at: spec.installed_at,
                        removed_at: None,
                    }],
                };
                Premises {
                    meter,
                    max_flow_lph: SIM_MAX_FLOW_LPH,
                    gateway,
                    account,
                }
            })
            .collect();
        Fleet { premises, gateways }
    }

    /// Sizes each meter as the simulator did (the smallest ISO 4064 size its
    /// peak flow fits): the account is billed the base charge of that
    /// diameter and ingest judges spikes against that size's Q4.
    pub fn fit_meter_sizes(&mut self, diameter_of: impl Fn(&MeterId) -> Option<u16>) {
        for p in &mut self.premises {
            if let Some(d) = diameter_of(&p.meter.meter_id) {
                if let Some((_, q4)) = Q4_SERIES_LPH.iter().find(|(dn, _)| *dn == d) {
                    p.account.diameter_mm = u32::from(d);
                    p.max_flow_lph = f64::from(*q4);
                }
            }
        }
    }

    pub fn registrations(&self) -> Vec<MeterRegistration> {
        self.premises
            .iter()
            .map(|p| MeterRegistration {
                meter_id: p.meter.meter_id.clone(),
                gateway_id: p.gateway.clone(),
                profile_id: SIM_PROFILE_ID.to_string(),
                max_flow_lph: Some(p.max_flow_lph),
            })
            .collect()
    }

    pub fn accounts(&self) -> Vec<Account> {
        self.premises.iter().map(|p| p.account.clone()).collect()
    }

    pub fn billing_groups(&self) -> Vec<String> {
        let mut g: Vec<String> = self
            .premises
            .iter()
            .map(|p| p.account.billing_group.clone())
            .collect();
        g.sort();
        g.dedup();
        g
    }

    pub fn meter_ids(&self) -> Vec<String> {
        self.premises
            .iter()
            .map(|p| p.meter.meter_id.to_string())
            .collect()
    }
}

fn customer_name(rng: &mut ChaCha8Rng, usage_type: &str) -> String {
    const FAMILY: [&str; 10] = ["김", "이", "박", "최", "정", "강", "조", "윤", "장", "임"];
    const GIVEN: [&str; 10] = [
        "민준", "서연", "도윤", "지우", "하준", "서윤", "시우", "지민", "주원", "하은",
    ];
    const SHOP: [&str; 6] = [
        "행복상회",
        "한빛식당",
        "둔산약국",
        "새마을세탁",
        "푸른카페",
        "대전문구",
    ];
    match usage_type {
        "household" => format!(
            "{}{}",
            FAMILY[rng.gen_range(0..FAMILY.len())],
            GIVEN[rng.gen_range(0..GIVEN.len())]
        ),
        "bathhouse" => format!("{}목욕탕", ["온천", "청수", "한밭"][rng.gen_range(0..3)]),
        "industrial" => format!(
            "(주){}산업",
            ["대덕", "유성", "신탄진"][rng.gen_range(0..3)]
        ),
        _ => SHOP[rng.gen_range(0..SHOP.len())].to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> FleetSpec {
        FleetSpec {
            meters: 100,
            gateways: 2,
            seed: 7,
            id_prefix: String::new(),
            installed_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            with_faults: true,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_city() {
        let a = Fleet::generate(&spec());
        let b = Fleet::generate(&spec());
        let ids = |f: &Fleet| {
            f.premises
                .iter()
                .map(|p| {
                    (
                        p.meter.meter_id.to_string(),
                        p.meter.initial_volume_l,
                        p.account.usage_type.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
        assert_eq!(a.gateways.len(), 2);
        assert_eq!(a.billing_groups(), vec!["A".to_string(), "B".to_string()]);
    }

    #[test]
    fn every_meter_has_one_account_and_one_gateway() {
        let f = Fleet::generate(&spec());
        let mut accounts: Vec<_> = f.premises.iter().map(|p| &p.account.account_no).collect();
        accounts.sort();
        accounts.dedup();
        assert_eq!(accounts.len(), 100);
        assert!(f.premises.iter().all(|p| f.gateways.contains(&p.gateway)));
        assert!(f.premises.iter().any(|p| p.account.usage_type == "general"));
    }
}
