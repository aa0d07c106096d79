//! Payments: one at a time, or a bank / collection file
//! (docs/payments-format.md).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The largest single payment accepted, KRW.
pub const MAX_PAYMENT_KRW: i64 = 1_000_000_000_000;
/// The largest bank file accepted, bytes (16 MiB).
pub const MAX_IMPORT_BYTES: usize = 16 << 20;

/// `POST /api/v1/payments`: idempotent on `reference`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    /// The bank's reference: the payment's idempotency key
    /// (A-Z a-z 0-9 - _ . : /).
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9_.:/-]{1,64}$",
        example = "KB-1"
    )]
    pub reference: String,
    #[schema(
        min_length = 1,
        max_length = 64,
        example = "AC00001",
        pattern = r"^[^\x00]*$"
    )]
    pub account_no: String,
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64, example = 12960)]
    #[serde(deserialize_with = "super::whole::i64")]
    pub amount_krw: i64,
    pub paid_on: NaiveDate,
}

/// What recording a payment did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PaymentOutcome {
    pub entry_id: i64,
    /// False when the same payment was recorded before (nothing posted).
    pub posted: bool,
}

/// A bad line of a bank file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LineError {
    /// 1-based, as an editor shows it.
    pub line: usize,
    pub reason: String,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ImportOutcome {
    /// Payment lines in the file (good and bad, header and comments excluded).
    pub lines: usize,
    /// Lines posted by this import.
    pub posted: usize,
    pub posted_krw: i64,
    /// Lines recorded by an earlier import (same reference, same content).
    pub already_recorded: usize,
    /// Bad lines, in file order (the first 1,000).
    pub errors: Vec<LineError>,
    pub error_count: usize,
}
