//! Domain identifiers. They are parsed once at the edge of the system, so that
//! everything inside can rely on them being well-formed (and safe in a topic).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest identifier accepted; also keeps topics and database keys bounded.
pub const ID_MAX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("identifier is empty")]
    Empty,
    #[error("identifier is {0} characters long; at most {ID_MAX_LEN} are allowed")]
    TooLong(usize),
    #[error("identifier {0:?} may only contain ASCII letters, digits, '-', '_' and '.'")]
    BadCharacter(String),
}

fn check(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > ID_MAX_LEN {
        return Err(IdError::TooLong(s.len()));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(IdError::BadCharacter(s.to_string()));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses an identifier: 1 to 64 characters of `[A-Za-z0-9._-]`.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check(&s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A water meter's identifier (its serial number as the utility records it).
    MeterId
);
id_type!(
    /// A field gateway's identifier; it is also a segment of its MQTT topics.
    GatewayId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        assert_eq!(MeterId::parse("m-0001").unwrap().as_str(), "m-0001");
        assert!(GatewayId::parse("gw_01.dj").is_ok());
    }

    #[test]
    fn refuses_topic_breaking_ids() {
        assert_eq!(MeterId::parse(""), Err(IdError::Empty));
        assert!(matches!(
            MeterId::parse("a/b"),
            Err(IdError::BadCharacter(_))
        ));
        assert!(matches!(
            GatewayId::parse("+"),
            Err(IdError::BadCharacter(_))
        ));
        assert!(matches!(
            GatewayId::parse("x".repeat(65)),
            Err(IdError::TooLong(65))
        ));
    }

    #[test]
    fn deserialize_validates() {
        assert!(serde_json::from_str::<MeterId>("\"ok-1\"").is_ok());
        assert!(serde_json::from_str::<MeterId>("\"no#\"").is_err());
    }
}
