//! (Long because one OpenID Connect relying party is its configuration checks, the pending sign-ins, the provider with its cached keys, and the sign-in, callback and sign-out steps, all sharing the private `Pending` and `Provider` state; about 80 lines are unit tests.)
//!
//! Single sign-on for staff: the console is an OpenID Connect relying party
//! of the city's identity provider (authorization code flow with PKCE S256,
//! the `openidconnect` crate). Bearer tokens stay for machines.
//!
//! ```text
//! browser ─/auth/login─> console: state, nonce, PKCE verifier kept server-side under a
//!                                 random id in the `ww_sso` cookie (HttpOnly, Lax, 10 min)
//!         <─303 authorize URL (code_challenge S256, state, nonce)
//!         ─> identity provider: password, MFA, ... ─303─> /auth/callback?code&state
//! console: state equal to the one bound to this browser (one use), code + verifier
//!          exchanged at the token endpoint (client secret), ID token verified
//!          (JWKS signature, iss, aud, nonce, exp), role from the configured claim
//!          by the first matching rule, session until the ID token's expiry
//! ```
//!
//! Backends: ingest and billing keep enforcing roles on every call. The
//! console holds one service credential per role (a bearer token of that
//! role, from a file or the environment) and calls the backends with the
//! credential of the role the person was mapped to, so a clerk's session
//! can do exactly what a clerk token can; each credential is checked with
//! `whoami` on both backends at every sign-in (a credential of the wrong
//! role is refused, not used). The person's subject, name and role are
//! logged at every sign-in; the backends' own logs and audit rows name the
//! console's credential (`README.md` says why this design, and its limit).
//!
//! Sign-out ends the local session and sends the browser to the provider's
//! `end_session_endpoint` (RP-initiated logout, with `id_token_hint`).
//!
//! It must never accept an ID token it did not verify, a callback whose state
//! is not the one bound to the browser, or a role no rule grants.

use crate::config::ConfigError;
use crate::i18n::Msg;
use crate::session::{self, Session};
use crate::web::{cookie, Ctx};
use crate::App;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use maud::{html, Markup};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreClaimName, CoreClaimType,
    CoreClientAuthMethod, CoreErrorResponseType, CoreGenderClaim, CoreGrantType, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm,
    CoreResponseMode, CoreResponseType, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreSubjectIdentifierType, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AdditionalProviderMetadata, AuthorizationCode, Client, ClientId,
    ClientSecret, CsrfToken, EmptyExtraTokenFields, EndSessionUrl, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IdToken, IdTokenFields, IssuerUrl, LogoutRequest, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadata, RedirectUrl,
    Scope, StandardErrorResponse, StandardTokenResponse,
};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use waterworks_service::auth::Role;

/// The browser-binding cookie of a sign-in in progress.
pub const PENDING_COOKIE: &str = "ww_sso";
/// A sign-in must come back from the provider within this long.
pub const PENDING_TTL: Duration = Duration::from_secs(600);
/// Sign-ins in progress held at most; when full the oldest is dropped.
pub const MAX_PENDING: usize = 10_000;

// ---------------------------------------------------------------- config

/// `[oidc]` of the console's configuration: the identity provider and how
/// its people become roles. Present means single sign-on is offered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer (required), e.g.
    /// `https://id.city.example/realms/staff`; its
    /// `/.well-known/openid-configuration` is read. Must be `https://`
    /// (plain `http://` is accepted for a loopback address only, for tests).
    pub issuer_url: String,
    /// The console's client id at the provider (required).
    pub client_id: String,
    /// File holding the client secret (a Kubernetes Secret mounted as a
    /// file); `CONSOLE_OIDC_CLIENT_SECRET` in the environment wins.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// This console's callback as registered at the provider (required),
    /// e.g. `https://console.city.example/auth/callback`.
    pub redirect_url: String,
    /// Where the provider sends the browser after sign-out (registered at the
    /// provider), e.g. `https://console.city.example/login`. Without it the
    /// provider shows its own page.
    #[serde(default)]
    pub post_logout_redirect_url: Option<String>,
    /// Scopes asked for (default `openid profile groups`); must hold `openid`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The ID token claim that names the person's groups or roles (default
    /// `groups`): a string or an array of strings.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    /// Rules from a value of `role_claim` to a console role, tried in order:
    /// the first rule whose `value` the person holds gives the role. A person
    /// no rule matches is refused.
    pub roles: Vec<RoleRule>,
    /// The console's credential per role, for the backends (see the module).
    pub service_tokens: ServiceTokens,
    /// A signed-in session ends at the ID token's expiry, and at the latest
    /// after this many seconds (default 8 h).
    #[serde(default = "default_session_max_s")]
    pub session_max_s: u64,
    /// Whether the token form stays on the sign-in page (default true; set
    /// false so staff can only sign in through the provider).
    #[serde(default = "default_true")]
    pub allow_token_login: bool,
    /// The provider's metadata and keys are read again after this many
    /// seconds (default 3600), so a key rotation at the provider is followed.
    #[serde(default = "default_metadata_refresh_s")]
    pub metadata_refresh_s: u64,
}

