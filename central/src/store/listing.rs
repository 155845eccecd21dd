//! Keyset pages of HQ's lists, common to both backends: the sort keys a page resumes after,
//! the SQL predicate "sorts after the cursor", and a sweep over every page for the service's
//! own readers (health gauges, ops commands) that need a whole list.

use super::StoreResult;
use std::future::Future;
use uuid::Uuid;

pub use aero_shared::page::{NameKey, TimeKey};
/// A customer's place in a search ordered by last name, first name, id.
pub type CustomerKey = (String, String, Uuid);

/// Rows a sweep reads per page.
const SWEEP_PAGE: u32 = 500;

/// The predicate selecting the rows that sort after a cursor, for a list ordered by `columns`
/// (each paired with the SQL expression holding the cursor's value for it), ascending or
/// descending. It only compares, so both dialects take the same text.
pub(crate) fn after_cursor(columns: &[(&str, &str)], descending: bool) -> String {
    let cmp = if descending { "<" } else { ">" };
    columns
        .iter()
        .rev()
        .fold(String::new(), |inner, (column, value)| {
            if inner.is_empty() {
                format!("{column} {cmp} {value}")
            } else {
                format!("({column} {cmp} {value} OR ({column} = {value} AND {inner}))")
            }
        })
}

/// Every row of a keyset list, read page by page: `page(after, limit)` reads one page and
/// `key` gives a row's place.
pub async fn every<T, K, F, Fut>(mut page: F, key: impl Fn(&T) -> K) -> StoreResult<Vec<T>>
where
    F: FnMut(Option<K>, u32) -> Fut,
    Fut: Future<Output = StoreResult<Vec<T>>>,
{
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let rows = page(after.take(), SWEEP_PAGE).await?;
        let full = rows.len() == SWEEP_PAGE as usize;
        after = rows.last().map(&key);
        all.extend(rows);
        if !full {
            return Ok(all);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_predicate_breaks_ties_on_each_later_column() {
        assert_eq!(after_cursor(&[("seq", "?2")], true), "seq < ?2");
        assert_eq!(
            after_cursor(&[("a", "?1"), ("b", "?2"), ("id", "?3")], false),
            "(a > ?1 OR (a = ?1 AND (b > ?2 OR (b = ?2 AND id > ?3))))"
        );
    }

    #[tokio::test]
    async fn a_sweep_reads_every_page_once() {
        let rows: Vec<u32> = (0..1234).collect();
        let pages = std::sync::atomic::AtomicUsize::new(0);
        let all = every(
            |after: Option<u32>, limit| {
                pages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let page = rows
                    .iter()
                    .copied()
                    .filter(|r| after.is_none_or(|a| *r > a))
                    .take(limit as usize)
                    .collect();
                async move { Ok(page) }
            },
            |r| *r,
        )
        .await
        .unwrap();
        assert_eq!(all, rows);
        assert_eq!(pages.into_inner(), 3);
    }
}
