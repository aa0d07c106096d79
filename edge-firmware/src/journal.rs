//! Power-loss-safe journal of the totalizers on NOR-like flash.
//!
//! Flash model ([`Flash`]): pages that erase to all `0xFF`, programmed a
//! 32-bit word at a time, where programming can only clear bits. A power cut
//! may stop a write after any byte, or an erase part-way.
//!
//! Records are appended, never rewritten: each is [`RECORD_SIZE`] bytes,
//! little-endian `seq u32 | forward_l u64 | forward_fraction u32 | reverse_l u64
//! | reverse_fraction u32 | crc32 u32`, the CRC-32 (IEEE) covering the first
//! 28 bytes. The CRC is written last, so a torn record never checks out.
//! Records fill a page slot by slot, then the next page, which is erased just
//! before its first record; the pages form a ring, so every page is erased
//! equally often (wear levelling). Boot scans every slot and takes the valid
//! record with the highest sequence number: the last complete commit, never
//! a torn one and never anything newer than what was committed (a commit
//! takes effect when the last bit of its record lands; a cut before that
//! recovers the previous commit). Writing
//! resumes at the first erased slot after it (slots left dirty by a torn
//! write are skipped). `seq` is a u32: a commit a minute lasts 8,000 years.

use crate::meter::Snapshot;

/// Bytes in one journal record.
pub const RECORD_SIZE: usize = 32;
const WORDS_PER_RECORD: usize = RECORD_SIZE / 4;

/// What the journal needs of the flash chip.
pub trait Flash {
    /// Bytes per erase page, a multiple of [`RECORD_SIZE`].
    fn page_size(&self) -> usize;
    /// Pages the journal may use (at least 2).
    fn pages(&self) -> usize;
    /// Reads `buf.len()` bytes at `offset`.
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), FlashError>;
    /// Sets every byte of `page` to `0xFF`.
    fn erase_page(&mut self, page: usize) -> Result<(), FlashError>;
    /// Programs the 4 bytes at the word-aligned `offset` (little-endian),
    /// clearing bits only.
    fn write_word(&mut self, offset: usize, word: u32) -> Result<(), FlashError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashError {
    /// The address lies outside the chip or is not word-aligned.
    OutOfRange,
    /// Power failed during the operation (the simulated chip's cut).
    PowerLost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalError {
    Flash(FlashError),
    /// Page size not a multiple of the record, or fewer than two pages.
    Geometry,
}

impl From<FlashError> for JournalError {
    fn from(e: FlashError) -> Self {
        JournalError::Flash(e)
    }
}

/// CRC-32 (IEEE 802.3, reflected 0xEDB88320), bitwise: no table in flash.
pub const fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    let mut i = 0;
    while i < data.len() {
        crc ^= data[i] as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
            bit += 1;
        }
        i += 1;
    }
    !crc
}

fn encode(seq: u32, s: &Snapshot) -> [u8; RECORD_SIZE] {
    let mut r = [0u8; RECORD_SIZE];
    r[0..4].copy_from_slice(&seq.to_le_bytes());
    r[4..12].copy_from_slice(&s.forward_l.to_le_bytes());
    r[12..16].copy_from_slice(&(s.forward_fraction as u32).to_le_bytes());
    r[16..24].copy_from_slice(&s.reverse_l.to_le_bytes());
    r[24..28].copy_from_slice(&(s.reverse_fraction as u32).to_le_bytes());
    let crc = crc32(&r[..28]);
    r[28..32].copy_from_slice(&crc.to_le_bytes());
    r
}

fn decode(r: &[u8; RECORD_SIZE]) -> Option<(u32, Snapshot)> {
    let word = |at: usize| u32::from_le_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]]);
    let long = |at: usize| u64::from(word(at)) | (u64::from(word(at + 4)) << 32);
    if word(28) != crc32(&r[..28]) {
        return None;
    }
    Some((
        word(0),
        Snapshot {
            forward_l: long(4),
            forward_fraction: u64::from(word(12)),
            reverse_l: long(16),
            reverse_fraction: u64::from(word(24)),
        },
    ))
}

/// The journal over one flash chip.
#[derive(Debug)]
pub struct Journal<F: Flash> {
    flash: F,
    /// Slot index (over the whole chip) the next record goes to.
    next_slot: usize,
    next_seq: u32,
}

