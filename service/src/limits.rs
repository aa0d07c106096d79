//! Limits every cluster service puts in front of its API, as axum/tower
//! layers built from one typed configuration ([`HttpLimits`]):
//!
//! - a rate limit per client IP and per bearer token (token buckets): over
//!   it, `429 Too Many Requests` with `Retry-After` in seconds;
//! - a bound on requests being answered at once: over it, `503` at once
//!   (load shedding, never a queue that grows);
//! - a whole-request deadline for reads: past it, `503` and the handler's
//!   future is dropped (its database statement with it).
//!
//! Token buckets are kept by the SHA-256 of the token, never the token. The
//! tables hold at most [`HttpLimits::max_tracked_keys`] keys each; when full,
//! buckets idle long enough to be full again are dropped, and if none are,
//! the request is shed with 503 (stated policy: bounded memory first).
//!
//! It must never look at what a request asks for: only who asks and how often.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use waterworks_api::error::{ErrorBody, ErrorCode};

/// The limits of one service's HTTP API (`[http_limits]` in its TOML).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Requests answered at once (default 64); more get 503 at once.
    pub max_concurrent: usize,
    /// Deadline of a whole read request in milliseconds (default 30 000);
    /// past it, 503.
    pub request_timeout_ms: u64,
    /// Requests a minute per bearer token (default 600, bursts of as many).
    pub per_token_per_min: u32,
    /// Requests a minute per client IP (default 3 000), with a token or
    /// without (sign-in attempts and wrong tokens included). A front end
    /// that calls on behalf of many people (the console) comes from one
    /// address: size this for it.
    pub per_ip_per_min: u32,
    /// Take the client IP from the rightmost address of this header (e.g.
    /// `x-forwarded-for`, as the ingress appends it) instead of the TCP
    /// peer. Only behind a proxy that sets it; default none.
    pub client_ip_header: Option<String>,
    /// Keys (IPs, tokens) tracked per table at most (default 10 000).
    pub max_tracked_keys: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_concurrent: 64,
            request_timeout_ms: 30_000,
            per_token_per_min: 600,
            per_ip_per_min: 3_000,
            client_ip_header: None,
            max_tracked_keys: 10_000,
        }
    }
}

/// Token buckets by key: `capacity` requests, refilled at `capacity` a minute.
#[derive(Debug)]
pub struct RateLimiter {
    capacity: f64,
    per_s: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<[u8; 32], (f64, Instant)>>,
}

/// What [`RateLimiter::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Allowed,
    /// Over the limit; retry after this many seconds.
    Limited(u64),
    /// The key table is full of busy keys.
    Full,
}

impl RateLimiter {
    pub fn new(per_min: u32, max_keys: usize) -> Self {
        let capacity = f64::from(per_min.max(1));
        Self {
            capacity,
            per_s: capacity / 60.0,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket at `now`.
    pub fn check(&self, key: &[u8], now: Instant) -> Verdict {
        let key: [u8; 32] = Sha256::digest(key).into();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= self.max_keys {
            let (capacity, per_s) = (self.capacity, self.per_s);
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * per_s < capacity
            });
            if buckets.len() >= self.max_keys {
                return Verdict::Full;
            }
        }
        let (tokens, at) = buckets.entry(key).or_insert((self.capacity, now));
        let refilled = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_s)
            .min(self.capacity);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            Verdict::Allowed
        } else {
            *tokens = refilled;
            Verdict::Limited(((1.0 - refilled) / self.per_s).ceil().max(1.0) as u64)
        }
    }
}

/// The shared state of the layers of one service.
#[derive(Debug)]
pub struct Limits {
    config: HttpLimits,
    by_ip: RateLimiter,
    by_token: RateLimiter,
    in_flight: Arc<Semaphore>,
}

impl Limits {
    pub fn new(config: HttpLimits) -> Arc<Self> {
        Arc::new(Self {
            by_ip: RateLimiter::new(config.per_ip_per_min, config.max_tracked_keys),
            by_token: RateLimiter::new(config.per_token_per_min, config.max_tracked_keys),
            in_flight: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            config,
        })
    }

