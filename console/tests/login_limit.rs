//! Sign-in attempts are rate limited per client IP (guessing tokens): past
//! `login_per_ip_per_min`, `POST /login` answers 429 with `Retry-After`
//! before any backend is asked; the sign-in form itself stays available.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use waterworks_console::{Console, ConsoleConfig};

async fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\norigin: http://{addr}\r\nconnection: close\r\n\
         content-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.unwrap();
    let resp = String::from_utf8_lossy(&resp).to_string();
    let head = resp.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    (resp[9..12].parse().unwrap(), head)
}

#[tokio::test]
async fn sign_in_attempts_are_limited_per_ip() {
    // Backends nobody listens on: a refused attempt never reaches them.
    let mut cfg = ConsoleConfig::new("http://127.0.0.1:9", "http://127.0.0.1:9");
    cfg.http_listen = "127.0.0.1:0".parse().unwrap();
    cfg.backend_timeout_ms = 500;
    cfg.login_per_ip_per_min = 3;
    let console = Console::build(cfg).await.unwrap();
    let addr = console.http_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(console.run_until_stopped(shutdown.clone()));

    for i in 0..3 {
        let (status, _) = request(addr, "POST", "/login", "token=guess-number-one").await;
        assert_ne!(status, 429, "attempt {i}");
    }
    let (status, head) = request(addr, "POST", "/login", "token=guess-number-four").await;
    assert_eq!(status, 429);
    assert!(head.contains("retry-after: "), "{head}");
    // The form (GET) is not an attempt.
    assert_eq!(request(addr, "GET", "/login", "").await.0, 200);
    shutdown.cancel();
    let _ = task.await;
}