impl<F: Flash> Journal<F> {
    /// Boots: finds the last committed snapshot (None on a blank chip) and
    /// where the next record goes.
    pub fn open(flash: F) -> Result<(Self, Option<Snapshot>), JournalError> {
        let page = flash.page_size();
        if page == 0 || page % RECORD_SIZE != 0 || flash.pages() < 2 {
            return Err(JournalError::Geometry);
        }
        let slots = flash.pages() * (page / RECORD_SIZE);
        let mut newest: Option<(u32, usize, Snapshot)> = None;
        let mut buf = [0u8; RECORD_SIZE];
        for slot in 0..slots {
            flash.read(slot * RECORD_SIZE, &mut buf)?;
            if let Some((seq, snap)) = decode(&buf) {
                if newest.is_none_or(|(s, _, _)| seq > s) {
                    newest = Some((seq, slot, snap));
                }
            }
        }
        let (next_slot, next_seq, snapshot) = match newest {
            Some((seq, slot, snap)) => ((slot + 1) % slots, seq.wrapping_add(1), Some(snap)),
            // A blank (or unreadable) chip starts at page 0, erased first.
            None => (0, 0, None),
        };
        Ok((
            Journal {
                flash,
                next_slot,
                next_seq,
            },
            snapshot,
        ))
    }

    fn slots_per_page(&self) -> usize {
        self.flash.page_size() / RECORD_SIZE
    }

    fn slots(&self) -> usize {
        self.flash.pages() * self.slots_per_page()
    }

    fn slot_is_erased(&self, slot: usize) -> Result<bool, FlashError> {
        let mut buf = [0u8; RECORD_SIZE];
        self.flash.read(slot * RECORD_SIZE, &mut buf)?;
        Ok(buf.iter().all(|b| *b == 0xFF))
    }

    /// Appends `s`; when this returns Ok, a power cut can no longer lose it.
    pub fn commit(&mut self, s: &Snapshot) -> Result<(), JournalError> {
        let per_page = self.slots_per_page();
        // Find a slot that can be programmed: at a page start, erase the
        // page (it holds only the oldest records); within a page, skip slots
        // dirtied by a torn write. Bounded by one lap of the ring.
        let mut tries = 0;
        loop {
            if tries > self.slots() {
                return Err(JournalError::Geometry);
            }
            tries += 1;
            let slot = self.next_slot;
            if slot % per_page == 0 {
                self.flash.erase_page(slot / per_page)?;
                break;
            }
            if self.slot_is_erased(slot)? {
                break;
            }
            self.next_slot = (slot + 1) % self.slots();
        }
        let record = encode(self.next_seq, s);
        let base = self.next_slot * RECORD_SIZE;
        // Word by word, the CRC word last: a cut anywhere leaves a record
        // whose CRC cannot match.
        for w in 0..WORDS_PER_RECORD {
            let b = &record[w * 4..w * 4 + 4];
            self.flash
                .write_word(base + w * 4, u32::from_le_bytes([b[0], b[1], b[2], b[3]]))?;
        }
        self.next_slot = (self.next_slot + 1) % self.slots();
        self.next_seq = self.next_seq.wrapping_add(1);
        Ok(())
    }

    pub fn into_flash(self) -> F {
        self.flash
    }
}

/// A RAM-backed flash chip of `PAGES` pages of `PAGE` bytes that can be told
/// to lose power after a number of programmed (or erased) bytes; the byte
/// under way when power goes is left half done (for tests; no allocator).
#[derive(Debug, Clone)]
pub struct MemFlash<const PAGE: usize, const PAGES: usize> {
    bytes: [[u8; PAGE]; PAGES],
    /// Bytes that may still be programmed or erased before the cut; None = no cut.
    budget: Option<usize>,
    /// Erase count per page (wear).
    pub erases: [u32; PAGES],
}

impl<const PAGE: usize, const PAGES: usize> MemFlash<PAGE, PAGES> {
    pub const fn new() -> Self {
        Self {
            bytes: [[0xFF; PAGE]; PAGES],
            budget: None,
            erases: [0; PAGES],
        }
    }

    /// Loses power after `bytes` more programmed (or erased) bytes.
    pub fn cut_after(&mut self, bytes: usize) {
        self.budget = Some(bytes);
    }

    /// Power is back: no cut pending.
    pub fn restore_power(&mut self) {
        self.budget = None;
    }

    /// Bytes left before the pending cut (None: no cut pending).
    pub fn budget_left(&self) -> Option<usize> {
        self.budget
    }

    fn spend(&mut self) -> Result<(), FlashError> {
        match &mut self.budget {
            None => Ok(()),
            Some(0) => Err(FlashError::PowerLost),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
        }
    }
}

