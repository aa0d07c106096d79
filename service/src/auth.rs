//! (Long because token sources, the entropy rule, reloads and the middleware are one token set's lifecycle.)
//! Bearer tokens with roles, for every cluster service (ingest, billing).
//!
//! Where tokens come from (one `[[tokens]]` entry each):
//! - `token_file = "/run/secrets/…"`: a file holding the token (a Kubernetes
//!   Secret mounted as a volume); re-read while the service runs;
//! - `token_env = "VAR"`: an environment variable (a Secret as `env`), read
//!   at start;
//! - `dir = "/run/secrets/waterworks-tokens"`: a directory of token files,
//!   one per holder, each a small TOML document
//!   (`name`, `role`, `token`, optional `expires_at`); files whose names
//!   begin with `.` are skipped (Kubernetes' `..data` links). Re-read while
//!   the service runs, so a token is added, rotated or withdrawn by changing
//!   the Secret, without a restart;
//! - `token = "…"`: inline, for tests and local development only.
//!
//! Every entry may carry `expires_at` (RFC 3339): from then on the token gets
//! 401. Rotation without restart: add the new token (a new file in the
//! directory), set `expires_at` on the old one; both work until the old one
//! expires. Files and directories are re-read every [`RELOAD_INTERVAL`] and on SIGHUP; a reload that fails
//! (a half-written file, a weak token) keeps the previous set and logs why.
//!
//! Start-up refuses, naming the configuration field and never the token:
//! known placeholders (`change-me…`, `example`, …), tokens shorter than
//! [`MIN_TOKEN_CHARS`] characters, and tokens whose estimated entropy is under
//! [`MIN_TOKEN_BITS`] bits (see [`estimated_bits`] for the rule).
//!
//! Only the SHA-256 of each token is kept; a presented token is hashed and
//! compared against every stored digest in constant time, so neither a heap
//! dump, a `Debug` print nor response timing shows a token.
//!
//! Roles: `viewer` reads; `clerk` runs billing, cancels, rebills and records
//! payments; `operator` runs the platform (meters, gateways, quarantine);
//! `admin` may do everything.

use crate::error::ApiError;
use crate::secret::Secret;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

/// Tokens shorter than this are refused.
pub const MIN_TOKEN_CHARS: usize = 32;
/// Tokens whose [`estimated_bits`] fall below this are refused: 128 bits,
/// what 32 random hexadecimal characters would give if every one of the 16
/// appeared. `openssl rand -hex 32` (64 characters) or
/// `openssl rand -base64 32` (44) comfortably pass.
pub const MIN_TOKEN_BITS: f64 = 128.0;
/// How often file and directory sources are re-read.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// Token files larger than this are refused (a token is a line, not a file).
const MAX_TOKEN_FILE_BYTES: u64 = 16 * 1024;
/// Files read from one token directory at most.
const MAX_DIR_FILES: usize = 1_000;

/// Lower-cased fragments that mark a token as a placeholder from an example
/// configuration rather than a secret.
const PLACEHOLDERS: &[&str] = &[
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "replaceme",
    "replace_me",
    "placeholder",
    "example",
    "your-token",
    "your_token",
    "redacted",
    "password",
];

/// The roles, defined with the API contracts (a token's role is part of
/// every operation's contract).
pub use waterworks_api::Role;

/// One `[[tokens]]` entry: either one token (`name`, `role` and exactly one
/// of `token_file`, `token_env`, `token`) or a directory of token files
/// (`dir` alone). See the module documentation.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (shown in logs and audit records, never the token).
    #[serde(default)]
    pub name: String,
    /// The holder's role; required unless `dir`.
    #[serde(default)]
    pub role: Option<Role>,
    /// A file holding the token (surrounding whitespace is ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The token itself: tests and local development only. Never shown
    /// (`Debug` prints `Secret(***)`).
    #[serde(default)]
    pub token: Option<Secret>,
    /// From this instant on the token is refused (RFC 3339).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// A directory of token files (TOML: `name`, `role`, `token`,
    /// optional `expires_at`), re-read while the service runs.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

