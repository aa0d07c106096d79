//! [`Secret`]: a password, token or database URL held in a configuration.
//! `Debug` and `Display` show `Secret(***)`; the text itself comes out only
//! through [`Secret::expose`], where it is handed to the client that needs
//! it. It must never implement `Serialize`: a secret is read, not written.

use serde::Deserialize;

/// A secret string (deserialised from a plain string).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Secret(text.into())
    }

    /// The secret itself, for the one call that needs it (a login, a connect).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Secret(text)
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Secret(text.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Conf {
        #[allow(dead_code)]
        password: Secret,
    }

    #[test]
    fn neither_debug_nor_display_shows_it() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn deserialises_from_a_string_and_stays_hidden() {
        let c: Conf = toml::from_str("password = \"pw-from-toml\"").unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("pw-from-toml") && shown.contains("Secret(***)"),
            "{shown}"
        );
        assert_eq!(c.password.expose(), "pw-from-toml");
        assert!(toml::from_str::<Conf>("password = 3").is_err());
    }
}
