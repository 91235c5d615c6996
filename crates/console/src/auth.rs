//! Who someone is, in the console: a person of the approvers file signs in
//! with their own token (checked against its Argon2id hash), or a trusted
//! reverse proxy names them in a header (believed only from the proxy's
//! addresses). Either way they get a session: a random id in an
//! `HttpOnly`, `SameSite=Strict` cookie, kept in memory for [`SESSION`],
//! with a CSRF token every form carries back. Sign-ins are limited per
//! address, decisions per person ([`Limits`]).

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a session lasts.
pub const SESSION: Duration = Duration::from_secs(8 * 3600);
/// The session cookie's name.
pub const COOKIE: &str = "runbook_session";
/// Sessions kept at most (the oldest go first).
const MAX_SESSIONS: usize = 10_000;

/// How someone signed in: `token` or `header`.
#[derive(Debug, Clone)]
pub struct Session {
    pub person: String,
    pub how: &'static str,
    pub csrf: String,
    pub until: Instant,
    /// What the next page says once (a decision's outcome, shown after
    /// the redirect that follows it, so a reload does not post it again).
    pub flash: Option<String>,
}

#[derive(Default)]
pub struct Sessions {
    by_id: Mutex<BTreeMap<String, Session>>,
}

impl Sessions {
    /// A new session for `person`; its id (the cookie's value).
    pub fn open(&self, person: &str, how: &'static str) -> (String, Session) {
        let id = runbook_core::approvers::random_hex(32);
        let session = Session {
            person: person.to_string(),
            how,
            csrf: runbook_core::approvers::random_hex(32),
            until: Instant::now() + SESSION,
            flash: None,
        };
        let mut all = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        all.retain(|_, s| s.until > now);
        if all.len() >= MAX_SESSIONS
            && let Some(oldest) = all
                .iter()
                .min_by_key(|(_, s)| s.until)
                .map(|(k, _)| k.clone())
        {
            all.remove(&oldest);
        }
        all.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The live session `id` names.
    pub fn get(&self, id: &str) -> Option<Session> {
        let all = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        all.get(id).filter(|s| s.until > Instant::now()).cloned()
    }

    /// Keeps `text` for session `id`'s next page.
    pub fn flash(&self, id: &str, text: String) {
        let mut all = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = all.get_mut(id) {
            s.flash = Some(text);
        }
    }

    /// The text kept for session `id`'s next page, once.
    pub fn take_flash(&self, id: &str) -> Option<String> {
        let mut all = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        all.get_mut(id).and_then(|s| s.flash.take())
    }

    pub fn close(&self, id: &str) {
        let mut all = self.by_id.lock().unwrap_or_else(|e| e.into_inner());
        all.remove(id);
    }
}

/// The session cookie's value in a `Cookie` header.
pub fn session_id(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE && v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| v.to_string())
        })
}

/// The `Set-Cookie` value for session `id` (`None`: to remove it).
pub fn cookie(id: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match id {
        Some(id) => format!(
            "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            SESSION.as_secs()
        ),
        None => format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// Whether `given` is the session's CSRF token (in constant time).
pub fn csrf_ok(session: &Session, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    session.csrf.len() == given.len() && bool::from(session.csrf.as_bytes().ct_eq(given.as_bytes()))
}

/// How often sign-ins (per address) and decisions (per person) may come.
pub struct Limits {
    seen: Mutex<BTreeMap<String, VecDeque<Instant>>>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            seen: Mutex::new(BTreeMap::new()),
        }
    }
}

/// Sign-ins as one person from one address per minute (counted before
/// the token is checked, so a flood costs no more than five Argon2
/// checks a minute per name).
pub const SIGN_INS: usize = 5;
/// Decisions by one person per minute.
pub const DECISIONS: usize = 10;
const WINDOW: Duration = Duration::from_secs(60);
const MAX_KEYS: usize = 10_000;

impl Limits {
    /// Counts one for `key` and says whether it is within `per_minute`.
    pub fn allow(&self, key: &str, per_minute: usize) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= MAX_KEYS {
            seen.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        }
        let q = seen.entry(key.to_string()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            q.pop_front();
        }
        if q.len() >= per_minute {
            return false;
        }
        q.push_back(now);
        true
    }

    /// Whether `key` is already at `per_minute` (without counting).
    pub fn exhausted(&self, key: &str, per_minute: usize) -> bool {
        let now = Instant::now();
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(key).is_some_and(|q| {
            q.iter()
                .filter(|t| now.duration_since(**t) < WINDOW)
                .count()
                >= per_minute
        })
    }
}

/// The person a trusted proxy names for a request from `peer`, if it is
/// one of the proxies and the header is there.
pub fn from_proxy(
    trusted: Option<&crate::TrustedHeader>,
    peer: IpAddr,
    headers: &axum::http::HeaderMap,
) -> Option<String> {
    let t = trusted?;
    if !t.proxies.contains(&peer) {
        return None;
    }
    // Given twice (a proxy that appends to a client's own): not believed.
    let mut given = headers.get_all(t.header.as_str()).iter();
    let (Some(value), None) = (given.next(), given.next()) else {
        return None;
    };
    let name = value.to_str().ok()?.trim();
    (!name.is_empty() && name.len() <= 64).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_csrf_tokens_compare_whole() {
        let sessions = Sessions::default();
        let (id, s) = sessions.open("alice", "token");
        assert_eq!(sessions.get(&id).unwrap().person, "alice");
        assert!(csrf_ok(&s, &s.csrf.clone()));
        assert!(!csrf_ok(&s, &s.csrf[..63]));
        assert!(!csrf_ok(&s, ""));
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn the_cookie_is_read_only_in_its_own_shape() {
        let mut h = axum::http::HeaderMap::new();
        let id = "a".repeat(64);
        h.insert("cookie", format!("x=1; {COOKIE}={id}").parse().unwrap());
        assert_eq!(session_id(&h), Some(id));
        h.insert("cookie", format!("{COOKIE}=../etc").parse().unwrap());
        assert_eq!(session_id(&h), None);
    }

    #[test]
    fn a_proxy_header_counts_only_from_the_proxy() {
        let trusted = crate::TrustedHeader {
            header: "x-forwarded-user".into(),
            proxies: vec!["10.0.0.5".parse().unwrap()],
        };
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-forwarded-user", "alice".parse().unwrap());
        let proxy = "10.0.0.5".parse().unwrap();
        let other = "10.0.0.6".parse().unwrap();
        assert_eq!(
            from_proxy(Some(&trusted), proxy, &h).as_deref(),
            Some("alice")
        );
        assert_eq!(from_proxy(Some(&trusted), other, &h), None);
        assert_eq!(from_proxy(None, proxy, &h), None);
        h.append("x-forwarded-user", "mallory".parse().unwrap());
        assert_eq!(from_proxy(Some(&trusted), proxy, &h), None);
    }

    #[test]
    fn limits_refuse_past_their_count() {
        let l = Limits::default();
        assert!((0..3).all(|_| l.allow("k", 3)));
        assert!(!l.allow("k", 3));
        assert!(l.exhausted("k", 3));
        assert!(l.allow("other", 3));
    }
}
