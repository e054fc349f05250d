//! Who may join, send to and read a room: the one place the rule lives.
//!
//! Two things must both allow a WebSocket user into a room:
//! - the token's `rooms` claim, when it has one: exact names and `prefix*` patterns;
//! - the room itself: a direct room `dm:A:B` admits A and B; a private room (set through
//!   the HTTP API, kept in the store) admits its members; any other room admits everyone.
//!
//! The HTTP API acts for the operator and is not checked here, but it refuses malformed
//! `dm:` names as everyone else does ([`check_name`]).
//!
//! Room settings are cached (bounded, see `ROOM_CACHE_SIZE` and `ROOM_CACHE_TTL_MS`). A
//! change through the HTTP API drops a room's entry on every gateway, through the
//! delivery bus, and removes the connections no longer allowed (see `changes`); the TTL
//! bounds how stale an entry can be when that announcement is missed.

use crate::protocol::{CommandError, ErrorCode};
use shared::sync::lock;
use shared::{RoomId, UserId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{RoomSettings, Store};

/// Prefix of direct rooms.
const DM_PREFIX: &str = "dm:";

/// The `rooms` claim of a token: the rooms it may touch. `None` in a session: no claim,
/// every room (as far as the token goes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomClaim {
    patterns: Vec<Pattern>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl RoomClaim {
    /// Each entry is a room name, or a prefix followed by `*` (`"team-7:*"`; `"*"` alone
    /// is every room). Entries that no room name could match simply match nothing.
    pub fn new(entries: &[String]) -> Self {
        let patterns = entries
            .iter()
            .map(|e| match e.strip_suffix('*') {
                Some(prefix) => Pattern::Prefix(prefix.to_owned()),
                None => Pattern::Exact(e.clone()),
            })
            .collect();
        Self { patterns }
    }

    pub fn allows(&self, room: &RoomId) -> bool {
        let room = room.as_str();
        self.patterns.iter().any(|p| match p {
            Pattern::Exact(name) => name == room,
            Pattern::Prefix(prefix) => room.starts_with(prefix.as_str()),
        })
    }
}

/// The two users of a direct room `dm:A:B`, or `None` for a room that is not one. A `dm:`
/// name whose two parts are not user names without `:` in byte order (A < B) is refused:
/// a name with more colons could be split more than one way.
pub fn direct_pair(room: &RoomId) -> Result<Option<(UserId, UserId)>, CommandError> {
    let Some(rest) = room.as_str().strip_prefix(DM_PREFIX) else {
        return Ok(None);
    };
    let bad = || {
        CommandError::new(
            ErrorCode::BadRequest,
            "a direct room is dm:A:B with A and B user names without ':' and A < B (byte order)",
        )
    };
    let (a, b) = rest.split_once(':').ok_or_else(bad)?;
    if b.contains(':') || a >= b {
        return Err(bad());
    }
    let a = UserId::parse(a).map_err(|_| bad())?;
    let b = UserId::parse(b).map_err(|_| bad())?;
    Ok(Some((a, b)))
}

/// Refuses a malformed `dm:` name; what every entry point (WebSocket and HTTP) checks.
pub fn check_name(room: &RoomId) -> Result<(), CommandError> {
    direct_pair(room).map(|_| ())
}

/// The settings every user sees for `room`: a direct room's are fixed (private to its
/// two users), any other's come from the store.
pub async fn settings_of(store: &Store, room: &RoomId) -> Result<RoomSettings, store::Error> {
    match direct_pair(room) {
        Ok(Some((a, b))) => Ok(RoomSettings {
            private: true,
            members: vec![a, b],
        }),
        _ => store.room_settings(room).await,
    }
}

/// The access rule and its cache of room settings, one per gateway.
pub struct Access {
    store: Store,
    cache: Mutex<HashMap<RoomId, Cached>>,
    capacity: usize,
    ttl: Duration,
    /// Moves on every invalidation: a store read that started before one does not fill
    /// the cache with what may be the old settings.
    generation: AtomicU64,
}

struct Cached {
    settings: Arc<RoomSettings>,
    at: Instant,
}

impl Access {
    pub fn new(store: Store, capacity: usize, ttl: Duration) -> Self {
        Self {
            store,
            cache: Mutex::default(),
            capacity: capacity.max(1),
            ttl,
            generation: AtomicU64::new(0),
        }
    }

    /// `Ok` when `user` (with the token's `claim`) may join, send to and read `room`;
    /// `bad_request` for a malformed `dm:` name, `forbidden` when not allowed,
    /// `unavailable` when the store does not answer.
    pub async fn check(
        &self,
        user: &UserId,
        claim: Option<&RoomClaim>,
        room: &RoomId,
    ) -> Result<(), CommandError> {
        let pair = direct_pair(room)?;
        if claim.is_some_and(|c| !c.allows(room)) {
            return Err(forbidden(room, "your token's rooms do not include it"));
        }
        let allowed = match pair {
            Some((a, b)) => *user == a || *user == b,
            None => {
                let s = self.settings(room).await?;
                !s.private || s.has_member(user)
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(forbidden(room, "it is private and you are not a member"))
        }
    }

    /// Forgets what is cached for `room`; the HTTP API calls it after changing the room.
    pub fn invalidate(&self, room: &RoomId) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        lock(&self.cache).remove(room);
    }

    async fn settings(&self, room: &RoomId) -> Result<Arc<RoomSettings>, CommandError> {
        if let Some(c) = lock(&self.cache).get(room)
            && c.at.elapsed() < self.ttl
        {
            return Ok(c.settings.clone());
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let settings = match self.store.room_settings(room).await {
            Ok(s) => Arc::new(s),
            Err(e) => return self.stale(room, &e),
        };
        let mut cache = lock(&self.cache);
        if self.generation.load(Ordering::SeqCst) == generation {
            if cache.len() >= self.capacity && !cache.contains_key(room) {
                self.evict(&mut cache);
            }
            let entry = Cached {
                settings: settings.clone(),
                at: Instant::now(),
            };
            cache.insert(room.clone(), entry);
        }
        Ok(settings)
    }

    /// The store did not answer: an expired entry still serves (it is what held until
    /// moments ago, and an invalidated one is gone); without one the command is refused,
    /// never let through.
    fn stale(&self, room: &RoomId, e: &store::Error) -> Result<Arc<RoomSettings>, CommandError> {
        if let Some(c) = lock(&self.cache).get(room) {
            tracing::warn!(%room, error = %e, "room settings unreadable; using the expired cached ones");
            return Ok(c.settings.clone());
        }
        tracing::error!(%room, error = %e, "reading a room's settings failed");
        Err(CommandError::new(
            ErrorCode::Unavailable,
            "the room's settings cannot be read now; retry shortly",
        ))
    }

    /// Makes room for one entry: expired ones go first, else any one.
    fn evict(&self, cache: &mut HashMap<RoomId, Cached>) {
        cache.retain(|_, c| c.at.elapsed() < self.ttl);
        if cache.len() >= self.capacity
            && let Some(any) = cache.keys().next().cloned()
        {
            cache.remove(&any);
        }
    }
}

fn forbidden(room: &RoomId, why: &str) -> CommandError {
    CommandError::new(
        ErrorCode::Forbidden,
        format!("you may not use {room}: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(s: &str) -> RoomId {
        RoomId::parse(s).unwrap()
    }

    #[test]
    fn direct_rooms_name_two_users_in_byte_order() {
        let (a, b) = direct_pair(&room("dm:Bob:alice")).unwrap().unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("Bob", "alice"));
        assert_eq!(direct_pair(&room("lobby")).unwrap(), None);
        assert_eq!(direct_pair(&room("dmx:a:b")).unwrap(), None);
        for bad in [
            "dm:",
            "dm:alice",
            "dm:bob:alice",
            "dm:a:a",
            "dm::b",
            "dm:a:",
            "dm:a:b:c",
        ] {
            let e = direct_pair(&room(bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{bad}");
        }
    }

    #[test]
    fn claims_match_exact_names_and_prefixes() {
        let claim = RoomClaim::new(&["lobby".into(), "team-7:*".into()]);
        assert!(claim.allows(&room("lobby")));
        assert!(claim.allows(&room("team-7:ops")));
        assert!(claim.allows(&room("team-7:")));
        assert!(!claim.allows(&room("lobby2")));
        assert!(!claim.allows(&room("team-8:ops")));
        assert!(RoomClaim::new(&["*".into()]).allows(&room("anything")));
        assert!(!RoomClaim::new(&[]).allows(&room("lobby")));
    }

    #[tokio::test]
    async fn the_cache_stays_bounded_and_invalidation_applies_at_once() {
        let dir = std::env::temp_dir().join(format!("courier-access-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/chat.db", dir.display());
        let store = Store::connect(&url, Default::default()).await.unwrap();
        let access = Access::new(store.clone(), 2, Duration::from_secs(3600));
        let alice = UserId::parse("alice").unwrap();
        for r in ["a", "b", "c"] {
            access.check(&alice, None, &room(r)).await.unwrap();
        }
        assert_eq!(lock(&access.cache).len(), 2, "bounded");
        // A change behind the cache's back shows only once the room is invalidated.
        store.put_room(&room("c"), true, &[]).await.unwrap();
        assert!(
            access.check(&alice, None, &room("c")).await.is_ok(),
            "cached"
        );
        access.invalidate(&room("c"));
        let refused = access.check(&alice, None, &room("c")).await.unwrap_err();
        assert_eq!(refused.code, ErrorCode::Forbidden);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
