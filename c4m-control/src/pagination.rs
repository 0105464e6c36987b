//! List pagination as Kubernetes serves it: `limit` caps a page, the
//! answer's `metadata.continue` is an opaque token for the next one and
//! `metadata.remainingItemCount` counts what is left (kubectl asks for
//! chunks of 500).
//!
//! Every page of one list comes from the same snapshot, so a paged list is
//! consistent at one resourceVersion, as Kubernetes' is: the first page
//! lists, keeps the (filtered, sorted) list in memory and names it in the
//! token, which says where the next page starts. A page is a range of the
//! kept list, shared, not copied: each page of 500 costs what its own
//! items cost to write out, whatever the length of the list. A snapshot is kept five minutes (as etcd keeps history for
//! Kubernetes) and at most 32 are kept at once (both set in
//! [`Snapshots::new`]); a token for one that is gone is 410 Gone, saying to
//! list again, as Kubernetes says it when its history was compacted.

use std::collections::{HashMap, VecDeque};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as TOKEN_BASE64;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tables::ListMeta;
use crate::{Error, Result};

/// What a list request asks for: `limit` and `continue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageRequest {
    /// The most items in the answer (None: all).
    pub limit: Option<usize>,
    /// The token of the page to continue from.
    pub continue_token: Option<String>,
}

impl PageRequest {
    /// Reads `limit` and `continue` from a query; a bad limit is a 400.
    pub(crate) fn from_query(query: &HashMap<String, String>) -> Result<Self> {
        let limit = match query.get("limit").map(String::as_str) {
            None | Some("") | Some("0") => None,
            Some(text) => Some(text.parse::<usize>().map_err(|_| {
                Error::BadRequest(format!(
                    "limit: invalid value {text:?}: must be a non-negative integer"
                ))
            })?),
        };
        let continue_token = query.get("continue").filter(|t| !t.is_empty()).cloned();
        Ok(PageRequest {
            limit,
            continue_token,
        })
    }
}

/// One page of a list.
#[derive(Debug)]
pub(crate) struct Page {
    /// The whole list the page is of.
    list: Arc<Vec<Value>>,
    /// The page's items in `list`.
    range: Range<usize>,
    /// The resourceVersion the whole list was read at.
    pub revision: i64,
    /// The token for the next page, when there is one.
    pub continue_token: Option<String>,
    /// How many items come after this page, when there are any.
    pub remaining: Option<usize>,
}

impl Page {
    /// The page's items.
    pub(crate) fn items(&self) -> &[Value] {
        &self.list[self.range.clone()]
    }

    /// The page's list metadata: resourceVersion, and `continue` and
    /// `remainingItemCount` when more follows.
    pub(crate) fn list_meta(&self) -> ListMeta {
        ListMeta {
            continue_token: self.continue_token.clone(),
            remaining_item_count: self.remaining,
            resource_version: Some(self.revision.to_string()),
        }
    }
}

/// What a continue token says (base64 of this as JSON).
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Token {
    /// The token format.
    v: String,
    /// The resourceVersion of the list.
    rv: i64,
    /// The snapshot.
    id: u64,
    /// Where the next page starts in it.
    start: usize,
}

const TOKEN_VERSION: &str = "c4m.io/v1";

impl Token {
    fn encode(&self) -> String {
        TOKEN_BASE64.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(text: &str) -> Result<Token> {
        let invalid = || {
            Error::BadRequest(format!(
                "continue: invalid value {text:?}: not a continue token this server gave (list again without continue)"
            ))
        };
        let bytes = TOKEN_BASE64.decode(text).map_err(|_| invalid())?;
        let token: Token = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if token.v != TOKEN_VERSION {
            return Err(invalid());
        }
        Ok(token)
    }
}

/// One list, kept for its next pages.
struct Snapshot {
    id: u64,
    /// The list it is: kind, namespace and selectors.
    scope: String,
    revision: i64,
    items: Arc<Vec<Value>>,
    taken: Instant,
}

/// The lists being paged through.
pub(crate) struct Snapshots {
    kept: Mutex<VecDeque<Snapshot>>,
    next_id: AtomicU64,
    ttl: Duration,
    capacity: usize,
}

impl Default for Snapshots {
    fn default() -> Self {
        Snapshots::new(Duration::from_secs(5 * 60), 32)
    }
}

impl Snapshots {
    /// Keeps each list for `ttl`, and at most `capacity` lists.
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Snapshots {
            kept: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(1),
            ttl,
            capacity: capacity.max(1),
        }
    }

