//! The MQTT broker of the demo: an embedded rumqttd on a loopback port, so the
//! demo needs nothing installed, or any broker the user names with `--mqtt`.
//!
//! The embedded broker is for one machine only: it keeps nothing on disk and
//! lives as long as the process. Production runs Mosquitto or EMQX (deploy/).

use anyhow::{bail, Context};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Largest MQTT payload the embedded broker accepts: a full batch of
/// `waterworks_wire::reading::MAX_PAYLOAD_BYTES` plus headroom.
const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;
/// Messages kept per topic segment, bounded so the broker's memory is too:
/// 8 segments of 16 MiB at most.
const SEGMENT_BYTES: usize = 16 * 1024 * 1024;
const SEGMENT_COUNT: usize = 8;

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    pub addr: SocketAddr,
}

impl EmbeddedBroker {
    /// The `mqtt://` URL clients connect to.
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// Starts rumqttd (MQTT 3.1.1, shared subscriptions round-robin) on a free
    /// loopback port and waits until it accepts connections.
    pub fn start() -> anyhow::Result<EmbeddedBroker> {
        let port = free_port().context("no free loopback port for the embedded broker")?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let server = rumqttd::ServerSettings {
            name: "v4-demo".into(),
            listen: addr,
            tls: None,
            next_connection_delay_ms: 1,
            connections: rumqttd::ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: MAX_PAYLOAD_BYTES,
                max_inflight_count: 500,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        };
        let config = rumqttd::Config {
            id: 0,
            router: rumqttd::RouterConfig {
                max_connections: 10_010,
                max_outgoing_packet_count: 1_000,
                max_segment_size: SEGMENT_BYTES,
                max_segment_count: SEGMENT_COUNT,
                custom_segment: None,
                initialized_filters: None,
                shared_subscriptions_strategy: rumqttd::Strategy::RoundRobin,
            },
            v4: Some(HashMap::from([("1".to_string(), server)])),
            ..Default::default()
        };
        std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "embedded broker stopped");
                }
            })
            .context("cannot start the embedded broker's thread")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                bail!("the embedded MQTT broker did not come up on {addr} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::info!(%addr, "embedded MQTT broker (rumqttd) listening");
        Ok(EmbeddedBroker { addr })
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Checks that a broker answers at `url` (`mqtt://host:port`) with a TCP connect.
pub fn reachable(url: &str) -> anyhow::Result<SocketAddr> {
    let parsed = url::Url::parse(url).with_context(|| format!("{url:?} is not a URL"))?;
    if parsed.scheme() != "mqtt" {
        bail!("{url:?}: only mqtt://host:port is supported here");
    }
    let host = parsed.host_str().context("the MQTT URL has no host")?;
    let port = parsed.port().unwrap_or(1883);
    use std::net::ToSocketAddrs;
    let addr = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} resolves to nothing"))?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("no MQTT broker answers at {url}"))?;
    Ok(addr)
}
