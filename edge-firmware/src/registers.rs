//! The meter's Modbus register map: one image of 16 input registers that the
//! RTU slave, the simulator's TCP server and the device profile
//! `fixtures/profiles/waterworks-sim-v1.toml` all agree on (a test proves the
//! file and these constants match).
//!
//! | registers | content                                   | type, word order |
//! |-----------|-------------------------------------------|------------------|
//! | 0-3       | net totalizer, whole litres               | u64, ABCD        |
//! | 4-5       | flow, 0.1 L/h, negative when flowing back | i32, ABCD        |
//! | 6         | latched alarm bits (see [`alarm_bit`])    | u16              |
//! | 7         | reserved, always 0                        | u16              |
//! | 8-11      | forward totalizer, whole litres           | u64, ABCD        |
//! | 12-15     | reverse totalizer, whole litres           | u64, ABCD        |
//!
//! The same image answers function 04 (read input registers) and function 03
//! (read holding registers): the meter has no writable registers, so mirroring
//! is harmless and serves gateways that only speak 03. This module never
//! changes meter state: reading is side-effect free.

/// Number of registers in the map; addresses are `0..REGISTER_COUNT`.
pub const REGISTER_COUNT: usize = 16;

/// First register of the net totalizer (u64, 4 words, big-endian words).
pub const REG_VOLUME: u16 = 0;
/// First register of the flow (i32, 2 words, tenths of a litre per hour).
pub const REG_FLOW: u16 = 4;
/// The latched alarm bits.
pub const REG_ALARMS: u16 = 6;
/// Reserved; reads as 0.
pub const REG_RESERVED: u16 = 7;
/// First register of the forward totalizer (u64, 4 words).
pub const REG_FORWARD_VOLUME: u16 = 8;
/// First register of the reverse totalizer (u64, 4 words).
pub const REG_REVERSE_VOLUME: u16 = 12;

/// Scale of the flow register: one unit is 0.1 L/h.
pub const FLOW_UNITS_PER_LPH: i32 = 10;

/// Bit numbers (0 = least significant) of the alarm register.
pub mod alarm_bit {
    /// Flow never fell to zero for the leak window (24 h).
    pub const LEAK: u8 = 0;
    /// Flow above the meter's maximum (Q4).
    pub const BURST: u8 = 1;
    /// Water flowed backwards.
    pub const BACKFLOW: u8 = 2;
    /// Magnet or cover switch.
    pub const TAMPER: u8 = 3;
    /// Battery below its threshold.
    pub const LOW_BATTERY: u8 = 4;
    /// The pipe ran empty (no water at the sensor).
    pub const EMPTY_PIPE: u8 = 5;

    /// Every alarm with the name the device profile uses for it.
    pub const ALL: [(&str, u8); 6] = [
        ("leak", LEAK),
        ("burst", BURST),
        ("backflow", BACKFLOW),
        ("tamper", TAMPER),
        ("low_battery", LOW_BATTERY),
        ("empty_pipe", EMPTY_PIPE),
    ];
}

/// The register image at one instant.
pub type RegisterImage = [u16; REGISTER_COUNT];

/// Why a read of the image was refused; maps one to one onto Modbus exceptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadError {
    /// Quantity 0 or above 125 (Modbus exception 03, illegal data value).
    IllegalQuantity,
    /// Some requested register is outside the map (exception 02, illegal data address).
    IllegalAddress,
}

/// The largest quantity Modbus allows in one read of registers.
pub const MAX_READ_QUANTITY: u16 = 125;

/// The registers `address..address + quantity` of `image`, checked the way the
/// Modbus specification orders the checks (quantity first, then address).
pub fn read(image: &RegisterImage, address: u16, quantity: u16) -> Result<&[u16], ReadError> {
    if quantity == 0 || quantity > MAX_READ_QUANTITY {
        return Err(ReadError::IllegalQuantity);
    }
    let start = usize::from(address);
    let end = start + usize::from(quantity);
    image.get(start..end).ok_or(ReadError::IllegalAddress)
}

/// Writes a u64 as four big-endian words (ABCD) at `at`.
pub(crate) fn put_u64(image: &mut RegisterImage, at: u16, v: u64) {
    let at = usize::from(at);
    image[at] = (v >> 48) as u16;
    image[at + 1] = (v >> 32) as u16;
    image[at + 2] = (v >> 16) as u16;
    image[at + 3] = v as u16;
}

/// Writes an i32 as two big-endian words (ABCD) at `at`.
pub(crate) fn put_i32(image: &mut RegisterImage, at: u16, v: i32) {
    let at = usize::from(at);
    let v = v as u32;
    image[at] = (v >> 16) as u16;
    image[at + 1] = v as u16;
}

/// Reads back a u64 written by [`put_u64`] (for tests and the journal).
pub fn get_u64(image: &RegisterImage, at: u16) -> u64 {
    let at = usize::from(at);
    image[at..at + 4]
        .iter()
        .fold(0u64, |acc, w| (acc << 16) | u64::from(*w))
}

/// Reads back an i32 written by [`put_i32`].
pub fn get_i32(image: &RegisterImage, at: u16) -> i32 {
    let at = usize::from(at);
    ((u32::from(image[at]) << 16) | u32::from(image[at + 1])) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        let mut img = [0u16; REGISTER_COUNT];
        put_u64(&mut img, REG_VOLUME, 0x0102_0304_0506_0708);
        put_i32(&mut img, REG_FLOW, -25);
        assert_eq!(&img[0..4], &[0x0102, 0x0304, 0x0506, 0x0708]);
        assert_eq!(&img[4..6], &[0xFFFF, 0xFFE7]);
        assert_eq!(get_u64(&img, REG_VOLUME), 0x0102_0304_0506_0708);
        assert_eq!(get_i32(&img, REG_FLOW), -25);
    }

    #[test]
    fn reads_are_checked() {
        let img = [7u16; REGISTER_COUNT];
        assert_eq!(read(&img, 0, 16).unwrap().len(), 16);
        assert_eq!(read(&img, 15, 1).unwrap(), &[7]);
        assert_eq!(read(&img, 15, 2), Err(ReadError::IllegalAddress));
        assert_eq!(read(&img, 0, 0), Err(ReadError::IllegalQuantity));
        assert_eq!(read(&img, 0, 126), Err(ReadError::IllegalQuantity));
        assert_eq!(read(&img, u16::MAX, 125), Err(ReadError::IllegalAddress));
    }
}
