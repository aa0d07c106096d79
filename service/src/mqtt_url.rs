//! The one parser of broker URLs, shared by the gateway's uplink, ingest's
//! subscription and the `waterworks` command: `mqtt://host[:port]` (also
//! `tcp://`; port 1883) or `mqtts://host[:port]` (also `ssl://`; port 8883,
//! TLS). An IPv6 host is written in brackets (`mqtt://[::1]:1883`) and comes
//! out without them. A path, a query or credentials in the URL are refused:
//! the username and password have fields (and a [`crate::secret::Secret`])
//! of their own. It must never resolve or connect: it only reads text.

/// Port of `mqtt://` when the URL names none.
pub const DEFAULT_PORT: u16 = 1883;
/// Port of `mqtts://` when the URL names none.
pub const DEFAULT_TLS_PORT: u16 = 8883;

/// A broker address read from a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttUrl {
    /// Host name or IP address, IPv6 without its brackets.
    pub host: String,
    pub port: u16,
    /// `mqtts://` (or `ssl://`): the connection is TLS.
    pub tls: bool,
}

/// Why a broker URL is refused; each message quotes the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MqttUrlError {
    #[error("{0:?} does not start with mqtt:// or mqtts://")]
    Scheme(String),
    #[error("{0:?} is not mqtt://host[:port] (no path, query or credentials in the URL)")]
    NotHostPort(String),
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error("{0:?} has a bad port (1 to 65535)")]
    Port(String),
}

impl MqttUrl {
    pub fn parse(url: &str) -> Result<MqttUrl, MqttUrlError> {
        let schemes = [
            ("mqtt://", false),
            ("tcp://", false),
            ("mqtts://", true),
            ("ssl://", true),
        ];
        let (rest, tls) = schemes
            .iter()
            .find_map(|(s, tls)| url.strip_prefix(s).map(|r| (r, *tls)))
            .ok_or_else(|| MqttUrlError::Scheme(url.into()))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '@', '?', '#']) || rest.chars().any(char::is_whitespace) {
            return Err(MqttUrlError::NotHostPort(url.into()));
        }
        let default_port = if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| MqttUrlError::NotHostPort(url.into()))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(MqttUrlError::NotHostPort(url.into())),
                },
            }
        } else {
            match rest.split_once(':') {
                // A colon in the host part without brackets: an IPv6
                // address written bare, or a second port.
                Some((_, port)) if port.contains(':') => {
                    return Err(MqttUrlError::NotHostPort(url.into()))
                }
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(MqttUrlError::NoHost(url.into()));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(MqttUrlError::Port(url.into())),
            },
        };
        Ok(MqttUrl {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

impl std::str::FromStr for MqttUrl {
    type Err = MqttUrlError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MqttUrl::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> (String, u16, bool) {
        let u = MqttUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        (u.host, u.port, u.tls)
    }

    #[test]
    fn schemes_and_default_ports() {
        assert_eq!(ok("mqtt://h"), ("h".into(), 1883, false));
        assert_eq!(ok("tcp://h"), ("h".into(), 1883, false));
        assert_eq!(
            ok("mqtts://broker.example"),
            ("broker.example".into(), 8883, true)
        );
        assert_eq!(
            ok("ssl://broker.example"),
            ("broker.example".into(), 8883, true)
        );
        assert_eq!(ok("mqtt://h:1884"), ("h".into(), 1884, false));
        assert_eq!(
            ok("mqtts://10.0.0.7:18883"),
            ("10.0.0.7".into(), 18883, true)
        );
        assert_eq!(
            ok("mqtt://127.0.0.1:1883/"),
            ("127.0.0.1".into(), 1883, false)
        );
    }

    #[test]
    fn ipv6_in_brackets() {
        assert_eq!(ok("mqtt://[::1]:1884"), ("::1".into(), 1884, false));
        assert_eq!(ok("mqtts://[fd00::7]"), ("fd00::7".into(), 8883, true));
        assert!(matches!(
            MqttUrl::parse("mqtt://::1:1883"),
            Err(MqttUrlError::NotHostPort(_))
        ));
        assert!(matches!(
            MqttUrl::parse("mqtt://[::1"),
            Err(MqttUrlError::NotHostPort(_))
        ));
        assert!(matches!(
            MqttUrl::parse("mqtt://[::1]x"),
            Err(MqttUrlError::NotHostPort(_))
        ));
        assert!(matches!(
            MqttUrl::parse("mqtt://[]:1883"),
            Err(MqttUrlError::NoHost(_))
        ));
    }

    #[test]
    fn bad_input_is_refused_with_a_clear_error() {
        let e = MqttUrl::parse("http://h").unwrap_err();
        assert_eq!(e, MqttUrlError::Scheme("http://h".into()));
        assert!(e.to_string().contains("mqtt:// or mqtts://"), "{e}");
        assert!(matches!(
            MqttUrl::parse("h:1883"),
            Err(MqttUrlError::Scheme(_))
        ));
        assert!(matches!(MqttUrl::parse(""), Err(MqttUrlError::Scheme(_))));
        assert!(matches!(
            MqttUrl::parse("mqtt://"),
            Err(MqttUrlError::NoHost(_))
        ));
        assert!(matches!(
            MqttUrl::parse("mqtt://:1883"),
            Err(MqttUrlError::NoHost(_))
        ));
        for port in ["x", "", "0", "65536", "-1", "+1"] {
            let url = format!("mqtt://h:{port}");
            assert_eq!(MqttUrl::parse(&url), Err(MqttUrlError::Port(url.clone())));
        }
        for url in [
            "mqtt://h/topic",
            "mqtt://user:pw@h",
            "mqtt://h:1883?x=1",
            "mqtt://h#f",
            "mqtt://h :1883",
        ] {
            let e = MqttUrl::parse(url).unwrap_err();
            assert_eq!(e, MqttUrlError::NotHostPort(url.into()));
            assert!(e.to_string().contains(url), "{e}");
        }
    }

    #[test]
    fn from_str_is_parse() {
        let u: MqttUrl = "mqtts://b:1".parse().unwrap();
        assert_eq!(
            u,
            MqttUrl {
                host: "b".into(),
                port: 1,
                tls: true
            }
        );
    }
}
