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
    /// The person's own bearer token, sent to the backends on their behalf.
    pub token: String,
    pub name: String,
    pub role: Role,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("token", &"<redacted>")
            .finish()
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

/// The bounded session table.
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
        map.retain(|_, e| now.duration_since(e.last_seen) < self.idle);
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
        if now.duration_since(entry.last_seen) >= self.idle {
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
        Session {
            token: "secret-token-0000000".into(),
            name: name.into(),
            role: Role::Viewer,
        }
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
    }
}
