//! PostgreSQL binary `COPY` encoding of reading rows
//! (`meter_id text, ts timestamptz, volume_l int8, flow_lph float8, alarms text[]`).
//! Binary saves the server parsing text: see the COPY floor in DESIGN.md.

use crate::vee::Row;
use bytes::{BufMut, BytesMut};
use chrono::{DateTime, Utc};

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
/// The OID of `text`, for array elements.
const TEXT_OID: i32 = 25;

pub const COPY_READINGS: &str =
    "COPY metering.readings (meter_id, ts, volume_l, flow_lph, alarms) FROM STDIN (FORMAT binary)";

pub fn pg_micros(ts: DateTime<Utc>) -> i64 {
    ts.timestamp_micros() - PG_EPOCH_OFFSET_US
}

/// How much of a COPY stream [`send`] hands to the connection at a time: the
/// server starts on the first rows while the rest are encoded, and no buffer
/// grows with the batch.
pub const SEND_CHUNK_BYTES: usize = 1 << 20;

/// Encodes rows as one complete binary COPY stream (header, tuples, trailer).
pub fn encode(rows: &[Row]) -> BytesMut {
    let mut b = BytesMut::with_capacity(19 + rows.len() * 64 + 2);
    header(&mut b);
    for r in rows {
        tuple(&mut b, r);
    }
    trailer(&mut b);
    b
}

/// Streams rows into an open `COPY ... FROM STDIN (FORMAT binary)` in
/// chunks of about [`SEND_CHUNK_BYTES`], reusing one buffer.
pub async fn send(
    copy: &mut sqlx::postgres::PgCopyIn<&mut sqlx::PgConnection>,
    rows: &[Row],
) -> Result<(), sqlx::Error> {
    let mut b = BytesMut::with_capacity(SEND_CHUNK_BYTES + 4096);
    header(&mut b);
    for r in rows {
        tuple(&mut b, r);
        if b.len() >= SEND_CHUNK_BYTES {
            copy.send(&b[..]).await?;
            b.clear();
        }
    }
    trailer(&mut b);
    copy.send(&b[..]).await?;
    Ok(())
}

fn header(b: &mut BytesMut) {
    b.put_slice(b"PGCOPY\n\xff\r\n\0");
    b.put_i32(0); // flags
    b.put_i32(0); // header extension length
}

fn trailer(b: &mut BytesMut) {
    b.put_i16(-1);
}

fn tuple(b: &mut BytesMut, r: &Row) {
    b.put_i16(5);
    b.put_i32(r.meter_id.len() as i32);
    b.put_slice(r.meter_id.as_bytes());
    b.put_i32(8);
    b.put_i64(pg_micros(r.ts));
    b.put_i32(8);
    b.put_i64(r.volume_l);
    match r.flow_lph {
        Some(f) => {
            b.put_i32(8);
            b.put_f64(f);
        }
        None => b.put_i32(-1),
    }
    if r.alarms.is_empty() {
        b.put_i32(-1);
    } else {
        let len = 20 + r.alarms.iter().map(|a| 4 + a.as_str().len()).sum::<usize>();
        b.put_i32(len as i32);
        b.put_i32(1); // dimensions
        b.put_i32(0); // no nulls
        b.put_i32(TEXT_OID);
        b.put_i32(r.alarms.len() as i32);
        b.put_i32(1); // lower bound
        for a in &r.alarms {
            let n = a.as_str();
            b.put_i32(n.len() as i32);
            b.put_slice(n.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_is_postgres_epoch() {
        let t = DateTime::parse_from_rfc3339("2000-01-01T00:00:01Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(pg_micros(t), 1_000_000);
    }

    #[test]
    fn empty_stream_is_header_and_trailer() {
        assert_eq!(encode(&[]).len(), 19 + 2);
    }
}
