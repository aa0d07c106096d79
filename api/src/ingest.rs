//! The ingest service's contract: meters and their readings, gateways, the
//! quarantine and the operators' dashboard.