impl TokenConfig {
    /// An inline token (tests, development, the demo).
    pub fn inline(name: impl Into<String>, role: Role, token: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            role: Some(role),
            token: Some(Secret::new(token)),
            ..Self::default()
        }
    }

    /// A token read from a file (a mounted Secret).
    pub fn from_file(name: impl Into<String>, role: Role, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            role: Some(role),
            token_file: Some(path.into()),
            ..Self::default()
        }
    }

    /// A directory of token files.
    pub fn from_dir(path: impl Into<PathBuf>) -> Self {
        Self {
            dir: Some(path.into()),
            ..Self::default()
        }
    }

    /// Whether this entry is read from files (and so re-read while the
    /// service runs; an environment variable cannot change under a process).
    fn is_external(&self) -> bool {
        self.token_file.is_some() || self.dir.is_some()
    }
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token_file", &self.token_file)
            .field("token_env", &self.token_env)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("expires_at", &self.expires_at)
            .field("dir", &self.dir)
            .finish()
    }
}

/// A token file in a token directory.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DirToken {
    name: String,
    role: Role,
    token: String,
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

/// Why a token configuration is refused. `field` names the entry
/// (`tokens[2] (clerk-1)` or a file of a token directory); no variant ever
/// holds a token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("{field}: the token is a placeholder from an example configuration; generate one (e.g. `openssl rand -hex 32`)")]
    Placeholder { field: String },
    #[error("{field}: the token is shorter than {MIN_TOKEN_CHARS} characters")]
    TooShort { field: String },
    #[error("{field}: the token's estimated entropy is {bits} bits, under {MIN_TOKEN_BITS} (use e.g. `openssl rand -hex 32`)")]
    LowEntropy { field: String, bits: u32 },
    #[error("two tokens are identical ({0} and {1})")]
    Duplicate(String, String),
    #[error("{field}: {why}")]
    Invalid { field: String, why: String },
    #[error("{field}: cannot read {path}: {why}")]
    Unreadable {
        field: String,
        path: String,
        why: String,
    },
}

/// Who made a request, put in the request's extensions by [`require`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// One accepted token, as its digest.
#[derive(Clone)]
struct Entry {
    digest: [u8; 32],
    caller: Caller,
    expires_at: Option<DateTime<Utc>>,
}

/// A source, with inline and environment tokens already reduced to their
/// digest so the token itself is not kept.
enum Source {
    Inline(Entry),
    External { field: String, config: TokenConfig },
}

struct Inner {
    sources: Vec<Source>,
    entries: RwLock<Arc<Vec<Entry>>>,
}

/// The set of valid tokens, by digest. Cloning shares the set; a reload is
/// seen by every clone.
#[derive(Clone)]
pub struct ApiTokens {
    inner: Arc<Inner>,
}

