//! Page size and keyset cursors of every list both services answer: what `limit` may be, how an
//! `after` cursor is read, and how the cursor of the next page is made, decided once.
//!
//! A list reads one row more than the page (`Page::fetch`): if it comes back, another page
//! follows and the page's last key becomes `next_after`; otherwise `next_after` is null. The
//! cursor is the last row's sort key, JSON in unpadded base64url, so it survives a query string
//! and a client has no reason to build one itself.

use crate::ApiError;
use crate::problem::FieldError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// Rows a list answers when the caller names no `limit`.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most rows one page of a list holds.
pub const MAX_LIMIT: u32 = 500;

/// A row's place in a list ordered by a text column (name, SKU, username), then id.
pub type NameKey = (String, Uuid);
/// A row's place in a list ordered by a time, then id.
pub type TimeKey = (DateTime<Utc>, Uuid);

/// The paging parameters every list takes.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Rows in this page: 1 to 500, default 100. Outside that range the request is refused
    /// with a 422 naming `limit`.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// The `next_after` of the page before, to read the next one; omitted for the first page.
    pub after: Option<String>,
}

/// A checked page request: at most `limit` rows following the row whose sort key is `after`.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<K> {
    pub limit: u32,
    pub after: Option<K>,
}

/// One page of a list and the cursor of the next (none on the last page).
#[derive(Debug)]
pub struct Paged<T> {
    pub rows: Vec<T>,
    pub next_after: Option<String>,
}

/// `limit` checked against a list's own bounds: the default when absent, a field error naming
/// `limit` when it is 0 or above `max`.
pub fn limit(value: Option<i64>, default: u32, max: u32) -> Result<u32, FieldError> {
    match value {
        None => Ok(default),
        Some(n) if n >= 1 && n <= i64::from(max) => Ok(n as u32),
        Some(_) => Err(FieldError::new(
            "limit",
            format!("must be between 1 and {max}"),
        )),
    }
}

impl PageQuery {
    /// The page asked for, within [`DEFAULT_LIMIT`] and [`MAX_LIMIT`]; every bad parameter is
    /// named in one 422.
    pub fn page<K: DeserializeOwned>(&self) -> Result<Page<K>, ApiError> {
        let limit = limit(self.limit, DEFAULT_LIMIT, MAX_LIMIT);
        let after = match self.after.as_deref() {
            None => Ok(None),
            Some(text) => decode(text).map(Some).ok_or_else(|| {
                FieldError::new("after", "must be the next_after of an earlier page")
            }),
        };
        match (limit, after) {
            (Ok(limit), Ok(after)) => Ok(Page { limit, after }),
            (limit, after) => Err(ApiError::Validation(
                [limit.err(), after.err()].into_iter().flatten().collect(),
            )),
        }
    }
}

impl<K> Page<K> {
    /// The first page of `limit` rows.
    pub fn first(limit: u32) -> Self {
        Self { limit, after: None }
    }

    /// How many rows to read: one more than the page, to learn whether another follows.
    pub fn fetch(&self) -> u32 {
        self.limit.saturating_add(1)
    }

    /// Makes the page from the rows read (at most [`Page::fetch`], in the list's order).
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> K) -> Paged<T>
    where
        K: Serialize,
    {
        let more = rows.len() > self.limit as usize;
        rows.truncate(self.limit as usize);
        let next_after = if more {
            rows.last().map(|row| encode(&key(row)))
        } else {
            None
        };
        Paged { rows, next_after }
    }

    /// Pages a list held in full, sorted ascending by `key` (keys unique).
    pub fn slice<T>(&self, rows: impl IntoIterator<Item = T>, key: impl Fn(&T) -> K) -> Paged<T>
    where
        K: Serialize + Ord,
    {
        let rest = rows
            .into_iter()
            .filter(|row| self.after.as_ref().is_none_or(|after| key(row) > *after))
            .take(self.fetch() as usize)
            .collect();
        self.finish(rest, key)
    }
}

fn encode<K: Serialize>(key: &K) -> String {
    let json = serde_json::to_vec(key).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

fn decode<K: DeserializeOwned>(text: &str) -> Option<K> {
    let json = URL_SAFE_NO_PAD.decode(text).ok()?;
    serde_json::from_slice(&json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(limit: Option<i64>, after: Option<&str>) -> PageQuery {
        PageQuery {
            limit,
            after: after.map(str::to_string),
        }
    }

    fn fields(err: ApiError) -> Vec<String> {
        match err {
            ApiError::Validation(errors) => errors.into_iter().map(|e| e.field).collect(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn limit_defaults_and_refuses_zero_negative_and_above_the_maximum() {
        let page: Page<i64> = query(None, None).page().unwrap();
        assert_eq!(page, Page::first(DEFAULT_LIMIT));
        let page: Page<i64> = query(Some(500), None).page().unwrap();
        assert_eq!(page.limit, 500);
        for bad in [0, -1, 501, i64::MAX] {
            let err = query(Some(bad), None).page::<i64>().unwrap_err();
            assert_eq!(fields(err), ["limit"], "{bad}");
        }
    }

    #[test]
    fn a_cursor_round_trips_and_a_forged_one_is_named() {
        let key = ("Leeds".to_string(), Uuid::now_v7());
        let page = Page::<(String, Uuid)>::first(1);
        let paged = page.finish(vec![key.clone(), key.clone()], Clone::clone);
        let cursor = paged.next_after.expect("another page");
        let next: Page<(String, Uuid)> = query(None, Some(&cursor)).page().unwrap();
        assert_eq!(next.after, Some(key));
        for forged in ["not base64!", "bnVsbA", "e30"] {
            let err = query(Some(0), Some(forged))
                .page::<(String, Uuid)>()
                .unwrap_err();
            assert_eq!(fields(err), ["limit", "after"], "{forged}");
        }
    }

    #[test]
    fn slicing_visits_every_row_once_and_ends_with_no_cursor() {
        let rows: Vec<u32> = (0..7).collect();
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = Page {
                limit: 3,
                after: after.take(),
            };
            let paged = page.slice(rows.clone(), |r| *r);
            seen.extend(paged.rows);
            match paged.next_after {
                Some(cursor) => after = decode(&cursor),
                None => break,
            }
        }
        assert_eq!(seen, rows);
        let exact = Page::<u32>::first(7).slice(rows.clone(), |r| *r);
        assert_eq!((exact.rows.len(), exact.next_after), (7, None));
    }
}