/// One rule of [`OidcConfig::roles`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRule {
    /// A value of the role claim (a group name, a role name).
    pub value: String,
    pub role: Role,
}

/// Files holding the console's bearer token for each role it may act as;
/// `CONSOLE_SERVICE_TOKEN_VIEWER` (`_CLERK`, `_OPERATOR`, `_ADMIN`) in the
/// environment wins. Every role named by a rule needs one.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTokens {
    #[serde(default)]
    pub viewer_file: Option<PathBuf>,
    #[serde(default)]
    pub clerk_file: Option<PathBuf>,
    #[serde(default)]
    pub operator_file: Option<PathBuf>,
    #[serde(default)]
    pub admin_file: Option<PathBuf>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "groups".into()]
}
fn default_role_claim() -> String {
    "groups".into()
}
fn default_session_max_s() -> u64 {
    8 * 3600
}
fn default_true() -> bool {
    true
}
fn default_metadata_refresh_s() -> u64 {
    3600
}

fn invalid(msg: String) -> ConfigError {
    ConfigError::Invalid(format!("[oidc] {msg}"))
}

/// An absolute URL; `https://`, or `http://` on a loopback host.
fn check_url(name: &str, u: &str) -> Result<url::Url, ConfigError> {
    let parsed = url::Url::parse(u).map_err(|e| invalid(format!("{name} {u:?}: {e}")))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match parsed.scheme() {
        "https" if parsed.host().is_some() => Ok(parsed),
        "http" if loopback => Ok(parsed),
        _ => Err(invalid(format!(
            "{name} {u:?} must be an https:// URL (http:// only on a loopback address)"
        ))),
    }
}

fn read_secret(
    what: &str,
    env: &str,
    file: Option<&PathBuf>,
) -> Result<Option<String>, ConfigError> {
    if let Some(v) = std::env::var(env).ok().filter(|v| !v.trim().is_empty()) {
        return Ok(Some(v.trim().to_string()));
    }
    let Some(path) = file else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let v = text.trim().to_string();
    if v.is_empty() {
        return Err(invalid(format!("{what}: {} is empty", path.display())));
    }
    Ok(Some(v))
}