    fn client_ip(&self, req: &Request) -> Option<IpAddr> {
        if let Some(h) = &self.config.client_ip_header {
            if let Some(ip) = req
                .headers()
                .get(h.as_str())
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok())
            {
                return Some(ip);
            }
        }
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    }
}

fn too_many(retry_after_s: u64) -> Response {
    metrics::counter!("waterworks_http_limited_total", "reason" => "rate").increment(1);
    let mut resp = (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(ErrorBody::new(
            ErrorCode::TooManyRequests,
            format!("too many requests; retry after {retry_after_s} s"),
        )),
    )
        .into_response();
    resp.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from(retry_after_s),
    );
    resp
}

fn overloaded(reason: &'static str, message: &str) -> Response {
    metrics::counter!("waterworks_http_limited_total", "reason" => reason).increment(1);
    let mut resp = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(ErrorBody::new(ErrorCode::Unavailable, message)),
    )
        .into_response();
    resp.headers_mut()
        .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(1u64));
    resp
}

/// Rate limits per IP and per bearer token, then the bound on requests at
/// once. Needs the server's connect info (see [`crate::serve`]) for the
/// peer address; without it only tokens and the configured header count.
pub async fn admit(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    let now = Instant::now();
    if let Some(ip) = limits.client_ip(&req) {
        let key = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        match limits.by_ip.check(&key, now) {
            Verdict::Allowed => {}
            Verdict::Limited(s) => return too_many(s),
            Verdict::Full => return overloaded("keys", "too many clients"),
        }
    }
    let bearer = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().as_bytes().to_vec());
    if let Some(token) = bearer {
        match limits.by_token.check(&token, now) {
            Verdict::Allowed => {}
            Verdict::Limited(s) => return too_many(s),
            Verdict::Full => return overloaded("keys", "too many clients"),
        }
    }
    let Ok(_permit) = limits.in_flight.clone().try_acquire_owned() else {
        return overloaded("concurrency", "the service is busy; retry shortly");
    };
    next.run(req).await
}

/// The whole-request deadline (for reads: a write is better left to finish).
pub async fn deadline(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    let limit = Duration::from_millis(limits.config.request_timeout_ms.max(1));
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => overloaded("timeout", "the request took too long"),
    }
}

/// Wraps `router` in the rate and concurrency limits.
pub fn admit_layer<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
    limits: Arc<Limits>,
) -> axum::Router<S> {
    router.layer(axum::middleware::from_fn_with_state(limits, admit))
}

/// Wraps every route of `router` in the request deadline.
pub fn deadline_layer<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
    limits: Arc<Limits>,
) -> axum::Router<S> {
    router.route_layer(axum::middleware::from_fn_with_state(limits, deadline))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refills_at_its_rate_and_says_when() {
        let r = RateLimiter::new(60, 10);
        let t0 = Instant::now();
        for _ in 0..60 {
            assert_eq!(r.check(b"k", t0), Verdict::Allowed);
        }
        assert_eq!(r.check(b"k", t0), Verdict::Limited(1));
        assert_eq!(r.check(b"other", t0), Verdict::Allowed);
        assert_eq!(r.check(b"k", t0 + Duration::from_secs(1)), Verdict::Allowed);
        assert_eq!(
            r.check(b"k", t0 + Duration::from_secs(1)),
            Verdict::Limited(1)
        );
    }

    #[test]
    fn the_key_table_is_bounded() {
        let r = RateLimiter::new(2, 2);
        let t0 = Instant::now();
        assert_eq!(r.check(b"a", t0), Verdict::Allowed);
        assert_eq!(r.check(b"b", t0), Verdict::Allowed);
        // Both busy: a third key is shed rather than grow the table.
        assert_eq!(r.check(b"c", t0), Verdict::Full);
        // Once they have refilled they make room.
        assert_eq!(
            r.check(b"c", t0 + Duration::from_secs(60)),
            Verdict::Allowed
        );
    }
}
