//! The T-SQL text of a keyset page: `TOP (@P1)`, a list's filter, the rows after the cursor and
//! its order. The id that breaks ties compares as text (`CONVERT(CHAR(36), ...)` on both sides),
//! the order the SQLite store gives, since `UNIQUEIDENTIFIER` sorts by its own byte groups.
//! Parameters are numbered: the limit first, then the filter's, then the cursor's values, one
//! per sort column.

use crate::store::listing::after_cursor;

/// `SELECT TOP (@P1) {columns} FROM {from}` with `filter` (using `@P2..`), ordered by `sort`
/// (the last column an id) and, when `after` is set, starting after the cursor.
pub(super) fn keyset_sql(
    columns: &str,
    from: &str,
    filter: Option<&str>,
    filter_params: usize,
    sort: &[&str],
    descending: bool,
    after: bool,
) -> String {
    let first_value = filter_params + 2;
    let last = sort.len().saturating_sub(1);
    let ordered: Vec<(String, String)> = sort
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let value = format!("@P{}", first_value + i);
            if i == last {
                (
                    format!("CONVERT(CHAR(36), {column})"),
                    format!("CONVERT(CHAR(36), {value})"),
                )
            } else {
                ((*column).to_string(), value)
            }
        })
        .collect();
    let mut conditions: Vec<String> = filter.map(|f| format!("({f})")).into_iter().collect();
    if after {
        let pairs: Vec<(&str, &str)> = ordered
            .iter()
            .map(|(c, v)| (c.as_str(), v.as_str()))
            .collect();
        conditions.push(after_cursor(&pairs, descending));
    }
    let filtered = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    let direction = if descending { " DESC" } else { "" };
    let order = ordered
        .iter()
        .map(|(column, _)| format!("{column}{direction}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("SELECT TOP (@P1) {columns} FROM {from}{filtered} ORDER BY {order}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_as_text_after_the_filter_and_the_limit() {
        assert_eq!(
            keyset_sql(
                "id, name",
                "plugs",
                Some("site_id = @P2"),
                1,
                &["name", "id"],
                false,
                true
            ),
            "SELECT TOP (@P1) id, name FROM plugs WHERE (site_id = @P2) AND (name > @P3 OR \
             (name = @P3 AND CONVERT(CHAR(36), id) > CONVERT(CHAR(36), @P4))) \
             ORDER BY name, CONVERT(CHAR(36), id)"
        );
        assert_eq!(
            keyset_sql(
                "data",
                "plug_overrides",
                None,
                0,
                &["set_at", "id"],
                true,
                false
            ),
            "SELECT TOP (@P1) data FROM plug_overrides ORDER BY set_at DESC, CONVERT(CHAR(36), id) DESC"
        );
    }
}