impl OidcConfig {
    /// Checks the URLs, scopes and rules (no file is read).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_url("issuer_url", &self.issuer_url)?;
        check_url("redirect_url", &self.redirect_url)?;
        if let Some(u) = &self.post_logout_redirect_url {
            check_url("post_logout_redirect_url", u)?;
        }
        if self.client_id.trim().is_empty() {
            return Err(invalid("client_id is empty".into()));
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err(invalid("scopes must include \"openid\"".into()));
        }
        if self.role_claim.trim().is_empty() {
            return Err(invalid("role_claim is empty".into()));
        }
        if self.roles.is_empty() {
            return Err(invalid(
                "roles is empty: no one could sign in (add [[oidc.roles]] value = \"...\", role = \"clerk\")"
                    .into(),
            ));
        }
        if self.session_max_s == 0 || self.metadata_refresh_s == 0 {
            return Err(invalid(
                "session_max_s and metadata_refresh_s must be above zero".into(),
            ));
        }
        Ok(())
    }

    /// The client secret and the service credential of every role a rule
    /// names, read from the environment or files; a missing one is an error
    /// naming what to set.
    fn secrets(&self) -> Result<(ClientSecret, HashMap<Role, String>), ConfigError> {
        let secret = read_secret(
            "client_secret_file",
            "CONSOLE_OIDC_CLIENT_SECRET",
            self.client_secret_file.as_ref(),
        )?
        .ok_or_else(|| {
            invalid("no client secret: set client_secret_file or CONSOLE_OIDC_CLIENT_SECRET".into())
        })?;
        let mut tokens = HashMap::new();
        for rule in &self.roles {
            if tokens.contains_key(&rule.role) {
                continue;
            }
            let (file, env) = match rule.role {
                Role::Viewer => (
                    &self.service_tokens.viewer_file,
                    "CONSOLE_SERVICE_TOKEN_VIEWER",
                ),
                Role::Clerk => (
                    &self.service_tokens.clerk_file,
                    "CONSOLE_SERVICE_TOKEN_CLERK",
                ),
                Role::Operator => (
                    &self.service_tokens.operator_file,
                    "CONSOLE_SERVICE_TOKEN_OPERATOR",
                ),
                Role::Admin => (
                    &self.service_tokens.admin_file,
                    "CONSOLE_SERVICE_TOKEN_ADMIN",
                ),
            };
            let role = rule.role.as_str();
            let token = read_secret(&format!("service_tokens.{role}_file"), env, file.as_ref())?
                .ok_or_else(|| {
                    invalid(format!(
                        "a rule grants {role} but there is no {role} credential: set service_tokens.{role}_file or {env}"
                    ))
                })?;
            tokens.insert(rule.role, token);
        }
        Ok((ClientSecret::new(secret), tokens))
    }
}

/// The role of a person holding `values` of the role claim: the first rule
/// that matches.
pub fn map_role(rules: &[RoleRule], values: &[String]) -> Option<Role> {
    rules
        .iter()
        .find(|r| values.iter().any(|v| v == &r.value))
        .map(|r| r.role)
}

// ---------------------------------------------------------------- types

/// Every claim of the ID token, for the configured role claim.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct StaffClaims {
    #[serde(flatten)]
    pub all: serde_json::Map<String, serde_json::Value>,
}
impl AdditionalClaims for StaffClaims {}

/// The provider metadata the core type leaves out: the logout endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct LogoutMetadata {
    #[serde(default)]
    pub end_session_endpoint: Option<EndSessionUrl>,
}
impl AdditionalProviderMetadata for LogoutMetadata {}

type Metadata = ProviderMetadata<
    LogoutMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// The ID token as this console reads it.
pub type StaffIdToken = IdToken<
    StaffClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

type TokenResponse = StandardTokenResponse<
    IdTokenFields<
        StaffClaims,
        EmptyExtraTokenFields,
        CoreGenderClaim,
        CoreJweContentEncryptionAlgorithm,
        CoreJwsSigningAlgorithm,
    >,
    CoreTokenType,
>;

type StaffClient = Client<
    StaffClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error("identity provider unreachable or its metadata unreadable: {0}")]
    Discovery(String),
    #[error("token endpoint: {0}")]
    Exchange(String),
    #[error("the provider sent no ID token")]
    NoIdToken,
    #[error("ID token refused: {0}")]
    IdToken(String),
}

/// Who the provider says signed in (from a verified ID token).
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub subject: String,
    /// `name`, else `preferred_username`, else the subject.
    pub name: String,
    /// The values of the role claim.
    pub role_values: Vec<String>,
    pub expires_at: chrono::DateTime<Utc>,
}

struct Provider {
    client: StaffClient,
    end_session: Option<EndSessionUrl>,
    read_at: Instant,
}

struct Pending {
    state: CsrfToken,
    nonce: Nonce,
    verifier: PkceCodeVerifier,
    next: String,
    created: Instant,
}

