//! The water meter's firmware core, and a simulated fleet that runs it.
//!
//! The core is `no_std` without an allocator, so it could ship on a
//! microcontroller; all of it is tested on the host:
//! - [`totalizer`]: exact flow integration into litre registers that roll over
//!   like a mechanical odometer;
//! - [`alarms`]: the latched alarm state machine (leak, burst, backflow,
//!   tamper, low battery, empty pipe) and its documented thresholds;
//! - [`meter`]: the meter that ties them together and renders the register image;
//! - [`registers`]: the Modbus register map (agrees with
//!   `fixtures/profiles/waterworks-sim-v1.toml`, a test proves it);
//! - [`rtu`]: the Modbus RTU slave (CRC-16/MODBUS framing, functions 03, 04
//!   and 08, exceptions; every write refused);
//! - [`device`]: the main loop in one value (boot from the journal, tick, answer RTU);
//! - [`journal`]: the totalizers journalled to flash (abstract [`journal::Flash`]
//!   trait), surviving a power cut at any byte of a write, wear-levelled.
//!
//! With the default `std` feature, [`sim`] serves many such meters over Modbus
//! TCP, driven by consumption profiles and injectable faults, on wall or
//! simulated time, deterministically from a seed.
//!
//! The core must never allocate, block or read a clock: time enters as `dt_ms`.

#![cfg_attr(not(feature = "std"), no_std)]

// The host test harness needs std even when the core is built without it.
#[cfg(all(test, not(feature = "std")))]
extern crate std;

pub mod alarms;
pub mod device;
pub mod journal;
pub mod meter;
pub mod registers;
pub mod rtu;
pub mod totalizer;

#[cfg(feature = "std")]
pub mod sim;

pub use alarms::{AlarmThresholds, Inputs};
pub use meter::{Direction, Meter, MeterConfig, Snapshot};
pub use registers::RegisterImage;
