//! Ports and HTTP services of a test: a free port, waiting until something
//! listens on one, an axum Router served on 127.0.0.1:0, and waiting until a
//! service answers `200` on a path (its `/ready`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A port free right now on 127.0.0.1 (the caller binds it soon after; a
/// port handed to a child process cannot be bound in advance).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Blocks until something accepts TCP connections on 127.0.0.1:`port`;
/// panics naming `what` after `within`.
pub fn wait_port(port: u16, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on 127.0.0.1:{port} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Router served on a port of its own until [`Served::stop`] or drop.
pub struct Served {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Serves `router` on 127.0.0.1:0 (with the peer's address as
/// `ConnectInfo<SocketAddr>`, as the services' own server gives it).
pub async fn serve(router: axum::Router) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("its address");
    let stop = CancellationToken::new();
    let until = stop.clone();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { until.cancelled().await })
        .await
    });
    Served {
        addr,
        stop,
        task: Some(task),
    }
}

impl Served {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops serving (requests in flight finish) and waits for the server.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("the server task").expect("the server");
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The status of `GET path` on `addr` over plain HTTP/1.1; 0 when nothing
/// answers.
pub async fn get_status(addr: SocketAddr, path: &str) -> u16 {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut head = [0u8; 16];
    let mut n = 0;
    while n < head.len() {
        match s.read(&mut head[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    std::str::from_utf8(&head[..n])
        .ok()
        .and_then(|t| t.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Waits until `GET path` on `addr` answers 200 (a service started on port
/// 0 becoming ready); panics naming `what` after `within`.
pub async fn wait_ok(addr: SocketAddr, path: &str, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if get_status(addr, path).await == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never answered 200 on {path} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_router_served_on_port_0_answers_until_stopped() {
        let router = axum::Router::new().route("/ready", axum::routing::get(|| async { "ready" }));
        let served = serve(router).await;
        let addr = served.addr;
        assert_ne!(addr.port(), 0);
        wait_ok(addr, "/ready", "the test router", Duration::from_secs(5)).await;
        assert_eq!(get_status(addr, "/nowhere").await, 404);
        assert_eq!(served.url("/ready"), format!("http://{addr}/ready"));
        served.stop().await;
        assert_eq!(get_status(addr, "/ready").await, 0, "nothing answers");
    }

    #[test]
    fn waits_for_a_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        wait_port(port, "the listener", Duration::from_secs(1));
        let free = free_port();
        let waited =
            std::panic::catch_unwind(|| wait_port(free, "nobody", Duration::from_millis(100)));
        assert!(waited.is_err(), "nobody listens on {free}");
    }
}