/// The relying party: configuration, secrets, the provider's metadata
/// (refreshed), and the sign-ins in progress.
pub struct Sso {
    pub config: OidcConfig,
    secret: ClientSecret,
    service_tokens: HashMap<Role, String>,
    http: reqwest::Client,
    provider: tokio::sync::Mutex<Option<Arc<Provider>>>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl Sso {
    /// Validates `config` and reads its secrets; the provider is contacted
    /// later, at the first sign-in (so a provider outage does not stop the
    /// console: token sign-in keeps working).
    pub fn new(config: OidcConfig, timeout: Duration) -> Result<Sso, ConfigError> {
        config.validate()?;
        let (secret, service_tokens) = config.secrets()?;
        let http = reqwest::Client::builder()
            // Never follow a redirect from the provider's back channel (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .map_err(|e| invalid(format!("http client: {e}")))?;
        Ok(Sso {
            config,
            secret,
            service_tokens,
            http,
            provider: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The provider's client, discovered now if never read or stale.
    async fn provider(&self) -> Result<Arc<Provider>, SsoError> {
        let mut slot = self.provider.lock().await;
        let refresh = Duration::from_secs(self.config.metadata_refresh_s);
        if let Some(p) = slot.as_ref().filter(|p| p.read_at.elapsed() < refresh) {
            return Ok(p.clone());
        }
        let issuer = IssuerUrl::new(self.config.issuer_url.clone())
            .map_err(|e| SsoError::Discovery(e.to_string()))?;
        let metadata = Metadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| SsoError::Discovery(error_chain(&e)))?;
        let end_session = metadata.additional_metadata().end_session_endpoint.clone();
        let redirect = RedirectUrl::new(self.config.redirect_url.clone())
            .map_err(|e| SsoError::Discovery(e.to_string()))?;
        let client = StaffClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            Some(self.secret.clone()),
        )
        .set_redirect_uri(redirect);
        let p = Arc::new(Provider {
            client,
            end_session,
            read_at: Instant::now(),
        });
        tracing::info!(issuer = %self.config.issuer_url, "identity provider metadata read");
        *slot = Some(p.clone());
        Ok(p)
    }

    /// Starts a sign-in: the provider's authorization URL and the id of the
    /// state kept for this browser.
    pub async fn begin(&self, next: String) -> Result<(url::Url, String), SsoError> {
        let provider = self.provider().await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = provider.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for s in self.config.scopes.iter().filter(|s| *s != "openid") {
            req = req.add_scope(Scope::new(s.clone()));
        }
        let (url, state, nonce) = req.set_pkce_challenge(challenge).url();
        let id = random_id();
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, p| now.duration_since(p.created) < PENDING_TTL);
        while pending.len() >= MAX_PENDING {
            let oldest = pending
                .iter()
                .min_by_key(|(_, p)| p.created)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    pending.remove(&k);
                }
                None => break,
            }
        }
        pending.insert(
            id.clone(),
            Pending {
                state,
                nonce,
                verifier,
                next,
                created: now,
            },
        );
        Ok((url, id))
    }

    /// The sign-in in progress bound to this browser, taken (one use) if
    /// `state` is its state and it is not stale.
    fn take_pending(&self, id: Option<&str>, state: Option<&str>) -> Option<Pending> {
        let (id, state) = (id?, state?);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let p = pending.remove(id)?;
        let same = constant_time_eq(p.state.secret().as_bytes(), state.as_bytes());
        (same && p.created.elapsed() < PENDING_TTL).then_some(p)
    }

    /// Redeems `code` with the PKCE verifier and verifies the ID token.
    async fn finish(&self, code: String, pending: Pending) -> Result<(Identity, String), SsoError> {
        let provider = self.provider().await?;
        let resp = provider
            .client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| SsoError::Exchange(e.to_string()))?
            .set_pkce_verifier(pending.verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| SsoError::Exchange(error_chain(&e)))?;
        use openidconnect::TokenResponse as _;
        let token = resp.id_token().ok_or(SsoError::NoIdToken)?;
        let identity = self.verify_with(provider, token, &pending.nonce).await?;
        Ok((identity, token.to_string()))
    }

    /// [`Sso::verify`], and if the token names a key the cached JWKS lacks
    /// (the provider rotated its keys), once more after reading the
    /// provider's metadata and keys again.
    async fn verify_with(
        &self,
        provider: Arc<Provider>,
        token: &StaffIdToken,
        nonce: &Nonce,
    ) -> Result<Identity, SsoError> {
        use openidconnect::{ClaimsVerificationError as C, SignatureVerificationError as S};
        match self.verify(&provider, token, nonce) {
            Err((C::SignatureVerification(S::NoMatchingKey), _)) => {
                tracing::info!("ID token signed by a key not in the cached JWKS: reading the provider's keys again");
                {
                    let mut slot = self.provider.lock().await;
                    if slot.as_ref().is_some_and(|p| Arc::ptr_eq(p, &provider)) {
                        *slot = None;
                    }
                }
                let fresh = self.provider().await?;
                self.verify(&fresh, token, nonce).map_err(|(_, e)| e)
            }
            other => other.map_err(|(_, e)| e),
        }
    }

    fn verify(
        &self,
        provider: &Provider,
        token: &StaffIdToken,
        nonce: &Nonce,
    ) -> Result<Identity, (openidconnect::ClaimsVerificationError, SsoError)> {
        // Signature by a key of the provider's JWKS (no `none`, no HMAC with
        // a guessable key), iss, aud (and azp), exp and iat, and the nonce.
        let verifier = provider.client.id_token_verifier();
        let claims = token.claims(&verifier, nonce).map_err(|e| {
            let msg = SsoError::IdToken(error_chain(&e));
            (e, msg)
        })?;
        let role_values = match claims.additional_claims().all.get(&self.config.role_claim) {
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        };
        let subject = claims.subject().as_str().to_string();
        let name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.as_str().to_string())
            .or_else(|| claims.preferred_username().map(|u| u.as_str().to_string()))
            .unwrap_or_else(|| subject.clone());
        Ok(Identity {
            subject,
            name,
            role_values,
            expires_at: claims.expiration(),
        })
    }

    /// Verifies a raw ID token against the provider's keys, this client and
    /// `nonce`, as the callback does (the tests give it forged ones).
    pub async fn verify_id_token(&self, raw: &str, nonce: &str) -> Result<Identity, SsoError> {
        let provider = self.provider().await?;
        let token: StaffIdToken = raw
            .parse()
            .map_err(|e: serde_json::Error| SsoError::IdToken(e.to_string()))?;
        self.verify_with(provider, &token, &Nonce::new(nonce.to_string()))
            .await
    }

    /// The console's credential for `role`.
    fn service_token(&self, role: Role) -> Option<&str> {
        self.service_tokens.get(&role).map(String::as_str)
    }

    /// The provider's logout URL for a session signed in through it.
    async fn logout_url(&self, id_token: &str) -> Option<url::Url> {
        let provider = self.provider().await.ok()?;
        let end = provider.end_session.clone()?;
        let mut req =
            LogoutRequest::from(end).set_client_id(ClientId::new(self.config.client_id.clone()));
        if let Ok(t) = id_token.parse::<StaffIdToken>() {
            req = req.set_id_token_hint(&t);
        }
        if let Some(u) = &self.config.post_logout_redirect_url {
            if let Ok(u) = PostLogoutRedirectUrl::new(u.clone()) {
                req = req.set_post_logout_redirect_uri(u);
            }
        }
        Some(req.http_get_url())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn random_id() -> String {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    hex::encode(raw)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------- pages

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/auth/login", get(begin))
        .route("/auth/callback", get(callback))
}

#[derive(Debug, Deserialize)]
pub struct BeginQuery {
    next: Option<String>,
}

fn set_cookie(headers: &mut HeaderMap, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.append(header::SET_COOKIE, v);
    }
}

