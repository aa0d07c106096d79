//! The one definition of what travels between the edge and the cluster.
//!
//! - [`ids`]: domain newtypes with parsing constructors (`MeterId`, `GatewayId`).
//! - [`reading`]: the JSON batch of MQTT contract v1 (`docs/mqtt-contract.md`).
//! - [`topic`]: topic names and the shared-subscription filter.
//! - [`profile`]: device profiles (register maps) read by the simulator and the gateway.
//! - [`clock`]: wall or simulated time, so a month of readings can run in seconds.
//!
//! This crate must never depend on a database or broker client: the gateway links it.

pub mod clock;
pub mod ids;
pub mod profile;
pub mod reading;
pub mod topic;

pub use ids::{GatewayId, IdError, MeterId};
pub use reading::{Alarm, DecodeError, Reading, ReadingBatch};
