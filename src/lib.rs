//! The `waterworks` command: the whole platform from one binary.
//!
//! - [`cli`]: the subcommands (`demo`, `tariff quote`, one per service,
//!   `meters register`, `migrate`).
//! - [`demo`]: simulator → gateway → MQTT → ingest → PostgreSQL → billing on
//!   one machine, on a simulated clock.
//! - [`fleet`]: the demo's city, generated from a seed.
//! - [`broker`]: the embedded MQTT broker (rumqttd) the demo uses by default.
//! - [`database`]: finding or starting a PostgreSQL for the demo.
//! - [`progress`]: the demo's progress bar or lines.
//! - [`spools`]: the demo's gateway spools, tied to the database they feed.
//!
//! The services themselves live in their crates (`edge-firmware`, `gateway`,
//! `ingest`, `billing`); this crate only wires them together.

pub mod broker;
pub mod cli;
pub mod database;
pub mod demo;
pub mod fleet;
pub mod import;
pub mod progress;
pub mod spools;
pub mod summary;