fn secure(app: &App) -> &'static str {
    if app.config.secure_cookies {
        "; Secure"
    } else {
        ""
    }
}

/// A page of this module: a title, a message, a way back to sign-in.
fn notice(ctx: &Ctx, status: StatusCode, kind: &str, title: &str, body: &str) -> Response {
    let page = ctx.page(
        title,
        html! {
            section class="error" id="sso-notice" data-sso=(kind) {
                h1 { (title) }
                p { (body) }
                p { a href="/login" id="sso-again" { (ctx.t("sso.again")) } }
            }
        },
    );
    (status, page).into_response()
}

/// `GET /auth/login?next=`: to the provider.
async fn begin(State(app): State<Arc<App>>, ctx: Ctx, Query(q): Query<BeginQuery>) -> Response {
    let Some(sso) = app.sso.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let next = crate::redirect::local_path(q.next.as_deref());
    match sso.begin(next).await {
        Ok((url, id)) => {
            let mut resp = Redirect::to(url.as_str()).into_response();
            // Lax: the provider's redirect back is a cross-site navigation.
            set_cookie(
                resp.headers_mut(),
                &format!(
                    "{PENDING_COOKIE}={id}; Path=/auth; HttpOnly; SameSite=Lax; Max-Age={}{}",
                    PENDING_TTL.as_secs(),
                    secure(&app)
                ),
            );
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "single sign-on unavailable");
            metrics::counter!("console_sso_logins_total", "result" => "provider_unavailable")
                .increment(1);
            notice(
                &ctx,
                StatusCode::BAD_GATEWAY,
                "unavailable",
                ctx.t("sso.unavailable.title"),
                ctx.t("sso.unavailable.body"),
            )
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WhoAmI {
    role: Role,
}

/// `GET /auth/callback`: the provider's answer.
async fn callback(
    State(app): State<Arc<App>>,
    ctx: Ctx,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(sso) = app.sso.as_ref() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // The pages below must not carry the code and state on (the language
    // switch links back to the current path).
    let mut ctx = ctx;
    ctx.path = "/login".to_string();
    let refused = |result: &'static str| {
        metrics::counter!("console_sso_logins_total", "result" => result).increment(1);
    };
    let pending = sso.take_pending(cookie(&headers, PENDING_COOKIE), q.state.as_deref());
    let mut resp = match (pending, q.code, q.error) {
        (None, _, _) => {
            tracing::warn!("sign-in callback with a state not bound to this browser");
            refused("bad_state");
            notice(
                &ctx,
                StatusCode::BAD_REQUEST,
                "bad-state",
                ctx.t("sso.bad_state.title"),
                ctx.t("sso.bad_state.body"),
            )
        }
        (Some(_), _, Some(error)) => {
            tracing::info!(error = %error.escape_debug(), "the identity provider refused the sign-in");
            refused("provider_refused");
            notice(
                &ctx,
                StatusCode::FORBIDDEN,
                "provider-refused",
                ctx.t("sso.refused.title"),
                ctx.t("sso.refused.body"),
            )
        }
        (Some(_), None, None) => {
            refused("bad_state");
            notice(
                &ctx,
                StatusCode::BAD_REQUEST,
                "bad-state",
                ctx.t("sso.bad_state.title"),
                ctx.t("sso.bad_state.body"),
            )
        }
        (Some(pending), Some(code), None) => signed_in(&app, sso, &ctx, code, pending).await,
    };
    // The sign-in in progress is over, whatever happened.
    set_cookie(
        resp.headers_mut(),
        &format!("{PENDING_COOKIE}=; Path=/auth; HttpOnly; SameSite=Lax; Max-Age=0"),
    );
    resp
}

async fn signed_in(
    app: &Arc<App>,
    sso: &Sso,
    ctx: &Ctx,
    code: String,
    pending: Pending,
) -> Response {
    let next = pending.next.clone();
    let (who, id_token) = match sso.finish(code, pending).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "single sign-on failed");
            metrics::counter!("console_sso_logins_total", "result" => "token_refused").increment(1);
            return notice(
                ctx,
                StatusCode::BAD_GATEWAY,
                "token-refused",
                ctx.t("sso.failed.title"),
                ctx.t("sso.failed.body"),
            );
        }
    };
    let Some(role) = map_role(&sso.config.roles, &who.role_values) else {
        tracing::info!(subject = %who.subject, name = %who.name, values = ?who.role_values, "signed in at the provider but no rule grants a role");
        metrics::counter!("console_sso_logins_total", "result" => "no_role").increment(1);
        return notice(
            ctx,
            StatusCode::FORBIDDEN,
            "no-role",
            ctx.t("sso.no_role.title"),
            ctx.t("sso.no_role.body"),
        );
    };
    let Some(token) = sso.service_token(role) else {
        // validate() makes this unreachable: every rule's role has one.
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    // The credential must be what the backends think it is, on both.
    let (i, b) = tokio::join!(
        app.ingest.get::<WhoAmI>(token, "/api/v1/whoami"),
        app.billing.get::<WhoAmI>(token, "/api/v1/whoami"),
    );
    let agreed = matches!((&i, &b), (Ok(i), Ok(b)) if i.role == role && b.role == role);
    if !agreed {
        tracing::error!(role = role.as_str(), ingest = ?i.as_ref().map(|w| w.role), billing = ?b.as_ref().map(|w| w.role), "the console's credential for this role is not accepted as that role by both backends");
        metrics::counter!("console_sso_logins_total", "result" => "credential_refused")
            .increment(1);
        return notice(
            ctx,
            StatusCode::BAD_GATEWAY,
            "credential",
            ctx.t("sso.failed.title"),
            ctx.t("sso.credential.body"),
        );
    }
    let now = Utc::now();
    let left = (who.expires_at - now).to_std().unwrap_or(Duration::ZERO);
    let left = left.min(Duration::from_secs(sso.config.session_max_s));
    if left.is_zero() {
        metrics::counter!("console_sso_logins_total", "result" => "token_refused").increment(1);
        return notice(
            ctx,
            StatusCode::BAD_GATEWAY,
            "token-refused",
            ctx.t("sso.failed.title"),
            ctx.t("sso.failed.body"),
        );
    }
    let id = app.sessions.create(Session {
        token: token.to_string(),
        name: who.name.clone(),
        role,
        expires_at: Some(Instant::now() + left),
        id_token: Some(id_token),
        subject: Some(who.subject.clone()),
    });
    tracing::info!(subject = %who.subject, who = %who.name, role = role.as_str(), expires_in_s = left.as_secs(), "signed in through the identity provider");
    metrics::counter!("console_sso_logins_total", "result" => "ok").increment(1);
    // A page that moves on by itself: a redirect would carry the provider's
    // cross-site context, and the SameSite=Strict session cookie would not
    // be sent with it.
    let page = ctx.page(
        ctx.t("sso.welcome"),
        html! {
            meta http-equiv="refresh" content=(format!("0;url={next}"));
            section class="login" id="sso-done" {
                h1 { (ctx.t("sso.welcome")) ", " (who.name) }
                p { a href=(next) id="sso-continue" data-next=(next) { (ctx.t("sso.continue")) } }
            }
        },
    );
    let mut resp = page.into_response();
    set_cookie(
        resp.headers_mut(),
        &format!(
            "{}={id}; Path=/; HttpOnly; SameSite=Strict{}",
            session::COOKIE,
            secure(app)
        ),
    );
    resp
}

