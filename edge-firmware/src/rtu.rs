//! The Modbus RTU slave: one complete frame in (the UART driver delimits
//! frames by the 3.5-character silence), at most one frame out.
//!
//! Supported: 03 read holding registers and 04 read input registers (both
//! answer the same register image, see [`crate::registers`]), 08 diagnostics
//! sub-function 0000 (return query data: the request is echoed). Everything
//! else, writes included, answers exception 01 (illegal function): the meter
//! is read-only, so no gateway can ever reset a billing register. Quantity
//! outside 1..=125 answers 03 (illegal data value); registers outside the map
//! answer 02 (illegal data address), checked in the order of the spec's state
//! diagrams.
//!
//! Per the serial-line specification, nothing is sent for a frame with a bad
//! CRC, for another unit, for a broadcast (unit 0) or for a frame too short or
//! too long to be one. The parser never panics on any input (property tested).

/// The largest RTU frame: address, PDU of at most 253 bytes, CRC.
pub const MAX_FRAME: usize = 256;
/// The broadcast address: never answered.
pub const BROADCAST: u8 = 0;

/// Modbus exception codes this slave sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exception {
    IllegalFunction = 0x01,
    IllegalDataAddress = 0x02,
    IllegalDataValue = 0x03,
}

/// Why a frame got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// Fewer than 4 bytes (address, function, CRC) or more than [`MAX_FRAME`].
    BadLength,
    BadCrc,
    /// Addressed to another unit.
    OtherUnit,
    Broadcast,
    /// A known function with a body of the wrong length: not a frame we can answer.
    Malformed,
}

/// What the slave does with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Send the first `n` bytes of the output buffer.
    Reply(usize),
    Silent(Silence),
}

/// CRC-16/MODBUS (reflected polynomial 0xA001, initial value 0xFFFF); sent
/// low byte first.
pub const fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    let mut i = 0;
    while i < data.len() {
        crc ^= data[i] as u16;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
            bit += 1;
        }
        i += 1;
    }
    crc
}

/// Handles one frame addressed to `unit_id`, answering from `registers`
/// (register `i` is address `i`); the answer is written into `out`.
pub fn handle(frame: &[u8], unit_id: u8, registers: &[u16], out: &mut [u8; MAX_FRAME]) -> Outcome {
    if frame.len() < 4 || frame.len() > MAX_FRAME {
        return Outcome::Silent(Silence::BadLength);
    }
    let (body, crc) = frame.split_at(frame.len() - 2);
    if crc16(body) != u16::from_le_bytes([crc[0], crc[1]]) {
        return Outcome::Silent(Silence::BadCrc);
    }
    let address = body[0];
    if address == BROADCAST {
        return Outcome::Silent(Silence::Broadcast);
    }
    if address != unit_id {
        return Outcome::Silent(Silence::OtherUnit);
    }
    let function = body[1];
    let data = &body[2..];
    let pdu_len = match function {
        0x03 | 0x04 => {
            if data.len() != 4 {
                return Outcome::Silent(Silence::Malformed);
            }
            let start = u16::from_be_bytes([data[0], data[1]]);
            let quantity = u16::from_be_bytes([data[2], data[3]]);
            if quantity == 0 || quantity > 125 {
                return exception(unit_id, function, Exception::IllegalDataValue, out);
            }
            let begin = usize::from(start);
            let end = begin + usize::from(quantity);
            let Some(words) = registers.get(begin..end) else {
                return exception(unit_id, function, Exception::IllegalDataAddress, out);
            };
            out[1] = function;
            out[2] = (quantity * 2) as u8;
            for (i, w) in words.iter().enumerate() {
                out[3 + 2 * i..5 + 2 * i].copy_from_slice(&w.to_be_bytes());
            }
            2 + usize::from(quantity) * 2
        }
        0x08 => {
            if data.len() < 2 {
                return Outcome::Silent(Silence::Malformed);
            }
            if u16::from_be_bytes([data[0], data[1]]) != 0x0000 {
                return exception(unit_id, function, Exception::IllegalFunction, out);
            }
            // Return query data: the echo is the request itself.
            out[1..body.len()].copy_from_slice(&body[1..]);
            body.len() - 1
        }
        _ => return exception(unit_id, function, Exception::IllegalFunction, out),
    };
    out[0] = unit_id;
    finish(out, 1 + pdu_len)
}

fn exception(unit_id: u8, function: u8, code: Exception, out: &mut [u8; MAX_FRAME]) -> Outcome {
    out[0] = unit_id;
    out[1] = function | 0x80;
    out[2] = code as u8;
    finish(out, 3)
}

