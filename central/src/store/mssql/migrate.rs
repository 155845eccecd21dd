//! Schema migrations: the embedded refinery migrations, run at start-up under an application
//! lock, the store's identity they create, and the tests that keep their T-SQL portable and
//! their constraints known.

use super::codec::{int, uuid};
use super::conn::Conn;
use anyhow::Context as _;
use tiberius::Query;
use uuid::Uuid;

mod embedded {
    refinery::embed_migrations!("migrations/mssql");
}

/// Runs the embedded migrations. Central instances may start together, so the run is
/// serialised across them by a session-owned application lock (released when this
/// connection closes, whatever happens). The lock wait (5 min) stays within the migration
/// connection's response bound, so a wait ends in a clear error rather than a dead connection.
pub(super) async fn migrate(conn: &mut Conn) -> anyhow::Result<()> {
    let row = conn
        .row(Query::new(
            "DECLARE @result INT; \
             EXEC @result = sp_getapplock @Resource = N'aero_schema_migrations', @LockMode = N'Exclusive', \
                  @LockOwner = N'Session', @LockTimeout = 300000; \
             SELECT @result;",
        ))
        .await?
        .context("sp_getapplock returned no result")?;
    let code = int(&row, 0)?;
    anyhow::ensure!(
        code >= 0,
        "could not take the migration lock (sp_getapplock returned {code})"
    );

    let report = embedded::migrations::runner()
        .run_async(&mut conn.client)
        .await;
    // Best effort: closing the connection releases the lock anyway.
    let _ = conn
        .batch("EXEC sp_releaseapplock @Resource = N'aero_schema_migrations', @LockOwner = N'Session';")
        .await;
    let report = report?;
    for migration in report.applied_migrations() {
        tracing::info!(%migration, "applied SQL Server migration");
    }
    Ok(())
}

/// The id the V2 migration gave this database when it was created (a restored backup keeps
/// it). Read once at start-up, after the migrations.
pub(super) async fn read_store_id(conn: &mut Conn) -> anyhow::Result<Uuid> {
    let row = conn
        .row(Query::new("SELECT store_id FROM store_meta WHERE id = 1"))
        .await?
        .context("store_meta holds no row")?;
    Ok(uuid(&row, 0)?)
}

#[cfg(test)]
mod tests {
    use super::embedded;
    use crate::store::mssql::errors::DUPLICATES;

    /// The T-SQL of every embedded migration, with `--` comments removed (none of the checked
    /// words may hide in a string literal: the migrations have none).
    fn migration_sql() -> Vec<(String, String)> {
        let runner = embedded::migrations::runner();
        let migrations = runner.get_migrations();
        assert!(
            !migrations.is_empty(),
            "no SQL Server migrations were embedded"
        );
        migrations
            .iter()
            .map(|m| {
                let sql = m.sql().expect("embedded migrations carry their SQL");
                let code = sql
                    .lines()
                    .map(|line| line.split("--").next().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("\n");
                (m.to_string(), code)
            })
            .collect()
    }

    fn words(sql: &str) -> Vec<String> {
        sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '@'))
            .filter(|w| !w.is_empty())
            .map(str::to_ascii_uppercase)
            .collect()
    }

    /// What in `sql` (comments already removed) SQL Server 2019, Azure SQL and Babelfish do not
    /// all run, or refinery cannot send.
    fn portability_problems(sql: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let all = words(sql);
        for banned in ["MERGE", "CHANGE_TRACKING", "MIN_ACTIVE_ROWVERSION"] {
            if all.iter().any(|w| w == banned) {
                problems.push(banned.to_string());
            }
        }
        if all.windows(3).any(|w| w == ["CREATE", "OR", "ALTER"]) {
            problems.push("CREATE OR ALTER".into());
        }
        // A batch separator is a line holding GO (optionally with a count); refinery would send
        // it to the server, which does not know it.
        for line in sql.lines() {
            let line = words(line);
            if line.first().is_some_and(|w| w == "GO")
                && line
                    .iter()
                    .skip(1)
                    .all(|w| w.chars().all(|c| c.is_ascii_digit()))
            {
                problems.push("GO".into());
            }
        }
        // Filtered indexes: CREATE [UNIQUE] [NONCLUSTERED] INDEX ... WHERE.
        for statement in sql.split(';') {
            let statement = words(statement);
            if statement.first().is_some_and(|w| w == "CREATE")
                && statement.iter().take(4).any(|w| w == "INDEX")
                && statement.iter().any(|w| w == "WHERE")
            {
                problems.push("filtered index".into());
            }
        }
        problems
    }

    #[test]
    fn the_portability_check_finds_what_it_looks_for() {
        for (sql, problem) in [
            (
                "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE;",
                "MERGE",
            ),
            (
                "create or alter procedure p as select 1;",
                "CREATE OR ALTER",
            ),
            (
                "ALTER DATABASE d SET CHANGE_TRACKING = ON;",
                "CHANGE_TRACKING",
            ),
            ("SELECT MIN_ACTIVE_ROWVERSION();", "MIN_ACTIVE_ROWVERSION"),
            (
                "CREATE TABLE a (id INT);\ngo\nCREATE TABLE b (id INT);",
                "GO",
            ),
            ("CREATE TABLE a (id INT);\n  GO 2\n", "GO"),
            (
                "CREATE UNIQUE INDEX ix ON t (a) WHERE a IS NOT NULL;",
                "filtered index",
            ),
        ] {
            assert_eq!(
                portability_problems(sql),
                vec![problem.to_string()],
                "{sql}"
            );
        }
        assert!(portability_problems("CREATE TABLE going (gone INT, go_to INT);").is_empty());
    }

    #[test]
    fn migrations_use_only_portable_t_sql() {
        for (name, sql) in migration_sql() {
            assert_eq!(portability_problems(&sql), Vec::<String>::new(), "{name}");
        }
    }

    #[test]
    fn every_named_constraint_maps_to_a_conflict_message() {
        let sql: String = migration_sql()
            .into_iter()
            .map(|(_, sql)| sql.to_ascii_lowercase())
            .collect();
        let declared: Vec<String> = words(&sql)
            .windows(2)
            .filter(|w| {
                w[0] == "CONSTRAINT" && (w[1].starts_with("PK_") || w[1].starts_with("UQ_"))
            })
            .map(|w| w[1].to_ascii_lowercase())
            .collect();
        assert!(!declared.is_empty());
        for name in &declared {
            assert!(
                DUPLICATES.iter().any(|(known, _)| known == name),
                "{name} has no conflict message"
            );
        }
        for (name, _) in DUPLICATES {
            assert!(
                declared.iter().any(|d| d == name),
                "{name} is not declared by any migration"
            );
            let others = DUPLICATES.iter().filter(|(other, _)| other != name);
            for (other, _) in others {
                assert!(!other.contains(name), "{name} is a substring of {other}");
            }
        }
    }
}