/// Where `POST /logout` sends the browser for `session`: the provider's
/// end-session endpoint if the session came from it, else `None`.
pub async fn end_session_url(app: &App, session: &Session) -> Option<String> {
    let sso = app.sso.as_ref()?;
    let id_token = session.id_token.as_deref()?;
    sso.logout_url(id_token).await.map(|u| u.to_string())
}

/// The sign-in page's link to the provider (when configured).
pub fn login_link(ctx: &Ctx, next: &str) -> Markup {
    let href = format!(
        "/auth/login{}",
        crate::backend::query(&[("next", Some(next.to_string()))])
    );
    html! {
        p class="sso" {
            a class="button" href=(href) id="sso-login" { (ctx.t("sso.login")) }
        }
    }
}

pub static MESSAGES: &[Msg] = &[
    ("sso.login", "시 통합 계정으로 로그인", "Sign in with the city account"),
    ("sso.or_token", "또는 접근 토큰으로 로그인", "Or sign in with an access token"),
    ("sso.welcome", "로그인되었습니다", "Signed in"),
    ("sso.continue", "계속", "Continue"),
    ("sso.again", "다시 로그인", "Sign in again"),
    (
        "sso.no_role.title",
        "콘솔 사용 권한이 없습니다",
        "No access to the console",
    ),
    (
        "sso.no_role.body",
        "시 통합 계정으로 로그인되었지만, 이 계정의 그룹에는 콘솔 역할이 부여되어 있지 않습니다. 권한이 필요하면 관리자에게 요청하세요.",
        "You are signed in to the city account, but none of its groups is given a console role. Ask an administrator if you need access.",
    ),
    (
        "sso.bad_state.title",
        "로그인 요청을 확인할 수 없습니다",
        "The sign-in could not be checked",
    ),
    (
        "sso.bad_state.body",
        "로그인 요청이 만료되었거나 이 브라우저에서 시작되지 않았습니다. 다시 로그인하세요.",
        "The sign-in expired or was not started in this browser. Please sign in again.",
    ),
    (
        "sso.refused.title",
        "로그인이 취소되었습니다",
        "The sign-in was cancelled",
    ),
    (
        "sso.refused.body",
        "인증 서버가 로그인을 완료하지 않았습니다.",
        "The identity provider did not complete the sign-in.",
    ),
    (
        "sso.failed.title",
        "로그인을 완료할 수 없습니다",
        "The sign-in could not be completed",
    ),
    (
        "sso.failed.body",
        "인증 서버의 응답을 확인할 수 없습니다. 다시 시도하세요.",
        "The identity provider's answer could not be verified. Please try again.",
    ),
    (
        "sso.credential.body",
        "콘솔의 서비스 자격 증명이 올바르게 설정되지 않았습니다. 관리자에게 문의하세요.",
        "The console's service credentials are not set up correctly; ask an administrator.",
    ),
    (
        "sso.unavailable.title",
        "인증 서버에 연결할 수 없습니다",
        "The identity provider is unavailable",
    ),
    (
        "sso.unavailable.body",
        "잠시 후 다시 시도하세요.",
        "Please try again in a moment.",
    ),
    (
        "login.token_disabled",
        "접근 토큰 로그인은 사용하지 않습니다. 시 통합 계정으로 로그인하세요.",
        "Sign-in with an access token is turned off; sign in with the city account.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(value: &str, role: Role) -> RoleRule {
        RoleRule {
            value: value.into(),
            role,
        }
    }

    #[test]
    fn the_first_matching_rule_gives_the_role() {
        let rules = [
            rule("waterworks-admins", Role::Admin),
            rule("waterworks-clerks", Role::Clerk),
            rule("waterworks-operators", Role::Operator),
        ];
        let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            map_role(&rules, &v(&["all-staff", "waterworks-clerks"])),
            Some(Role::Clerk)
        );
        assert_eq!(
            map_role(&rules, &v(&["waterworks-operators", "waterworks-clerks"])),
            Some(Role::Clerk)
        );
        assert_eq!(
            map_role(&rules, &v(&["waterworks-operators", "waterworks-admins"])),
            Some(Role::Admin)
        );
        assert_eq!(map_role(&rules, &v(&["library-staff"])), None);
        assert_eq!(map_role(&rules, &v(&["Waterworks-Clerks"])), None);
        assert_eq!(map_role(&rules, &[]), None);
    }

    fn config() -> OidcConfig {
        toml::from_str(
            r#"
            issuer_url = "https://id.city.example/realms/staff"
            client_id = "waterworks-console"
            redirect_url = "https://console.city.example/auth/callback"
            roles = [{ value = "waterworks-clerks", role = "clerk" }]
            [service_tokens]
            "#,
        )
        .unwrap()
    }

    #[test]
    fn configuration_is_checked_with_clear_errors() {
        let c = config();
        c.validate().unwrap();
        assert_eq!(c.scopes, ["openid", "profile", "groups"]);
        assert_eq!(c.role_claim, "groups");
        let mut bad = c.clone();
        bad.issuer_url = "http://id.city.example".into();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("issuer_url"));
        let mut local = c.clone();
        local.issuer_url = "http://127.0.0.1:9000".into();
        local.validate().unwrap();
        let mut bad = c.clone();
        bad.scopes = vec!["profile".into()];
        assert!(bad.validate().unwrap_err().to_string().contains("openid"));
        let mut bad = c.clone();
        bad.roles.clear();
        assert!(bad.validate().unwrap_err().to_string().contains("roles"));
        // No secret, no credential: the error says what to set.
        let err = c.secrets().err().unwrap().to_string();
        assert!(err.contains("client secret"), "{err}");
        assert!(toml::from_str::<OidcConfig>("issuer_url = \"x\"\nclient_idd = \"y\"").is_err());
    }

    #[test]
    fn states_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