    /// The first page of `items` (the whole list `scope`, read at
    /// `revision`); the list is kept when there is more.
    pub(crate) fn first(
        &self,
        scope: &str,
        items: Vec<Value>,
        revision: i64,
        limit: Option<usize>,
    ) -> Page {
        let total = items.len();
        let items = Arc::new(items);
        let Some(limit) = limit.filter(|&l| l < total) else {
            return Page {
                list: items,
                range: 0..total,
                revision,
                continue_token: None,
                remaining: None,
            };
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        kept.retain(|s| now.duration_since(s.taken) < self.ttl);
        while kept.len() >= self.capacity {
            kept.pop_front();
        }
        kept.push_back(Snapshot {
            id,
            scope: scope.to_string(),
            revision,
            items: Arc::clone(&items),
            taken: now,
        });
        drop(kept);
        page_of(items, id, revision, 0, limit)
    }

    /// The page after `token` of the list `scope`.
    pub(crate) fn resume(&self, scope: &str, token: &str, limit: Option<usize>) -> Result<Page> {
        let token = Token::decode(token)?;
        let (items, revision) = {
            let kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
            let snapshot = kept
                .iter()
                .find(|s| s.id == token.id && now_within(s.taken, self.ttl))
                .ok_or_else(|| {
                    Error::Gone(format!(
                        "continue token expired: the list at resourceVersion {} is no longer kept (lists are kept {} s); list again without continue",
                        token.rv,
                        self.ttl.as_secs()
                    ))
                })?;
            if snapshot.scope != scope {
                return Err(Error::BadRequest(
                    "continue: the token is for another list (another kind, namespace or selector)"
                        .into(),
                ));
            }
            (Arc::clone(&snapshot.items), snapshot.revision)
        };
        Ok(page_of(
            items,
            token.id,
            revision,
            token.start,
            limit.unwrap_or(usize::MAX),
        ))
    }
}

/// The page of `list` (kept as snapshot `id`) from `start`, of at most
/// `limit` items, with the token of the next one when there is more.
fn page_of(list: Arc<Vec<Value>>, id: u64, revision: i64, start: usize, limit: usize) -> Page {
    let start = start.min(list.len());
    let end = start.saturating_add(limit).min(list.len());
    let more = end < list.len();
    Page {
        continue_token: more.then(|| {
            Token {
                v: TOKEN_VERSION.into(),
                rv: revision,
                id,
                start: end,
            }
            .encode()
        }),
        remaining: more.then(|| list.len() - end),
        list,
        range: start..end,
        revision,
    }
}

fn now_within(taken: Instant, ttl: Duration) -> bool {
    taken.elapsed() < ttl
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn items(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| json!({"metadata": {"name": format!("p{i:02}")}}))
            .collect()
    }

    fn names(page: &Page) -> Vec<String> {
        page.items()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn pages_walk_one_snapshot_to_its_end() {
        let snapshots = Snapshots::default();
        let first = snapshots.first("pods/default", items(7), 42, Some(3));
        assert_eq!(names(&first), ["p00", "p01", "p02"]);
        assert_eq!(first.remaining, Some(4));
        let second = snapshots
            .resume(
                "pods/default",
                first.continue_token.as_deref().unwrap(),
                Some(3),
            )
            .unwrap();
        assert_eq!(names(&second), ["p03", "p04", "p05"]);
        assert_eq!((second.revision, second.remaining), (42, Some(1)));
        let last = snapshots
            .resume(
                "pods/default",
                second.continue_token.as_deref().unwrap(),
                Some(3),
            )
            .unwrap();
        assert_eq!(names(&last), ["p06"]);
        assert_eq!(
            (last.continue_token.as_deref(), last.remaining),
            (None, None)
        );

        let meta = second.list_meta();
        assert_eq!(meta.remaining_item_count, Some(1));
        assert_eq!(meta.resource_version.as_deref(), Some("42"));
        assert_eq!(meta.continue_token, second.continue_token);
        let meta = last.list_meta();
        assert_eq!(
            (meta.continue_token, meta.remaining_item_count),
            (None, None)
        );
    }

    #[test]
    fn no_limit_or_a_short_list_is_one_page() {
        let snapshots = Snapshots::default();
        let all = snapshots.first("pods/", items(3), 1, None);
        assert_eq!((all.items().len(), all.continue_token), (3, None));
        let short = snapshots.first("pods/", items(3), 1, Some(3));
        assert_eq!((short.items().len(), short.remaining), (3, None));
    }

    #[test]
    fn expired_and_foreign_tokens_are_refused_clearly() {
        let snapshots = Snapshots::new(Duration::ZERO, 4);
        let first = snapshots.first("pods/", items(5), 9, Some(2));
        let error = snapshots
            .resume("pods/", first.continue_token.as_deref().unwrap(), Some(2))
            .unwrap_err();
        assert_eq!(error.http_status().0, 410);
        assert!(
            error.to_string().contains("continue token expired"),
            "{error}"
        );

        let snapshots = Snapshots::new(Duration::from_secs(60), 1);
        let first = snapshots.first("pods/", items(5), 9, Some(2));
        let token = first.continue_token.unwrap();
        let wrong = snapshots.resume("configmaps/", &token, None).unwrap_err();
        assert_eq!(wrong.http_status().0, 400);
        // A second list evicts the first (capacity 1).
        snapshots.first("pods/", items(5), 10, Some(2));
        assert_eq!(
            snapshots
                .resume("pods/", &token, None)
                .unwrap_err()
                .http_status()
                .0,
            410
        );
        let garbage = snapshots.resume("pods/", "not-a-token", None).unwrap_err();
        assert_eq!(garbage.http_status().0, 400);
        assert!(garbage.to_string().contains("continue"), "{garbage}");
    }

    #[test]
    fn limits_are_read_from_the_query() {
        let query = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(
            PageRequest::from_query(&query(&[("limit", "500"), ("continue", "abc")])).unwrap(),
            PageRequest {
                limit: Some(500),
                continue_token: Some("abc".into())
            }
        );
        assert_eq!(PageRequest::from_query(&query(&[])).unwrap().limit, None);
        let error = PageRequest::from_query(&query(&[("limit", "-1")])).unwrap_err();
        assert_eq!(error.http_status().0, 400);
    }
}
