//! Calls to the backends' HTTP APIs (ingest, billing), always with the
//! signed-in person's own bearer token, so the backends enforce the roles.
//! Their JSON error bodies (`{"error","message"}`, never internals) become a
//! [`BackendError`] the pages show; a transport failure is logged and shown
//! only as "unavailable".

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;
use waterworks_api::ErrorBody;

/// Largest response body read from a backend (a CSV report, a long list).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The token is no longer valid (rotated): the session must end.
    #[error("the token was not accepted")]
    Unauthorized,
    #[error("refused: {0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    /// Unreachable, timed out, 5xx or an unreadable answer (detail logged).
    #[error("{service} is unavailable")]
    Unavailable { service: &'static str },
}

/// One backend: its name (for logs and metrics) and base URL.
#[derive(Clone, Debug)]
pub struct Backend {
    name: &'static str,
    base: String,
    http: reqwest::Client,
}

/// A raw answer (a CSV or PDF passed through).
pub struct Raw {
    pub content_type: String,
    pub content_disposition: Option<String>,
    pub body: bytes::Bytes,
}

impl Backend {
    pub fn new(name: &'static str, base: &str, timeout: Duration) -> Backend {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(32)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Backend {
            name,
            base: base.trim_end_matches('/').to_string(),
            http,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn url(&self, path: &str) -> String {
        debug_assert!(path.starts_with('/'));
        format!("{}{}", self.base, path)
    }

    /// `GET path` (path and query already encoded; see [`seg`] and [`query`]).
    pub async fn get<T: DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
    ) -> Result<T, BackendError> {
        let req = self.http.get(self.url(path)).bearer_auth(token);
        self.json(req, path).await
    }

    /// `POST path` with a JSON body.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
        body: &B,
    ) -> Result<T, BackendError> {
        let req = self.http.post(self.url(path)).bearer_auth(token).json(body);
        self.json(req, path).await
    }

    /// `POST path` without a token (the public quote).
    pub async fn post_open<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, BackendError> {
        let req = self.http.post(self.url(path)).json(body);
        self.json(req, path).await
    }

    /// `PUT path` with a JSON body, for a batch write whose refusal names
    /// every item at fault: a 422 answer is `Ok(Err(body))` (its
    /// `problems`), any other failure a [`BackendError`] as usual.
    pub async fn put_checked<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
        body: &B,
    ) -> Result<Result<T, ErrorBody>, BackendError> {
        let req = self.http.put(self.url(path)).bearer_auth(token).json(body);
        let resp = self.transport(req, path).await?;
        if resp.status() == reqwest::StatusCode::UNPROCESSABLE_ENTITY {
            let bytes = self.body(resp, path).await?;
            return match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(e) => Ok(Err(e)),
                Err(e) => {
                    tracing::error!(backend = self.name, path, error = %e, "unreadable refusal");
                    Err(BackendError::Unavailable { service: self.name })
                }
            };
        }
        let resp = self.sort(resp, path).await?;
        let bytes = self.body(resp, path).await?;
        serde_json::from_slice(&bytes).map(Ok).map_err(|e| {
            tracing::error!(backend = self.name, path, error = %e, "unreadable answer");
            BackendError::Unavailable { service: self.name }
        })
    }

    /// `GET path`, the body passed through as it is (CSV downloads).
    pub async fn get_raw(&self, token: &str, path: &str) -> Result<Raw, BackendError> {
        let resp = self
            .send(self.http.get(self.url(path)).bearer_auth(token), path)
            .await?;
        let header = |h| {
            resp.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE)
            .unwrap_or_else(|| "application/octet-stream".into());
        let content_disposition = header(reqwest::header::CONTENT_DISPOSITION);
        let body = self.body(resp, path).await?;
        Ok(Raw {
            content_type,
            content_disposition,
            body,
        })
    }

    /// Whether the backend answers `/health`.
    pub async fn healthy(&self) -> bool {
        matches!(self.http.get(self.url("/health")).send().await, Ok(r) if r.status().is_success())
    }

    async fn json<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<T, BackendError> {
        let resp = self.send(req, path).await?;
        let body = self.body(resp, path).await?;
        serde_json::from_slice(&body).map_err(|e| {
            tracing::error!(backend = self.name, path, error = %e, "unreadable answer");
            BackendError::Unavailable { service: self.name }
        })
    }

    async fn body(
        &self,
        resp: reqwest::Response,
        path: &str,
    ) -> Result<bytes::Bytes, BackendError> {
        if resp.content_length().unwrap_or(0) > MAX_BODY_BYTES as u64 {
            tracing::error!(backend = self.name, path, "answer too large");
            return Err(BackendError::Unavailable { service: self.name });
        }
        let body = resp.bytes().await.map_err(|e| {
            tracing::error!(backend = self.name, path, error = %e, "reading answer failed");
            BackendError::Unavailable { service: self.name }
        })?;
        if body.len() > MAX_BODY_BYTES {
            return Err(BackendError::Unavailable { service: self.name });
        }
        Ok(body)
    }

    /// Sends ([`Self::transport`]) and sorts the status ([`Self::sort`]).
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<reqwest::Response, BackendError> {
        let resp = self.transport(req, path).await?;
        self.sort(resp, path).await
    }

    /// Sends, timed; only a transport failure is an error here.
    async fn transport(
        &self,
        req: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<reqwest::Response, BackendError> {
        let started = std::time::Instant::now();
        let resp = req.send().await;
        metrics::histogram!("console_backend_seconds", "backend" => self.name)
            .record(started.elapsed().as_secs_f64());
        resp.map_err(|e| {
            tracing::error!(backend = self.name, path, error = %e, "backend unreachable");
            BackendError::Unavailable { service: self.name }
        })
    }

    /// The status sorted: 2xx passes, 4xx becomes the matching error with
    /// the backend's message, the rest is "unavailable".
    async fn sort(
        &self,
        resp: reqwest::Response,
        path: &str,
    ) -> Result<reqwest::Response, BackendError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let message = || async {
            let body = resp.bytes().await.unwrap_or_default();
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v.get("message")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| status.to_string())
        };
        Err(match status.as_u16() {
            401 => BackendError::Unauthorized,
            403 => BackendError::Forbidden(message().await),
            404 => BackendError::NotFound(message().await),
            400 | 422 => BackendError::BadRequest(message().await),
            409 => BackendError::Conflict(message().await),
            _ => {
                tracing::error!(backend = self.name, path, %status, "backend failed");
                BackendError::Unavailable { service: self.name }
            }
        })
    }
}

/// One path segment, percent-encoded (`/api/v1/meters/{seg(id)}`).
pub fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A query string from pairs, empty values left out: `?a=1&b=x%20y` or "".
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in pairs {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            ser.append_pair(k, v);
            any = true;
        }
    }
    if any {
        format!("?{}", ser.finish())
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_queries_are_encoded() {
        assert_eq!(seg("M-1/../x y"), "M-1%2F..%2Fx%20y");
        assert_eq!(
            query(&[
                ("q", Some("a&b".into())),
                ("n", None),
                ("e", Some(String::new()))
            ]),
            "?q=a%26b"
        );
        assert_eq!(query(&[("n", None)]), "");
    }
}
