//! Errors: what an SQLite error means to the store (a busy or locked database is transient,
//! a unique or primary key violation is a conflict naming the duplicate columns, anything else
//! is other), and the `From` conversion that lets `?` apply it to any rusqlite result.

use crate::store::StoreError;

pub(super) fn map_err(err: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    if let rusqlite::Error::SqliteFailure(failure, message) = &err {
        match failure.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
                return StoreError::Transient(err.to_string());
            }
            ErrorCode::ConstraintViolation
                if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                    || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
            {
                // "UNIQUE constraint failed: users.username" -> "username"
                let what = message
                    .as_deref()
                    .and_then(|m| m.rsplit(": ").next())
                    .map(|cols| {
                        cols.split(", ")
                            .map(|c| c.rsplit('.').next().unwrap_or(c))
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_else(|| "record".to_string());
                return StoreError::Conflict(format!("{what} already exists"));
            }
            _ => {}
        }
    }
    StoreError::Other(err.into())
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        map_err(err)
    }
}
