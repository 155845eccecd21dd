//! The SQLite text of a keyset page: a list's filter, the rows after the cursor, its order and
//! `LIMIT`. Parameters are numbered: the filter's first, then the limit, then the cursor's
//! values, one per sort column. `keyset_page` runs one for the lists ordered by a text (or time)
//! column and an id.

use crate::store::StoreResult;
use crate::store::listing::after_cursor;
use rusqlite::{Connection, Row, ToSql, params_from_iter};
use uuid::Uuid;

/// `select` with `filter` (using `?1..=?{filter_params}`), ordered by `sort` (the last column
/// unique), limited by the next parameter and, when `after` is set, starting after the cursor
/// held by the parameters that follow.
pub(super) fn keyset_sql(
    select: &str,
    filter: Option<&str>,
    filter_params: usize,
    sort: &[&str],
    descending: bool,
    after: bool,
) -> String {
    let limit = filter_params + 1;
    let mut conditions: Vec<String> = filter.map(|f| format!("({f})")).into_iter().collect();
    if after {
        let values: Vec<String> = (0..sort.len())
            .map(|i| format!("?{}", limit + 1 + i))
            .collect();
        let pairs: Vec<(&str, &str)> = sort
            .iter()
            .copied()
            .zip(values.iter().map(String::as_str))
            .collect();
        conditions.push(after_cursor(&pairs, descending));
    }
    let filtered = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let direction = if descending { " DESC" } else { "" };
    let order = sort
        .iter()
        .map(|column| format!("{column}{direction}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{select}{filtered} ORDER BY {order} LIMIT ?{limit}")
}

/// Binds a cursor of a text (or time, see [`super::codec::time_key`]) column and an id.
pub(super) fn push_name_key<'a>(
    values: &mut Vec<&'a dyn ToSql>,
    after: &'a Option<(String, Uuid)>,
) {
    if let Some((text, id)) = after {
        values.push(text);
        values.push(id);
    }
}

/// One page of `select`, in ascending keyset order by `sort` (a text or time column, then the
/// id): the rows matching `filter` (a condition on `?1`, bound to the id given with it) after
/// the cursor `after` (the column's text, see [`super::codec::time_key`], and the id), at most
/// `limit` of them, each read by `map_row`.
pub(super) fn keyset_page<T>(
    c: &Connection,
    select: &str,
    filter: Option<(&str, Uuid)>,
    sort: &[&str],
    after: Option<(String, Uuid)>,
    limit: u32,
    map_row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let sql = keyset_sql(
        select,
        filter.map(|(condition, _)| condition),
        usize::from(filter.is_some()),
        sort,
        false,
        after.is_some(),
    );
    let mut values: Vec<&dyn ToSql> = Vec::new();
    if let Some((_, id)) = &filter {
        values.push(id);
    }
    values.push(&limit);
    push_name_key(&mut values, &after);
    let mut stmt = c.prepare_cached(&sql)?;
    Ok(stmt
        .query_map(params_from_iter(values), map_row)?
        .collect::<rusqlite::Result<_>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_follows_the_filter_and_the_limit() {
        assert_eq!(
            keyset_sql(
                "SELECT id FROM plugs",
                Some("site_id = ?1"),
                1,
                &["name", "id"],
                false,
                true
            ),
            "SELECT id FROM plugs WHERE (site_id = ?1) AND (name > ?3 OR (name = ?3 AND id > ?4)) \
             ORDER BY name, id LIMIT ?2"
        );
        assert_eq!(
            keyset_sql(
                "SELECT id FROM sites",
                None,
                0,
                &["name", "id"],
                true,
                false
            ),
            "SELECT id FROM sites ORDER BY name DESC, id DESC LIMIT ?1"
        );
    }
}
