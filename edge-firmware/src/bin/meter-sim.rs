//! `meter-sim`: serves a simulated fleet over Modbus TCP on the wall clock
//! until Ctrl-C, printing where each meter answers (for mbpoll, pymodbus or a
//! gateway started by hand).
//!
//! ```text
//! meter-sim [--meters N] [--per-port N] [--seed S] [--host IP] [--with-faults]
//! ```
//! Every tenth meter is commercial, every fiftieth a bathhouse, every
//! hundredth a factory, the rest single households; `--with-faults` adds one
//! meter of each fault at the end.

use edge_firmware::sim::{ConsumptionKind, Fault, SimConfig, SimMeter, Simulator};
use std::net::IpAddr;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use waterworks_wire::clock::Clock;
use waterworks_wire::MeterId;

struct Args {
    meters: usize,
    per_port: u8,
    seed: u64,
    host: IpAddr,
    with_faults: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        meters: 100,
        per_port: 247,
        seed: 1,
        host: IpAddr::from([127, 0, 0, 1]),
        with_faults: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--meters" => {
                a.meters = value("--meters")?
                    .parse()
                    .map_err(|e| format!("--meters: {e}"))?
            }
            "--per-port" => {
                a.per_port = value("--per-port")?
                    .parse()
                    .map_err(|e| format!("--per-port: {e}"))?
            }
            "--seed" => {
                a.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--host" => {
                a.host = value("--host")?
                    .parse()
                    .map_err(|e| format!("--host: {e}"))?
            }
            "--with-faults" => a.with_faults = true,
            "-h" | "--help" => {
                return Err(
                    "meter-sim [--meters N] [--per-port N] [--seed S] [--host IP] [--with-faults]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(a)
}

fn fleet(a: &Args) -> Vec<SimMeter> {
    let mut meters: Vec<SimMeter> = (0..a.meters)
        .map(|i| SimMeter {
            meter_id: MeterId::parse(format!("sim-{i:05}")).expect("a valid id"),
            kind: match i {
                i if i % 100 == 99 => ConsumptionKind::Industrial,
                i if i % 50 == 49 => ConsumptionKind::Bathhouse,
                i if i % 10 == 9 => ConsumptionKind::Commercial,
                _ => ConsumptionKind::Household { households: 1 },
            },
            initial_volume_l: 100_000 + (i as u64 * 7_919) % 900_000,
            fault: Fault::None,
        })
        .collect();
    if a.with_faults {
        let faults = [
            ("leak", Fault::Leak),
            ("burst", Fault::Burst),
            ("backflow", Fault::Backflow),
            ("tamper", Fault::Tamper),
            ("dead", Fault::Dead),
            ("exceptions", Fault::Exceptions),
            ("slow", Fault::Slow { delay_ms: 1_500 }),
        ];
        for (name, fault) in faults {
            meters.push(SimMeter {
                meter_id: MeterId::parse(format!("sim-fault-{name}")).expect("a valid id"),
                kind: ConsumptionKind::Household { households: 1 },
                initial_volume_l: 50_000,
                fault,
            });
        }
    }
    meters
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let config = SimConfig {
        host: args.host,
        meters_per_port: args.per_port,
        seed: args.seed,
        meters: fleet(&args),
    };
    let sim = match Simulator::bind(config, Clock::System).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("meter-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    for a in sim.addresses() {
        println!("{} {} {}", a.meter_id, a.addr, a.unit_id);
    }
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    match sim.run(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meter-sim: {e}");
            ExitCode::FAILURE
        }
    }
}
