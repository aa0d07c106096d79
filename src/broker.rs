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

/// A running embedded broker: one router, two listeners (MQTT 3.1.1 for the
/// gateways, MQTT 5 for ingest); a message published on one reaches the
/// subscribers of the other.
#[derive(Debug)]
pub struct EmbeddedBroker {
    /// The MQTT 3.1.1 listener.
    pub addr: SocketAddr,
    /// The MQTT 5 listener (ingest's persistent shared-subscription session).
    pub addr_v5: SocketAddr,
}

impl EmbeddedBroker {
    /// The `mqtt://` URL of the MQTT 3.1.1 listener (gateways, taps).
    pub fn url(&self) -> String {
        format!("mqtt://{}", self.addr)
    }

    /// The `mqtt://` URL of the MQTT 5 listener (ingest).
    pub fn url_v5(&self) -> String {
        format!("mqtt://{}", self.addr_v5)
    }

    /// Starts rumqttd (MQTT 3.1.1 and MQTT 5 listeners, shared subscriptions
    /// round-robin) on free loopback ports and waits until both accept
    /// connections.
    pub fn start() -> anyhow::Result<EmbeddedBroker> {
        let port = free_port().context("no free loopback port for the embedded broker")?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut port_v5 = free_port().context("no free loopback port for the embedded broker")?;
        while port_v5 == port {
            port_v5 = free_port()?;
        }
        let addr_v5: SocketAddr = ([127, 0, 0, 1], port_v5).into();
        let server = |name: &str, listen: SocketAddr| rumqttd::ServerSettings {
            name: name.into(),
            listen,
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
            v4: Some(HashMap::from([("1".to_string(), server("v4-demo", addr))])),
            v5: Some(HashMap::from([(
                "2".to_string(),
                server("v5-demo", addr_v5),
            )])),
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
        for a in [addr, addr_v5] {
            while TcpStream::connect_timeout(&a, Duration::from_millis(200)).is_err() {
                if Instant::now() > deadline {
                    bail!("the embedded MQTT broker did not come up on {a} within 10 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        tracing::info!(%addr, %addr_v5, "embedded MQTT broker (rumqttd) listening: 3.1.1 and 5");
        Ok(EmbeddedBroker { addr, addr_v5 })
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Checks that a broker answers at `url` (`mqtt://host:port`, read by the
/// workspace's one parser, `waterworks_service::mqtt_url`) with a TCP connect.
pub fn reachable(url: &str) -> anyhow::Result<SocketAddr> {
    let parsed = waterworks_service::mqtt_url::MqttUrl::parse(url)?;
    if parsed.tls {
        bail!("{url:?}: only mqtt://host:port is supported here");
    }
    let (host, port) = (parsed.host.as_str(), parsed.port);
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

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::{self, mqttbytes::v5::Packet, mqttbytes::QoS, Event};

    async fn until<T>(
        events: &mut v5::EventLoop,
        mut want: impl FnMut(&Packet) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let ev = tokio::time::timeout_at(deadline, events.poll())
                .await
                .context("timed out waiting for the broker")??;
            if let Event::Incoming(p) = ev {
                if let Some(t) = want(&p) {
                    return Ok(t);
                }
            }
        }
    }

    fn session(broker: &EmbeddedBroker, id: &str) -> (v5::AsyncClient, v5::EventLoop) {
        let mut o = v5::MqttOptions::new(id, "127.0.0.1", broker.addr_v5.port());
        o.set_clean_start(false)
            .set_session_expiry_interval(Some(600))
            .set_receive_maximum(Some(100))
            .set_manual_acks(true);
        v5::AsyncClient::new(o, 64)
    }

    /// What ingest needs of the embedded broker's MQTT 5 listener: a shared
    /// subscription in a persistent session (clean_start = false) gets, on
    /// reconnect and without subscribing again, the QoS 1 messages a 3.1.1
    /// gateway published while it was away; unacknowledged ones come back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v5_persistent_shared_session_receives_what_came_while_away() -> anyhow::Result<()> {
        let broker = EmbeddedBroker::start()?;
        let filter = "$share/ingest/waterworks/v1/+/readings";
        let (client, mut events) = session(&broker, "ingest-v5-test");
        until(&mut events, |p| {
            matches!(p, Packet::ConnAck(_)).then_some(())
        })
        .await?;
        client.subscribe(filter, QoS::AtLeastOnce).await?;
        until(&mut events, |p| {
            matches!(p, Packet::SubAck(_)).then_some(())
        })
        .await?;
        client.disconnect().await?;
        while events.poll().await.is_ok() {}
        drop((client, events));

        // A 3.1.1 gateway publishes three QoS 1 messages meanwhile.
        let mut o = rumqttc::MqttOptions::new("gw-v4-test", "127.0.0.1", broker.addr.port());
        o.set_clean_session(true);
        let (gw, mut gw_events) = rumqttc::AsyncClient::new(o, 16);
        for i in 0..3 {
            gw.publish(
                "waterworks/v1/gw-1/readings",
                rumqttc::QoS::AtLeastOnce,
                false,
                format!("m{i}"),
            )
            .await?;
        }
        let mut acked = 0;
        while acked < 3 {
            match tokio::time::timeout(Duration::from_secs(10), gw_events.poll()).await?? {
                rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) => acked += 1,
                _ => continue,
            }
        }

        // Back with the same client id: the session and its messages wait.
        let (client, mut events) = session(&broker, "ingest-v5-test");
        let present = until(&mut events, |p| match p {
            Packet::ConnAck(a) => Some(a.session_present),
            _ => None,
        })
        .await?;
        assert!(present, "the broker kept the session");
        let mut got = Vec::new();
        while got.len() < 3 {
            let p = until(&mut events, |p| match p {
                Packet::Publish(p) => Some(p.clone()),
                _ => None,
            })
            .await?;
            got.push(String::from_utf8_lossy(&p.payload).into_owned());
            client.ack(&p).await?;
        }
        got.sort();
        assert_eq!(got, ["m0", "m1", "m2"]);
        Ok(())
    }

    /// Ingest acknowledges after commit, per writer lane, so its acks come
    /// out of order. Upstream rumqttd dropped the connection on the first
    /// out-of-order ack (the demo's thousands of "broker connection lost");
    /// the patched broker takes them and keeps delivering on the same
    /// connection, packet ids of unacknowledged messages never reused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn out_of_order_acks_keep_the_connection() -> anyhow::Result<()> {
        let broker = EmbeddedBroker::start()?;
        // The event loop takes at most one ack per poll: a request channel
        // as large as the test's acks, as ingest has (ACK_CHANNEL_CAPACITY).
        let mut o = v5::MqttOptions::new("ingest-ooo-test", "127.0.0.1", broker.addr_v5.port());
        o.set_clean_start(false)
            .set_session_expiry_interval(Some(600))
            .set_receive_maximum(Some(1000))
            .set_manual_acks(true);
        let (client, mut events) = v5::AsyncClient::new(o, 4096);
        until(&mut events, |p| {
            matches!(p, Packet::ConnAck(_)).then_some(())
        })
        .await?;
        client
            .subscribe("$share/ingest/waterworks/v1/+/readings", QoS::AtLeastOnce)
            .await?;
        until(&mut events, |p| {
            matches!(p, Packet::SubAck(_)).then_some(())
        })
        .await?;
        let mut o = rumqttc::MqttOptions::new("gw-ooo-test", "127.0.0.1", broker.addr.port());
        o.set_clean_session(true);
        let (gw, mut gw_events) = rumqttc::AsyncClient::new(o, 1024);
        tokio::spawn(async move { while gw_events.poll().await.is_ok() {} });
        // Far more messages than the broker's window of 100 and than its
        // 100 packet ids; each window is acknowledged last to first.
        const N: usize = 600;
        for i in 0..N {
            gw.publish(
                "waterworks/v1/gw-1/readings",
                rumqttc::QoS::AtLeastOnce,
                false,
                format!("m{i}"),
            )
            .await?;
        }
        let mut got = std::collections::BTreeSet::new();
        let mut held = Vec::new();
        while got.len() < N {
            // An error here is the broker dropping the connection.
            let p = until(&mut events, |p| match p {
                Packet::Publish(p) => Some(p.clone()),
                _ => None,
            })
            .await?;
            assert!(
                !held
                    .iter()
                    .any(|h: &v5::mqttbytes::v5::Publish| h.pkid == p.pkid),
                "packet id {} handed out again while unacknowledged",
                p.pkid
            );
            got.insert(String::from_utf8_lossy(&p.payload).into_owned());
            held.push(p);
            if held.len() == 7 || got.len() == N {
                for p in held.drain(..).rev() {
                    client.ack(&p).await?;
                }
            }
        }
        assert_eq!(got.len(), N, "every message, once, on one connection");
        Ok(())
    }
}