impl Default for ApiTokens {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                sources: Vec::new(),
                entries: RwLock::new(Arc::new(Vec::new())),
            }),
        }
    }
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.snapshot();
        f.debug_struct("ApiTokens")
            .field(
                "holders",
                &entries
                    .iter()
                    .map(|e| (e.caller.name.as_str(), e.caller.role.as_str()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Compares two digests without an early exit.
fn digest_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Overwrites a token read from a file or the environment once its digest
/// is taken, so the heap does not keep it.
fn wipe(token: String) {
    let mut bytes = token.into_bytes();
    bytes.fill(0);
    std::hint::black_box(&bytes);
}

/// The estimated entropy of a token in bits, the rule [`MIN_TOKEN_BITS`]
/// is checked against: the smaller of
/// - length × log2(the alphabet the token actually uses), where that
///   alphabet is the number of distinct characters in it, at most the size
///   of the character classes it draws from (lower case 26, upper case 26,
///   digits 10, ASCII punctuation 33, anything else 128); and
/// - (distinct adjacent pairs + 1) × log2(class size), which catches
///   repeated patterns (`0123456789abcdef0123456789abcdef`).
///
/// It is a floor-style estimate for refusing obviously weak tokens, not a
/// measure of a good one: a dictionary phrase can pass it.
pub fn estimated_bits(token: &str) -> f64 {
    let chars: Vec<char> = token.chars().collect();
    if chars.is_empty() {
        return 0.0;
    }
    let mut classes = 0u32;
    let has = |f: fn(&char) -> bool| chars.iter().any(f);
    if has(|c| c.is_ascii_lowercase()) {
        classes += 26;
    }
    if has(|c| c.is_ascii_uppercase()) {
        classes += 26;
    }
    if has(|c| c.is_ascii_digit()) {
        classes += 10;
    }
    if has(|c| c.is_ascii_punctuation()) {
        classes += 33;
    }
    if has(|c| !c.is_ascii_alphanumeric() && !c.is_ascii_punctuation()) {
        classes += 128;
    }
    let distinct = chars.iter().collect::<HashSet<_>>().len() as u32;
    let pairs = chars.windows(2).collect::<HashSet<_>>().len() as f64;
    let per_char = f64::from(distinct.min(classes).max(1)).log2();
    let class_bits = f64::from(classes.max(1)).log2();
    (chars.len() as f64 * per_char).min((pairs + 1.0) * class_bits)
}

/// Refuses placeholders, short tokens and tokens of low estimated entropy.
pub fn check_strength(field: &str, token: &str) -> Result<(), TokenError> {
    let lower = token.to_lowercase();
    if PLACEHOLDERS.iter().any(|p| lower.contains(p)) {
        return Err(TokenError::Placeholder {
            field: field.into(),
        });
    }
    if token.chars().count() < MIN_TOKEN_CHARS {
        return Err(TokenError::TooShort {
            field: field.into(),
        });
    }
    let bits = estimated_bits(token);
    if bits < MIN_TOKEN_BITS {
        return Err(TokenError::LowEntropy {
            field: field.into(),
            bits: bits as u32,
        });
    }
    Ok(())
}

fn read_small(field: &str, path: &Path) -> Result<String, TokenError> {
    let unreadable = |why: String| TokenError::Unreadable {
        field: field.into(),
        path: path.display().to_string(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| unreadable(e.to_string()))?;
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err(unreadable(format!(
            "larger than {MAX_TOKEN_FILE_BYTES} bytes"
        )));
    }
    std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))
}

fn entry(
    field: &str,
    name: &str,
    role: Role,
    token: String,
    expires_at: Option<DateTime<Utc>>,
) -> Result<Entry, TokenError> {
    let checked = check_strength(field, &token);
    let digest = digest(&token);
    wipe(token);
    checked?;
    Ok(Entry {
        digest,
        caller: Caller {
            name: name.into(),
            role,
        },
        expires_at,
    })
}

/// Reads one entry's tokens (a directory gives several).
fn load(field: &str, c: &TokenConfig) -> Result<Vec<Entry>, TokenError> {
    let invalid = |why: &str| TokenError::Invalid {
        field: field.into(),
        why: why.into(),
    };
    if let Some(dir) = &c.dir {
        if !c.name.is_empty()
            || c.role.is_some()
            || c.token.is_some()
            || c.token_file.is_some()
            || c.token_env.is_some()
            || c.expires_at.is_some()
        {
            return Err(invalid(
                "`dir` stands alone: name, role and expiry are in each file",
            ));
        }
        return load_dir(field, dir);
    }
    if c.name.is_empty() {
        return Err(invalid("`name` is required"));
    }
    let Some(role) = c.role else {
        return Err(invalid("`role` is required"));
    };
    let sources = [
        c.token.is_some(),
        c.token_file.is_some(),
        c.token_env.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(invalid(
            "exactly one of `token_file`, `token_env`, `token` is required",
        ));
    }
    let token = if let Some(path) = &c.token_file {
        read_small(field, path)?.trim().to_string()
    } else if let Some(var) = &c.token_env {
        std::env::var(var)
            .map_err(|_| invalid(&format!("environment variable {var} is not set")))?
            .trim()
            .to_string()
    } else {
        c.token
            .as_ref()
            .map(|t| t.expose().to_string())
            .unwrap_or_default()
    };
    Ok(vec![entry(field, &c.name, role, token, c.expires_at)?])
}

fn load_dir(field: &str, dir: &Path) -> Result<Vec<Entry>, TokenError> {
    let unreadable = |why: String| TokenError::Unreadable {
        field: field.into(),
        path: dir.display().to_string(),
        why,
    };
    let mut paths = Vec::new();
    for item in std::fs::read_dir(dir).map_err(|e| unreadable(e.to_string()))? {
        let item = item.map_err(|e| unreadable(e.to_string()))?;
        if item.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        // Follows symbolic links (a mounted Secret's keys are links).
        if std::fs::metadata(item.path()).is_ok_and(|m| m.is_file()) {
            paths.push(item.path());
        }
        if paths.len() > MAX_DIR_FILES {
            return Err(unreadable(format!("more than {MAX_DIR_FILES} files")));
        }
    }
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        let file_field = format!("{field} file {}", path.display());
        let text = read_small(&file_field, &path)?;
        let parsed: Result<DirToken, _> = toml::from_str(&text);
        wipe(text);
        // The parse error may quote the document; say only where it failed.
        let t = parsed.map_err(|e| TokenError::Invalid {
            field: file_field.clone(),
            why: format!(
                "not a token file (name, role, token, expires_at): {}",
                e.message()
            ),
        })?;
        let field = format!("{file_field} ({})", t.name);
        out.push(entry(&field, &t.name, t.role, t.token, t.expires_at)?);
    }
    Ok(out)
}