impl<const PAGE: usize, const PAGES: usize> Default for MemFlash<PAGE, PAGES> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const PAGE: usize, const PAGES: usize> Flash for MemFlash<PAGE, PAGES> {
    fn page_size(&self) -> usize {
        PAGE
    }
    fn pages(&self) -> usize {
        PAGES
    }
    fn read(&self, offset: usize, buf: &mut [u8]) -> Result<(), FlashError> {
        for (i, b) in buf.iter_mut().enumerate() {
            let at = offset + i;
            *b = *self
                .bytes
                .get(at / PAGE)
                .and_then(|p| p.get(at % PAGE))
                .ok_or(FlashError::OutOfRange)?;
        }
        Ok(())
    }
    fn erase_page(&mut self, page: usize) -> Result<(), FlashError> {
        if page >= PAGES {
            return Err(FlashError::OutOfRange);
        }
        self.erases[page] += 1;
        for i in 0..PAGE {
            if let Err(e) = self.spend() {
                // The byte under erase when power went is half erased.
                self.bytes[page][i] |= 0xF0;
                return Err(e);
            }
            self.bytes[page][i] = 0xFF;
        }
        Ok(())
    }
    fn write_word(&mut self, offset: usize, word: u32) -> Result<(), FlashError> {
        if offset % 4 != 0 || offset + 4 > PAGE * PAGES {
            return Err(FlashError::OutOfRange);
        }
        for (i, b) in word.to_le_bytes().iter().enumerate() {
            let at = offset + i;
            if let Err(e) = self.spend() {
                // The byte being programmed when power went is half programmed.
                self.bytes[at / PAGE][at % PAGE] &= *b | 0x0F;
                return Err(e);
            }
            // NOR programming clears bits only.
            self.bytes[at / PAGE][at % PAGE] &= *b;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Chip = MemFlash<128, 3>; // 4 records a page, 3 pages

    fn snap(i: u64) -> Snapshot {
        Snapshot {
            forward_l: 1_000 + i * 7,
            forward_fraction: (i * 1_234_567) % 36_000_000,
            reverse_l: i / 3,
            reverse_fraction: (i * 7_654_321) % 36_000_000,
        }
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn blank_chip_then_commits_survive_reboots_and_wear_is_even() {
        let (mut j, s) = Journal::open(Chip::new()).unwrap();
        assert_eq!(s, None);
        for i in 0..100 {
            j.commit(&snap(i)).unwrap();
            if i % 9 == 0 {
                let (j2, s) = Journal::open(j.into_flash()).unwrap();
                assert_eq!(s, Some(snap(i)));
                j = j2;
            }
        }
        let flash = j.into_flash();
        let (min, max) = (
            flash.erases.iter().min().unwrap(),
            flash.erases.iter().max().unwrap(),
        );
        assert!(max - min <= 1, "wear is levelled: {:?}", flash.erases);
    }

    #[test]
    fn rejects_bad_geometry() {
        assert!(matches!(
            Journal::open(MemFlash::<100, 3>::new()),
            Err(JournalError::Geometry)
        ));
        assert!(matches!(
            Journal::open(MemFlash::<128, 1>::new()),
            Err(JournalError::Geometry)
        ));
    }

    proptest! {
        // Each case already cuts at ~160 points; 64 histories keep it fast.
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// After any history, a power cut at every byte of the next commit
        /// (its erase included; the byte under way left half done) recovers
        /// the last committed value. The commit point is the last bit of the
        /// record: a cut in the record's last byte may leave it complete, and
        /// then (only then) the new value is recovered. Never a torn record,
        /// never anything else. The journal then keeps working.
        #[test]
        fn recovers_the_last_commit_after_a_cut_at_every_byte(history in 0usize..20, after in 0usize..6) {
            let (mut j, _) = Journal::open(Chip::new()).unwrap();
            for i in 0..history {
                j.commit(&snap(i as u64)).unwrap();
            }
            let before = j.into_flash();
            let new = snap(history as u64);
            let previous = history.checked_sub(1).map(|h| snap(h as u64));
            // Bytes this commit programs and erases.
            let needed = {
                let mut flash = before.clone();
                flash.cut_after(usize::MAX);
                let (mut j, _) = Journal::open(flash).unwrap();
                j.commit(&new).unwrap();
                usize::MAX - j.into_flash().budget_left().unwrap()
            };
            prop_assert!(needed == RECORD_SIZE || needed == RECORD_SIZE + 128);
            for cut in 0..=needed {
                let mut flash = before.clone();
                flash.cut_after(cut);
                let (mut j, _) = Journal::open(flash).unwrap();
                let result = j.commit(&new);
                prop_assert_eq!(result.is_ok(), cut == needed);
                let mut flash = j.into_flash();
                flash.restore_power();
                let (mut j, recovered) = Journal::open(flash).unwrap();
                if result.is_ok() || (cut == needed - 1 && recovered == Some(new)) {
                    prop_assert_eq!(recovered, Some(new));
                } else {
                    prop_assert_eq!(recovered, previous, "cut after {} of {} bytes", cut, needed);
                }
                // Life goes on after the cut.
                let mut last = recovered;
                for k in 0..after {
                    let s = snap(1_000 + k as u64);
                    j.commit(&s).unwrap();
                    last = Some(s);
                }
                let (_, again) = Journal::open(j.into_flash()).unwrap();
                prop_assert_eq!(again, last);
            }
        }
    }
}
