//! Bearer tokens cached per scope (`repository:<name>:pull`, ...), as registries hand them
//! out: one token per repository, reused until it expires, and one token request for all the
//! requests that need the same scope at once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// What the distribution token specification assumes when a token endpoint gives no
/// `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

/// A token from a realm, as its answer gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Issued {
    pub token: String,
    /// Seconds the token lives, from when it was issued.
    pub expires_in: Option<u64>,
}

/// How long a token is used: its `expires_in` (60 s when absent or zero), less a tenth so that
/// no request leaves with a token about to lapse on its way.
pub(super) fn usable_for(expires_in: Option<u64>) -> Duration {
    let lifetime = expires_in
        .filter(|s| *s > 0)
        .map_or(DEFAULT_LIFETIME, Duration::from_secs);
    lifetime - lifetime / 10
}

#[derive(Debug, Clone)]
struct Cached {
    token: String,
    until: Instant,
}

type Slot = Arc<tokio::sync::Mutex<Option<Cached>>>;

/// The tokens of one registry, by scope.
#[derive(Default)]
pub(super) struct TokenCache {
    slots: Mutex<HashMap<String, Slot>>,
}

/// A token handed out by the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Lease {
    pub token: String,
    /// Fetched for this request (not reused): a refusal of it is the registry's last word.
    pub fresh: bool,
}

impl TokenCache {
    /// The token for `scope`: the cached one while it lasts, else one from `fetch`, which
    /// callers asking for the same scope meanwhile wait for and share.
    pub async fn get<E, Fut>(&self, scope: &str, fetch: impl FnOnce() -> Fut) -> Result<Lease, E>
    where
        Fut: Future<Output = Result<Issued, E>>,
    {
        let slot = self.slot(scope);
        let mut cached = slot.lock().await;
        if let Some(held) = cached.as_ref().filter(|c| Instant::now() < c.until) {
            return Ok(Lease {
                token: held.token.clone(),
                fresh: false,
            });
        }
        let issued = fetch().await?;
        *cached = Some(Cached {
            token: issued.token.clone(),
            until: Instant::now() + usable_for(issued.expires_in),
        });
        Ok(Lease {
            token: issued.token,
            fresh: true,
        })
    }

    /// Forgets `refused`, the token the registry would not take for `scope`, unless another
    /// request has replaced it already.
    pub async fn discard(&self, scope: &str, refused: &str) {
        let slot = self.slot(scope);
        let mut cached = slot.lock().await;
        if cached.as_ref().is_some_and(|c| c.token == refused) {
            *cached = None;
        }
    }

    fn slot(&self, scope: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.entry(scope.to_string()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn issued(token: &str, expires_in: Option<u64>) -> Issued {
        Issued {
            token: token.into(),
            expires_in,
        }
    }

    #[test]
    fn tokens_are_used_for_nine_tenths_of_their_life() {
        assert_eq!(usable_for(Some(300)), Duration::from_secs(270));
        assert_eq!(usable_for(Some(1)), Duration::from_millis(900));
        assert_eq!(usable_for(None), Duration::from_secs(54));
        assert_eq!(usable_for(Some(0)), Duration::from_secs(54));
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_reused_per_scope_until_it_expires() {
        let cache = TokenCache::default();
        let fetches = AtomicU32::new(0);
        let fetch = |name: &'static str| {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ()>(issued(&format!("{name}-{n}"), Some(10))) }
        };
        let first = cache.get("repository:a:pull", || fetch("a")).await.unwrap();
        assert_eq!(
            first,
            Lease {
                token: "a-0".into(),
                fresh: true
            }
        );
        let again = cache.get("repository:a:pull", || fetch("a")).await.unwrap();
        assert_eq!(
            again,
            Lease {
                token: "a-0".into(),
                fresh: false
            }
        );
        let other = cache.get("repository:b:pull", || fetch("b")).await.unwrap();
        assert_eq!(other.token, "b-1");
        tokio::time::advance(Duration::from_secs(9)).await;
        let renewed = cache.get("repository:a:pull", || fetch("a")).await.unwrap();
        assert_eq!(
            renewed,
            Lease {
                token: "a-2".into(),
                fresh: true
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_for_one_scope_at_once_share_one_fetch() {
        let cache = Arc::new(TokenCache::default());
        let fetches = Arc::new(AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (cache, fetches) = (cache.clone(), fetches.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get("repository:a:pull", || async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, ()>(issued("shared", None))
                    })
                    .await
                    .unwrap()
                    .token
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), "shared");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refused_token_is_forgotten_unless_already_replaced() {
        let cache = TokenCache::default();
        let scope = "repository:a:pull";
        cache
            .get(scope, || async { Ok::<_, ()>(issued("t1", None)) })
            .await
            .unwrap();
        cache.discard(scope, "t0").await;
        let kept = cache
            .get(scope, || async { Ok::<_, ()>(issued("t2", None)) })
            .await
            .unwrap();
        assert_eq!(kept.token, "t1");
        cache.discard(scope, "t1").await;
        let replaced = cache
            .get(scope, || async { Ok::<_, ()>(issued("t2", None)) })
            .await
            .unwrap();
        assert_eq!(
            replaced,
            Lease {
                token: "t2".into(),
                fresh: true
            }
        );
    }

    #[tokio::test]
    async fn a_failed_fetch_leaves_nothing_cached() {
        let cache = TokenCache::default();
        let scope = "repository:a:pull";
        let failed = cache
            .get(scope, || async { Err::<Issued, _>("refused") })
            .await;
        assert_eq!(failed, Err("refused"));
        let next = cache
            .get(scope, || async { Ok::<_, &str>(issued("t", None)) })
            .await
            .unwrap();
        assert!(next.fresh);
    }
}