impl ApiTokens {
    /// Reads and checks every source; refuses the whole set if any token is
    /// weak, unreadable or duplicated. Inside a tokio runtime, file and
    /// directory sources are then re-read every
    /// [`RELOAD_INTERVAL`] and on SIGHUP until the last clone is dropped.
    pub fn new(tokens: &[TokenConfig]) -> Result<Self, TokenError> {
        let mut sources = Vec::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            let field = if t.name.is_empty() {
                format!("tokens[{i}]")
            } else {
                format!("tokens[{i}] ({})", t.name)
            };
            if t.is_external() {
                sources.push(Source::External {
                    field,
                    config: t.clone(),
                });
            } else {
                let mut loaded = load(&field, t)?;
                sources.push(Source::Inline(loaded.remove(0)));
            }
        }
        let entries = collect(&sources)?;
        let external = sources.iter().any(|s| matches!(s, Source::External { .. }));
        let tokens = Self {
            inner: Arc::new(Inner {
                sources,
                entries: RwLock::new(Arc::new(entries)),
            }),
        };
        if external {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(watch(Arc::downgrade(&tokens.inner)));
            }
        }
        Ok(tokens)
    }

    /// Re-reads the file and directory sources. On error the
    /// previous set stays in force.
    pub fn reload(&self) -> Result<(), TokenError> {
        let entries = collect(&self.inner.sources)?;
        *self
            .inner
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(entries);
        Ok(())
    }

    fn snapshot(&self) -> Arc<Vec<Entry>> {
        self.inner
            .entries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The holder of `bearer` if it is a valid, unexpired token.
    pub fn identify(&self, bearer: &str) -> Option<Caller> {
        self.identify_at(bearer, Utc::now())
    }

    /// [`ApiTokens::identify`] at a given instant.
    pub fn identify_at(&self, bearer: &str, now: DateTime<Utc>) -> Option<Caller> {
        let d = digest(bearer);
        let mut found = None;
        // Every digest is compared, so timing says nothing of which matched.
        let entries = self.snapshot();
        for e in entries.iter() {
            if digest_eq(&e.digest, &d) && found.is_none() {
                found = Some(e);
            }
        }
        let e = found?;
        match e.expires_at {
            Some(t) if t <= now => None,
            _ => Some(e.caller.clone()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.snapshot().is_empty()
    }
}

fn collect(sources: &[Source]) -> Result<Vec<Entry>, TokenError> {
    let mut entries: Vec<Entry> = Vec::new();
    for s in sources {
        let loaded = match s {
            Source::Inline(e) => vec![e.clone()],
            Source::External { field, config } => load(field, config)?,
        };
        for e in loaded {
            if let Some(prev) = entries.iter().find(|p| digest_eq(&p.digest, &e.digest)) {
                return Err(TokenError::Duplicate(
                    prev.caller.name.clone(),
                    e.caller.name.clone(),
                ));
            }
            entries.push(e);
        }
    }
    Ok(entries)
}

/// Re-reads the sources until the token set is dropped.
async fn watch(inner: Weak<Inner>) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    loop {
        #[cfg(unix)]
        {
            let sighup = async {
                match hangup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => {}
                _ = sighup => tracing::info!("SIGHUP: re-reading tokens"),
            }
        }
        #[cfg(not(unix))]
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let tokens = ApiTokens { inner };
        // File reads are small and bounded; off the async workers anyway.
        let result = tokio::task::spawn_blocking(move || tokens.reload())
            .await
            .unwrap_or_else(|e| {
                Err(TokenError::Invalid {
                    field: "tokens".into(),
                    why: e.to_string(),
                })
            });
        match result {
            Ok(()) => last_error = None,
            Err(e) => {
                let why = e.to_string();
                if last_error.as_deref() != Some(&why) {
                    tracing::error!(error = %why, "token reload refused; the previous tokens stay in force");
                    metrics::counter!("waterworks_token_reload_failures_total").increment(1);
                }
                last_error = Some(why);
            }
        }
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
    let Some(caller) = tokens.identify(bearer.trim()) else {
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

    const VIEWER: &str = "3f9a1c7e5b2d48f06a1e9c3b7d5f2a8e4c6b0d9f1a3e5c7b";
    const CLERK: &str = "Qm7xK2pLw9RzT4vN8bYc3HdJ6fGs1AeU5iOk0tXq";
    const ADMIN: &str = "a9Fz-3Lq_8Wm2Xr7Kp4Nt6Vb1Jc5Hd0Gs.Ye";

    fn tokens() -> Arc<ApiTokens> {
        Arc::new(
            ApiTokens::new(&[
                TokenConfig::inline("v", Role::Viewer, VIEWER),
                TokenConfig::inline("c", Role::Clerk, CLERK),
                TokenConfig::inline("a", Role::Admin, ADMIN),
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
        assert_eq!(status(&app, Some(VIEWER)).await, StatusCode::FORBIDDEN);
        assert_eq!(status(&app, Some(CLERK)).await, StatusCode::OK);
        assert_eq!(status(&app, Some(ADMIN)).await, StatusCode::OK);
    }

    #[tokio::test]
    async fn whoami_names_the_caller() {
        let app: axum::Router = whoami(tokens());
        let resp = app
            .clone()
            .oneshot(
                Request::get("/api/v1/whoami")
                    .header("authorization", format!("Bearer {CLERK}"))
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

    fn refused(token: &str) -> TokenError {
        ApiTokens::new(&[TokenConfig::inline("clerk-1", Role::Clerk, token)]).unwrap_err()
    }

    #[test]
    fn placeholders_are_refused_without_showing_them() {
        for token in [
            "change-me-clerk-token",
            "change-me-operator-token",
            "CHANGEME-0f9a1c7e5b2d48f06a1e9c3b7d5f2a8e",
            "replace-me-0f9a1c7e5b2d48f06a1e9c3b7d5f2a8e",
            "example-0f9a1c7e5b2d48f06a1e9c3b7d5f2a8e4c",
        ] {
            let e = refused(token);
            assert_eq!(
                e,
                TokenError::Placeholder {
                    field: "tokens[0] (clerk-1)".into()
                },
                "{token}"
            );
            assert!(!e.to_string().contains(token));
            assert!(e.to_string().contains("tokens[0] (clerk-1)"));
        }
    }

    #[test]
    fn short_and_low_entropy_tokens_are_refused() {
        // What the old rule (16 characters) let through.
        assert!(matches!(
            refused("clerk-token-0123456789"),
            TokenError::TooShort { .. }
        ));
        for weak in [
            "a".repeat(64),
            "abababababababababababababababababababab".into(),
            "0123456789abcdef0123456789abcdef0123456789abcdef".into(),
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab".into(),
            "clerk-token-clerk-token-clerk-token-clerk-token".into(),
        ] {
            let e = refused(&weak);
            assert!(matches!(e, TokenError::LowEntropy { .. }), "{weak}: {e}");
            assert!(!e.to_string().contains(&weak));
        }
        // Random tokens of the recommended forms pass.
        for strong in [VIEWER, CLERK, ADMIN] {
            assert!(estimated_bits(strong) >= MIN_TOKEN_BITS, "{strong}");
        }
    }

    #[test]
    fn duplicates_and_incomplete_entries_are_refused() {
        assert!(matches!(
            ApiTokens::new(&[
                TokenConfig::inline("x", Role::Viewer, VIEWER),
                TokenConfig::inline("y", Role::Clerk, VIEWER)
            ]),
            Err(TokenError::Duplicate(..))
        ));
        let mut both = TokenConfig::inline("x", Role::Viewer, VIEWER);
        both.token_env = Some("WATERWORKS_X".into());
        assert!(matches!(
            ApiTokens::new(&[both]),
            Err(TokenError::Invalid { .. })
        ));
        let mut no_role = TokenConfig::inline("x", Role::Viewer, VIEWER);
        no_role.role = None;
        assert!(matches!(
            ApiTokens::new(&[no_role]),
            Err(TokenError::Invalid { .. })
        ));
    }

    #[test]
    fn only_digests_are_kept() {
        let config = TokenConfig::inline("c", Role::Clerk, CLERK);
        assert!(!format!("{config:?}").contains(CLERK));
        let set = tokens();
        let shown = format!("{set:?}");
        assert!(!shown.contains(CLERK) && !shown.contains(VIEWER) && !shown.contains(ADMIN));
        assert!(shown.contains("\"c\""));
        // Nothing inside the set holds the token text: only its digest.
        let inner = set.inner.entries.read().unwrap();
        assert!(inner
            .iter()
            .any(|e| e.digest == <[u8; 32]>::from(Sha256::digest(CLERK.as_bytes()))));
        for s in &set.inner.sources {
            assert!(matches!(s, Source::Inline(_)));
        }
    }

    #[test]
    fn tokens_expire() {
        let mut c = TokenConfig::inline("c", Role::Clerk, CLERK);
        let at: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
        c.expires_at = Some(at);
        let set = ApiTokens::new(&[c]).unwrap();
        let before: DateTime<Utc> = "2026-11-30T23:59:59Z".parse().unwrap();
        assert_eq!(set.identify_at(CLERK, before).unwrap().name, "c");
        assert_eq!(set.identify_at(CLERK, at), None);
        assert_eq!(set.identify(CLERK), None, "expired in the past");
    }

    #[test]
    fn file_env_and_directory_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("clerk");
        std::fs::write(&file, format!("{CLERK}\n")).unwrap();
        let tokens_dir = dir.path().join("tokens");
        std::fs::create_dir(&tokens_dir).unwrap();
        std::fs::write(
            tokens_dir.join("ops"),
            format!("name = \"ops\"\nrole = \"operator\"\ntoken = \"{ADMIN}\"\n"),
        )
        .unwrap();
        // Kubernetes' own entries in a mounted Secret are skipped.
        std::fs::create_dir(tokens_dir.join("..data")).unwrap();
        std::fs::write(tokens_dir.join("..hidden"), "junk").unwrap();
        // A unique variable name: tests share the process environment.
        let var = format!("WATERWORKS_TEST_TOKEN_{}", std::process::id());
        std::env::set_var(&var, VIEWER);
        let env = TokenConfig {
            name: "v".into(),
            role: Some(Role::Viewer),
            token_env: Some(var.clone()),
            ..TokenConfig::default()
        };
        let set = ApiTokens::new(&[
            TokenConfig::from_file("c", Role::Clerk, &file),
            env,
            TokenConfig::from_dir(&tokens_dir),
        ])
        .unwrap();
        assert_eq!(set.identify(CLERK).unwrap().role, Role::Clerk);
        assert_eq!(set.identify(VIEWER).unwrap().name, "v");
        assert_eq!(set.identify(ADMIN).unwrap().role, Role::Operator);
        std::env::remove_var(&var);

        // A placeholder in a file is refused, naming the file, not the token.
        std::fs::write(&file, "change-me-clerk-token").unwrap();
        let e = ApiTokens::new(&[TokenConfig::from_file("c", Role::Clerk, &file)]).unwrap_err();
        assert!(matches!(e, TokenError::Placeholder { .. }));
        // A failed reload keeps the previous set.
        assert!(set.reload().is_err());
        assert_eq!(set.identify(CLERK).unwrap().name, "c");
        // Rotation: the file's new token replaces the old one on reload.
        std::fs::write(&file, format!("{}\n", "Zr4Wq8Lp2Xm6Kt0Nv5Bc9Hd3Jf7Gs1Ae")).unwrap();
        set.reload().unwrap();
        assert!(set.identify(CLERK).is_none());
        assert_eq!(
            set.identify("Zr4Wq8Lp2Xm6Kt0Nv5Bc9Hd3Jf7Gs1Ae")
                .unwrap()
                .name,
            "c"
        );
    }
}