fn finish(out: &mut [u8; MAX_FRAME], len: usize) -> Outcome {
    let crc = crc16(&out[..len]);
    out[len..len + 2].copy_from_slice(&crc.to_le_bytes());
    Outcome::Reply(len + 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Appends the CRC to a frame body.
    fn framed(body: &[u8]) -> heapless::Vec<u8, MAX_FRAME> {
        let mut v = heapless::Vec::new();
        v.extend_from_slice(body).unwrap();
        v.extend_from_slice(&crc16(body).to_le_bytes()).unwrap();
        v
    }

    fn answer(
        frame: &[u8],
        unit: u8,
        regs: &[u16],
    ) -> Result<heapless::Vec<u8, MAX_FRAME>, Silence> {
        let mut out = [0u8; MAX_FRAME];
        match handle(frame, unit, regs, &mut out) {
            Outcome::Reply(n) => Ok(heapless::Vec::from_slice(&out[..n]).unwrap()),
            Outcome::Silent(s) => Err(s),
        }
    }

    #[test]
    fn crc_matches_the_catalogue_and_serial_line_examples() {
        // CRC-16/MODBUS check value of the CRC catalogue.
        assert_eq!(crc16(b"123456789"), 0x4B37);
        // Read holding registers 40108-40110 of slave 0x11: "11 03 00 6B 00 03 76 87".
        assert_eq!(
            crc16(&[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03]).to_le_bytes(),
            [0x76, 0x87]
        );
    }

    /// The register map of the application protocol specification's examples:
    /// registers 108-110 hold 0x022B, 0x0000, 0x0064 and input register 9 holds 10.
    fn spec_map() -> [u16; 111] {
        let mut r = [0u16; 111];
        r[0x6B] = 0x022B;
        r[0x6C] = 0x0000;
        r[0x6D] = 0x0064;
        r[0x08] = 0x000A;
        r
    }

    #[test]
    fn answers_the_specification_examples() {
        let map = spec_map();
        // 6.3 Read Holding Registers: 03 00 6B 00 03 -> 03 06 02 2B 00 00 00 64.
        let req = framed(&[0x11, 0x03, 0x00, 0x6B, 0x00, 0x03]);
        assert_eq!(
            answer(&req, 0x11, &map).unwrap(),
            framed(&[0x11, 0x03, 0x06, 0x02, 0x2B, 0x00, 0x00, 0x00, 0x64])
        );
        // 6.4 Read Input Registers: 04 00 08 00 01 -> 04 02 00 0A.
        let req = framed(&[0x11, 0x04, 0x00, 0x08, 0x00, 0x01]);
        assert_eq!(
            answer(&req, 0x11, &map).unwrap(),
            framed(&[0x11, 0x04, 0x02, 0x00, 0x0A])
        );
        // 6.8.1 Diagnostics, return query data: 08 00 00 A5 37 is echoed.
        let req = framed(&[0x11, 0x08, 0x00, 0x00, 0xA5, 0x37]);
        assert_eq!(answer(&req, 0x11, &map).unwrap(), req);
    }

    #[test]
    fn refuses_writes_and_bad_requests_with_exceptions() {
        let map = [0u16; 16];
        let exc = |f: u8, code: u8| framed(&[7, f | 0x80, code]);
        // 06 write single register, 10 write multiple: illegal function.
        assert_eq!(
            answer(&framed(&[7, 0x06, 0, 0, 0, 0]), 7, &map).unwrap(),
            exc(0x06, 1)
        );
        assert_eq!(
            answer(&framed(&[7, 0x10, 0, 0, 0, 1, 2, 0, 0]), 7, &map).unwrap(),
            exc(0x10, 1)
        );
        assert_eq!(
            answer(&framed(&[7, 0x04, 0, 15, 0, 2]), 7, &map).unwrap(),
            exc(0x04, 2)
        );
        assert_eq!(
            answer(&framed(&[7, 0x03, 0, 0, 0, 0]), 7, &map).unwrap(),
            exc(0x03, 3)
        );
        assert_eq!(
            answer(&framed(&[7, 0x03, 0, 0, 0, 126]), 7, &map).unwrap(),
            exc(0x03, 3)
        );
        assert_eq!(
            answer(&framed(&[7, 0x08, 0, 1, 0, 0]), 7, &map).unwrap(),
            exc(0x08, 1)
        );
    }

    #[test]
    fn stays_silent_when_the_spec_says_so() {
        let map = [0u16; 16];
        let mut bad = framed(&[7, 0x04, 0, 0, 0, 1]);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(answer(&bad, 7, &map), Err(Silence::BadCrc));
        assert_eq!(
            answer(&framed(&[8, 0x04, 0, 0, 0, 1]), 7, &map),
            Err(Silence::OtherUnit)
        );
        assert_eq!(
            answer(&framed(&[0, 0x06, 0, 0, 0, 1]), 7, &map),
            Err(Silence::Broadcast)
        );
        assert_eq!(
            answer(&framed(&[7, 0x04, 0, 0, 1]), 7, &map),
            Err(Silence::Malformed)
        );
        assert_eq!(answer(&[7, 4, 0], 7, &map), Err(Silence::BadLength));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300), unit in any::<u8>()) {
            let map = [0x1234u16; 16];
            let mut out = [0u8; MAX_FRAME];
            if let Outcome::Reply(n) = handle(&bytes, unit, &map, &mut out) {
                prop_assert!((5..=MAX_FRAME).contains(&n));
                prop_assert_eq!(crc16(&out[..n - 2]).to_le_bytes(), [out[n - 2], out[n - 1]]);
            }
        }

        #[test]
        fn answers_every_well_formed_read_correctly(
            unit in 1u8..=247,
            function in prop_oneof![Just(3u8), Just(4u8)],
            start in 0u16..40,
            quantity in 0u16..140,
            map in proptest::array::uniform16(any::<u16>()),
        ) {
            let [sh, sl] = start.to_be_bytes();
            let [qh, ql] = quantity.to_be_bytes();
            let got = answer(&framed(&[unit, function, sh, sl, qh, ql]), unit, &map).unwrap();
            if quantity == 0 || quantity > 125 {
                prop_assert_eq!(got, framed(&[unit, function | 0x80, 3]));
            } else if usize::from(start) + usize::from(quantity) > 16 {
                prop_assert_eq!(got, framed(&[unit, function | 0x80, 2]));
            } else {
                let mut body: heapless::Vec<u8, MAX_FRAME> = heapless::Vec::new();
                body.extend_from_slice(&[unit, function, (quantity * 2) as u8]).unwrap();
                for w in &map[usize::from(start)..usize::from(start + quantity)] {
                    body.extend_from_slice(&w.to_be_bytes()).unwrap();
                }
                prop_assert_eq!(got, framed(&body));
            }
        }
    }
}
