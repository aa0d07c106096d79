//! Server-side sessions: a random 256-bit id in an HttpOnly, SameSite=Strict
//! cookie points at `{token, name, role}` kept only in this process's memory.
//! The table is bounded ([`Sessions::new`]'s `max`): when full, the session
//! idle the longest is ended. A session idle past its limit is gone.
//!
//! The person's token never reaches the browser after the login form, and is
//! never logged or printed (`Debug` redacts it).

use rand::RngCore;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use waterworks_service::auth::Role;

/// The session cookie's name.
pub const COOKIE: &str = "ww_session";

/// Who is signed in, as both backends told the console at login.
#[derive(Clone)]
pub struct Session {
    /// The bearer token sent to the backends on the person's behalf: their
    /// own (token sign-in) or the console's credential of their role
    /// (single sign-on, [`crate::sso`]).
    pub token: String,
    pub name: String,
    pub role: Role,
    /// When the session ends whatever the activity (single sign-on: the ID
    /// token's expiry); `None`: only the idle limit.
    pub expires_at: Option<Instant>,
    /// The ID token of a single sign-on session (the logout hint).
    pub id_token: Option<String>,
    /// The provider's subject of a single sign-on session.
    pub subject: Option<String>,
}

impl Session {
    /// A session of a person signed in with their own token.
    pub fn with_token(token: String, name: String, role: Role) -> Session {
        Session {
            token,
            name,
            role,
            expires_at: None,
            id_token: None,
            subject: None,
        }
    }

    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|t| now >= t)
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token", &"<redacted>")
            .field("id_token", &self.id_token.as_ref().map(|_| "<redacted>"))
            .field("subject", &self.subject)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Operators' pages: operator or admin.
    pub fn is_operator(&self) -> bool {
        self.role.allows(Role::Operator)
    }
    /// Clerks' actions: clerk or admin.
    pub fn is_clerk(&self) -> bool {
        self.role.allows(Role::Clerk)
    }
}

struct Entry {
    session: Session,
    last_seen: Instant,
}

/// The bounded session table. A session ends after `idle` without a
/// request, or at its `expires_at`.
pub struct Sessions {
    idle: Duration,
    max: usize,
    map: Mutex<HashMap<String, Entry>>,
}

impl Sessions {
    pub fn new(idle: Duration, max: usize) -> Self {
        assert!(max > 0, "a session table holds at least one session");
        Self {
            idle,
            max,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session and returns its id (64 hex characters).
    pub fn create(&self, session: Session) -> String {
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let id = hex::encode(raw);
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, e| now.duration_since(e.last_seen) < self.idle && !e.session.expired(now));
        while map.len() >= self.max {
            let oldest = map
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    map.remove(&k);
                    metrics::counter!("console_sessions_evicted_total").increment(1);
                }
                None => break,
            }
        }
        map.insert(
            id.clone(),
            Entry {
                session,
                last_seen: now,
            },
        );
        metrics::gauge!("console_sessions").set(map.len() as f64);
        id
    }

    /// The live session with this id, touching its idle clock.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.get_mut(id)?;
        if now.duration_since(entry.last_seen) >= self.idle || entry.session.expired(now) {
            map.remove(id);
            return None;
        }
        entry.last_seen = now;
        Some(entry.session.clone())
    }

    pub fn remove(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
        metrics::gauge!("console_sessions").set(map.len() as f64);
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str) -> Session {
        Session::with_token("secret-token-0000000".into(), name.into(), Role::Viewer)
    }

    #[test]
    fn ids_are_random_bounded_and_expire() {
        let t = Sessions::new(Duration::from_secs(60), 2);
        let a = t.create(s("a"));
        let b = t.create(s("b"));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_eq!(t.get(&a).unwrap().name, "a");
        // Full: the one idle the longest (b, since a was just read) goes.
        let c = t.create(s("c"));
        assert_eq!(t.len(), 2);
        assert!(t.get(&b).is_none());
        assert!(t.get(&a).is_some() && t.get(&c).is_some());
        t.remove(&a);
        assert!(t.get(&a).is_none());
        let short = Sessions::new(Duration::from_millis(1), 4);
        let id = short.create(s("x"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.get(&id).is_none());
        assert!(!format!("{:?}", s("x")).contains("secret-token"));
        // A session with an end ends then, however busy.
        let t = Sessions::new(Duration::from_secs(60), 4);
        let mut sso = s("y");
        sso.expires_at = Some(Instant::now() + Duration::from_millis(30));
        sso.id_token = Some("eyJ-secret-id-token".into());
        assert!(!format!("{sso:?}").contains("eyJ-secret"));
        let id = t.create(sso);
        assert!(t.get(&id).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(t.get(&id).is_none());
    }
}
