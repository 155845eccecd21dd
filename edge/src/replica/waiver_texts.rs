//! The replica of the chain's waiver texts: every version HQ published, the newest of which
//! is shown before a waiver is signed and recorded on it.

use aero_shared::wire::WaiverTextRecord;
use rusqlite::{Connection, OptionalExtension, params};

/// Writes a waiver text pulled from central. Central is the authority on which text holds a
/// version: a text the replica holds under the same version but another id (published on a
/// central since restored from a backup that predates it) gives way.
pub fn upsert(conn: &Connection, text: &WaiverTextRecord) -> anyhow::Result<()> {
    conn.prepare_cached("DELETE FROM waiver_texts WHERE version = ?1 AND id <> ?2")?
        .execute(params![text.version, text.id])?;
    conn.prepare_cached(
        "INSERT INTO waiver_texts (id, version, data) VALUES (?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version, data = excluded.data
         WHERE waiver_texts.data IS NOT excluded.data",
    )?
    .execute(params![text.id, text.version, serde_json::to_string(text)?])?;
    Ok(())
}

/// The newest version the venue holds, `None` before the first text reached it.
pub fn current_version(conn: &Connection) -> anyhow::Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT MAX(version) FROM waiver_texts")?
        .query_row([], |r| r.get(0))?)
}

/// The newest text the venue holds, `None` before the first reached it.
pub fn current(conn: &Connection) -> anyhow::Result<Option<WaiverTextRecord>> {
    let data: Option<String> = conn
        .prepare_cached("SELECT data FROM waiver_texts ORDER BY version DESC LIMIT 1")?
        .query_row([], |r| r.get(0))
        .optional()?;
    data.map(|d| Ok(serde_json::from_str(&d)?)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::Replica;
    use chrono::Utc;
    use uuid::Uuid;

    fn text(version: i64, title: &str) -> WaiverTextRecord {
        WaiverTextRecord {
            id: Uuid::now_v7(),
            version,
            title: title.into(),
            body: "I accept the risks of jumping.".into(),
            published_at: Utc::now(),
            published_by: "owner".into(),
        }
    }

    #[test]
    fn the_newest_version_is_current_and_central_decides_who_holds_a_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_replica, conn) = Replica::open(dir.path(), Uuid::now_v7(), 1).expect("open");
        assert_eq!(current(&conn).expect("none"), None);
        assert_eq!(current_version(&conn).expect("none"), None);
        let (first, second) = (text(1, "First"), text(2, "Second"));
        upsert(&conn, &second).expect("second");
        upsert(&conn, &first).expect("first, late");
        assert_eq!(current(&conn).expect("current"), Some(second.clone()));
        assert_eq!(current_version(&conn).expect("version"), Some(2));
        // A restored central published another text as version 2.
        let again = text(2, "Second, again");
        upsert(&conn, &again).expect("replacement");
        assert_eq!(current(&conn).expect("current"), Some(again));
        let held: i64 = conn
            .query_row("SELECT COUNT(*) FROM waiver_texts", [], |r| r.get(0))
            .expect("count");
        assert_eq!(held, 2);
    }
}
