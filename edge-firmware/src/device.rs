//! The firmware's main loop in one value: the meter, its flash journal and
//! its RTU slave address. A microcontroller's `main` calls [`Device::boot`]
//! once, then [`Device::tick`] on every sensor sample and
//! [`Device::on_frame`] on every frame the UART delimits.
//!
//! Journal policy: the totalizers are committed when at least
//! [`JOURNAL_EVERY_L`] litres have moved (either way) since the last commit,
//! or when any water moved and [`JOURNAL_INTERVAL_MS`] has passed. A power cut
//! therefore loses less than `JOURNAL_EVERY_L` litres of register movement and
//! never corrupts the register. With 4 KiB pages (128 records) a household
//! meter (about 400 L a day) erases each of 8 pages about 15 times a year.

use crate::alarms::Inputs;
use crate::journal::{Flash, Journal, JournalError};
use crate::meter::{Meter, MeterConfig, Snapshot};
use crate::rtu::{self, Outcome, MAX_FRAME};

/// Litres of movement that force a journal commit.
pub const JOURNAL_EVERY_L: u64 = 10;
/// Longest time moved water stays uncommitted.
pub const JOURNAL_INTERVAL_MS: u64 = 3_600_000;

#[derive(Debug)]
pub struct Device<F: Flash> {
    meter: Meter,
    journal: Journal<F>,
    unit_id: u8,
    committed: Snapshot,
    since_commit_ms: u64,
}

impl<F: Flash> Device<F> {
    /// Boots: restores the totalizers from the journal, or on a blank chip
    /// starts from `config.initial_volume_l` and commits it at once.
    pub fn boot(config: MeterConfig, unit_id: u8, flash: F) -> Result<Self, JournalError> {
        let (mut journal, saved) = Journal::open(flash)?;
        let mut meter = Meter::new(config);
        let committed = match saved {
            Some(s) => {
                meter.restore(&s);
                s
            }
            None => {
                let s = meter.snapshot();
                journal.commit(&s)?;
                s
            }
        };
        Ok(Self {
            meter,
            journal,
            unit_id,
            committed,
            since_commit_ms: 0,
        })
    }

    /// One sensor sample: integrate, run the alarms, commit by the policy.
    pub fn tick(
        &mut self,
        flow_dlph: i32,
        dt_ms: u32,
        inputs: &Inputs,
    ) -> Result<(), JournalError> {
        self.meter.advance(flow_dlph, dt_ms, inputs);
        self.since_commit_ms = self.since_commit_ms.saturating_add(u64::from(dt_ms));
        let now = self.meter.snapshot();
        let moved_l = now.forward_l.abs_diff(self.committed.forward_l)
            + now.reverse_l.abs_diff(self.committed.reverse_l);
        let due = moved_l >= JOURNAL_EVERY_L
            || (self.since_commit_ms >= JOURNAL_INTERVAL_MS && now != self.committed);
        if due {
            self.journal.commit(&now)?;
            self.committed = now;
            self.since_commit_ms = 0;
        }
        Ok(())
    }

    /// Answers one RTU frame from the current registers.
    pub fn on_frame(&self, frame: &[u8], out: &mut [u8; MAX_FRAME]) -> Outcome {
        rtu::handle(frame, self.unit_id, &self.meter.registers(), out)
    }

    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    /// The snapshot last made durable.
    pub fn committed(&self) -> &Snapshot {
        &self.committed
    }

    /// Power off: hands the flash back (tests reboot from it).
    pub fn into_flash(self) -> F {
        self.journal.into_flash()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::MemFlash;
    use crate::registers::{get_u64, REG_VOLUME};

    type Chip = MemFlash<256, 4>;

    fn config() -> MeterConfig {
        MeterConfig {
            initial_volume_l: 5_000,
            ..MeterConfig::DEFAULT
        }
    }

    #[test]
    fn survives_reboots_losing_less_than_the_commit_step() {
        let mut d = Device::boot(config(), 1, Chip::new()).unwrap();
        assert_eq!(d.meter().net_l(), 5_000);
        // 600 L/h in one-second samples for 7 minutes: 70 L.
        for _ in 0..420 {
            d.tick(6_000, 1_000, &Inputs::NORMAL).unwrap();
        }
        let truth = d.meter().forward_l();
        let d = Device::boot(config(), 1, d.into_flash()).unwrap();
        assert!(d.meter().forward_l() <= truth);
        assert!(truth - d.meter().forward_l() < JOURNAL_EVERY_L);
    }

    #[test]
    fn a_cut_mid_commit_boots_the_previous_commit() {
        let mut d = Device::boot(config(), 1, Chip::new()).unwrap();
        for _ in 0..30 {
            d.tick(6_000, 1_000, &Inputs::NORMAL).unwrap();
        }
        let committed = *d.committed();
        let mut flash = d.into_flash();
        flash.cut_after(13);
        let mut d = Device::boot(config(), 1, flash).unwrap();
        let mut result = Ok(());
        for _ in 0..120 {
            result = d.tick(6_000, 1_000, &Inputs::NORMAL);
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err(), "the cut hit a commit");
        let mut flash = d.into_flash();
        flash.restore_power();
        let d = Device::boot(config(), 1, flash).unwrap();
        assert_eq!(d.meter().snapshot(), committed);
    }

    #[test]
    fn answers_rtu_reads_from_its_registers() {
        let d = Device::boot(config(), 9, Chip::new()).unwrap();
        let body = [9u8, 0x04, 0, 0, 0, 4];
        let mut frame = [0u8; 8];
        frame[..6].copy_from_slice(&body);
        frame[6..].copy_from_slice(&rtu::crc16(&body).to_le_bytes());
        let mut out = [0u8; MAX_FRAME];
        let Outcome::Reply(n) = d.on_frame(&frame, &mut out) else {
            panic!("no reply");
        };
        assert_eq!(n, 3 + 8 + 2);
        let mut img = [0u16; 16];
        for i in 0..4 {
            img[i] = u16::from_be_bytes([out[3 + 2 * i], out[4 + 2 * i]]);
        }
        assert_eq!(get_u64(&img, REG_VOLUME), 5_000);
    }
}
