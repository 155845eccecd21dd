//! SQLite's plan for a statement, as `EXPLAIN QUERY PLAN` prints it: what tests read to prove
//! that a query searches an index rather than reading a whole table or sorting it first.

use rusqlite::Connection;
use rusqlite::types::Null;

/// The lines of the plan for `sql`, in order, joined with `"; "`. Its parameters are bound to
/// NULL: the plan is the one SQLite makes before it sees any value.
pub fn query_plan(conn: &Connection, sql: &str) -> rusqlite::Result<String> {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
    let nulls = std::iter::repeat_n(Null, stmt.parameter_count());
    let lines = stmt
        .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(lines.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_names_the_index_a_bound_query_searches() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (a INTEGER, b TEXT); CREATE INDEX t_a ON t (a);")
            .expect("schema");
        assert_eq!(
            query_plan(&conn, "SELECT b FROM t WHERE a = ?1").expect("plan"),
            "SEARCH t USING INDEX t_a (a=?)"
        );
        assert_eq!(
            query_plan(&conn, "SELECT a FROM t WHERE b = ?1 ORDER BY b").expect("plan"),
            "SCAN t"
        );
    }
}
