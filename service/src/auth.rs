//! Bearer tokens with roles. Tokens come from configuration (a Kubernetes
//! Secret in production); only their SHA-256 is kept in memory, so a heap dump
//! or a `Debug` print never shows one.
//!
//! Roles: `viewer` reads; `clerk` runs billing, cancels, rebills and records
//! payments; `operator` runs the platform (meters, gateways, quarantine);
//! `admin` may do everything.

use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
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

/// One configured token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (shown in logs and audit records, never the token).
    pub name: String,
    pub role: Role,
    /// The bearer token itself; at least 16 characters.
    pub token: String,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token of {0:?} is shorter than 16 characters")]
    TooShort(String),
    #[error("two tokens are identical ({0:?} and {1:?})")]
    Duplicate(String, String),
}

/// Who made a request, put in the request's extensions by [`require`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// The set of valid tokens, by hash.
#[derive(Debug, Clone, Default)]
pub struct ApiTokens {
    by_hash: HashMap<[u8; 32], Caller>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl ApiTokens {
    pub fn new(tokens: &[TokenConfig]) -> Result<Self, TokenError> {
        let mut by_hash = HashMap::new();
        for t in tokens {
            if t.token.chars().count() < 16 {
                return Err(TokenError::TooShort(t.name.clone()));
            }
            let caller = Caller {
                name: t.name.clone(),
                role: t.role,
            };
            if let Some(prev) = by_hash.insert(digest(&t.token), caller) {
                return Err(TokenError::Duplicate(prev.name, t.name.clone()));
            }
        }
        Ok(Self { by_hash })
    }

    pub fn identify(&self, bearer: &str) -> Option<&Caller> {
        self.by_hash.get(&digest(bearer))
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// Wraps every route of `router` so it answers only callers whose role allows
/// `role`: 401 without a valid token, 403 with one whose role is too weak.
pub fn require<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
    tokens: Arc<ApiTokens>,
    role: Role,
) -> axum::Router<S> {
    router.route_layer(axum::middleware::from_fn_with_state((tokens, role), check))
}

/// `GET /api/v1/whoami` for any valid token (viewer and up): `{"name", "role"}`
/// of the caller, so a front end (the console) can learn who signed in
/// without being told any token's role itself. Both services mount it.
pub fn whoami<S: Clone + Send + Sync + 'static>(tokens: Arc<ApiTokens>) -> axum::Router<S> {
    require(
        axum::Router::new().route("/api/v1/whoami", axum::routing::get(whoami_handler)),
        tokens,
        Role::Viewer,
    )
}

async fn whoami_handler(
    axum::Extension(caller): axum::Extension<Caller>,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({ "name": caller.name, "role": caller.role }))
}

async fn check(
    State((tokens, role)): State<(Arc<ApiTokens>, Role)>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(bearer) = header.strip_prefix("Bearer ") else {
        return Err(ApiError::Unauthorized);
    };
    let Some(caller) = tokens.identify(bearer.trim()).cloned() else {
        return Err(ApiError::Unauthorized);
    };
    if !caller.role.allows(role) {
        tracing::info!(caller = %caller.name, role = caller.role.as_str(), needed = role.as_str(), "refused");
        return Err(ApiError::Forbidden(role));
    }
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    fn tokens() -> Arc<ApiTokens> {
        let t = |name: &str, role, token: &str| TokenConfig {
            name: name.into(),
            role,
            token: token.into(),
        };
        Arc::new(
            ApiTokens::new(&[
                t("v", Role::Viewer, "viewer-token-0000"),
                t("c", Role::Clerk, "clerk-token-00000"),
                t("a", Role::Admin, "admin-token-00000"),
            ])
            .unwrap(),
        )
    }

    async fn status(app: &axum::Router, token: Option<&str>) -> StatusCode {
        let mut req = Request::get("/x");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        app.clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn roles_gate_routes() {
        let app = require(
            axum::Router::new().route("/x", get(|| async { "ok" })),
            tokens(),
            Role::Clerk,
        );
        assert_eq!(status(&app, None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            status(&app, Some("nope-nope-nope-nope")).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(&app, Some("viewer-token-0000")).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            status(&app, Some("clerk-token-00000")).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&app, Some("admin-token-00000")).await,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn whoami_names_the_caller() {
        let app: axum::Router = whoami(tokens());
        let resp = app
            .clone()
            .oneshot(
                Request::get("/api/v1/whoami")
                    .header("authorization", "Bearer clerk-token-00000")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, serde_json::json!({"name": "c", "role": "clerk"}));
        let anon = app
            .oneshot(Request::get("/api/v1/whoami").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn role_lattice() {
        assert!(Role::Admin.allows(Role::Clerk));
        assert!(Role::Clerk.allows(Role::Viewer));
        assert!(!Role::Clerk.allows(Role::Operator));
        assert!(!Role::Viewer.allows(Role::Clerk));
    }

    #[test]
    fn short_and_duplicate_tokens_are_refused() {
        let t = |name: &str, token: &str| TokenConfig {
            name: name.into(),
            role: Role::Viewer,
            token: token.into(),
        };
        assert_eq!(
            ApiTokens::new(&[t("x", "short")]).unwrap_err(),
            TokenError::TooShort("x".into())
        );
        assert!(matches!(
            ApiTokens::new(&[t("x", "same-token-000000"), t("y", "same-token-000000")]),
            Err(TokenError::Duplicate(..))
        ));
        assert!(!format!("{:?}", t("x", "secret-secret-secret")).contains("secret-secret"));
    }
}
