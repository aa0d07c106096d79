//! The Prometheus endpoint: `GET /metrics` on `metrics_listen`.
//!
//! The gateway installs the process's metrics recorder the first time an
//! exporter is asked for, and every later gateway in the same process (tests)
//! shares it. If another recorder was installed first (a host program that
//! exports its own metrics), starting an exporter is refused with a clear error:
//! leave `metrics_listen` unset there. The server answers one small request per
//! connection and never reads more than [`MAX_REQUEST_BYTES`].

use crate::GatewayError;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::OnceLock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Largest request head read before answering.
pub const MAX_REQUEST_BYTES: usize = 8192;
/// Most scrapes served at once; further connections wait in the listen backlog.
pub const MAX_CONCURRENT_SCRAPES: usize = 8;

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// The process-wide Prometheus handle, installing the recorder on first use.
pub fn handle() -> Result<PrometheusHandle, GatewayError> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0])
                .map_err(|e| e.to_string())?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|_| {
                "another metrics recorder is already installed in this process".to_string()
            })?;
            Ok(handle)
        })
        .clone()
        .map_err(GatewayError::Metrics)
}

/// Binds `addr` and serves `/metrics` until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<SocketAddr, GatewayError> {
    let handle = handle()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| GatewayError::Metrics(format!("bind {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| GatewayError::Metrics(e.to_string()))?;
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_SCRAPES));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.cancelled() => break,
            };
            let Ok((mut stream, _)) = accepted else {
                continue;
            };
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let mut buf = vec![0u8; MAX_REQUEST_BYTES];
                let mut n = 0;
                let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                    while n < buf.len() {
                        match stream.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => n += k,
                        }
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                })
                .await;
                if read.is_err() {
                    return;
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let (status, body) = if head.starts_with("GET /metrics") {
                    handle.run_upkeep();
                    ("200 OK", handle.render())
                } else {
                    ("404 Not Found", "only GET /metrics is served\n".to_string())
                };
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(local)
}
