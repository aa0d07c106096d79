//! The typed contracts of the Waterworks HTTP APIs.
//!
//! One crate, not a module inside each service, because three parties must
//! agree on each type: the service that answers (billing, ingest), and the
//! console and the `waterworks` CLI that ask. Each of them depends on this
//! crate; none depends on another's internals, and the console does not link
//! sqlx. Renaming a field here breaks the build of every party at once,
//! which is the point.
//!
//! - [`error`]: the one error body every operation answers with, and its codes.
//! - [`Role`]: the roles a bearer token carries; every operation states its own.
//! - [`billing`]: bills, billing runs, the ledger, accounts, payments, reports.
//! - [`ingest`]: meters, readings, gateways, the quarantine, the dashboard.
//! - [`master`]: customers, premises, meters and installations, and imports.
//!
//! The OpenAPI 3.1 documents are generated from these types and the
//! services' handlers ([`utoipa`]); each service serves its own at
//! `/api/v1/openapi.json`, and a copy is committed under `docs/openapi/`
//! (a test fails when the copy is stale).
//!
//! With the `sqlx` feature (the services turn it on), row types derive
//! `sqlx::FromRow` and enums `sqlx::Type`, so a service reads a row straight
//! into the type it answers with.

pub mod billing;
pub mod error;
pub mod ingest;
pub mod master;

pub use error::{ErrorBody, ErrorCode};

use serde::{Deserialize, Serialize};

/// The role a bearer token carries. `viewer` reads; `clerk` runs billing,
/// cancels, rebills and records payments; `operator` runs the platform
/// (meters, gateways, quarantine); `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Clerk,
    Operator,
    Admin,
}

impl Role {
    /// Whether a caller holding `self` may do what needs `required`.
    pub fn allows(self, required: Role) -> bool {
        match (self, required) {
            (Role::Admin, _) => true,
            (_, Role::Viewer) => true,
            (held, req) => held == req,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Clerk => "clerk",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}
