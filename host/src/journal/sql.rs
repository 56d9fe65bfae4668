//! One way to run the journal's SQL on either backend: SQLite (embedded, the default) and
//! PostgreSQL (several hosts sharing one database).
//!
//! The journal's statements are written once, in the SQL both understand: `?N`
//! placeholders (rewritten to `$N` for PostgreSQL when a statement is first prepared),
//! `INSERT ... ON CONFLICT DO NOTHING`, `RETURNING`, `CASE` rather than SQLite's scalar
//! `max` or PostgreSQL's `greatest`. Where the two differ, [`Db::dialect`] picks the text.
//! Parameters are [`Param`]s, encoded for the column type the server reports, so an
//! integer binds to PostgreSQL's `INTEGER` and `BIGINT` alike. A row is read through
//! [`Row::get`] without copying a column more than once.

use std::cell::RefCell;
use std::collections::HashMap;

use super::JournalError;
use crate::model::Timestamp;

/// Which SQL a backend speaks, for the few statements that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// A statement parameter, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// Anything that can be a [`Param`].
pub(crate) trait ToParam {
    fn param(&self) -> Param<'_>;
}

macro_rules! int_param {
    ($($t:ty),*) => {$(
        impl ToParam for $t {
            fn param(&self) -> Param<'_> {
                Param::Int(i64::from(*self))
            }
        }
    )*};
}
int_param!(i64, i32, u32, u16, u8);

/// Larger than any count or millisecond the journal keeps; beyond `i64::MAX` it is kept
/// as `i64::MAX` (reading it back gives that, not a wrapped negative number).
impl ToParam for u64 {
    fn param(&self) -> Param<'_> {
        Param::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}
impl ToParam for usize {
    fn param(&self) -> Param<'_> {
        Param::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToParam for bool {
    fn param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}
impl ToParam for str {
    fn param(&self) -> Param<'_> {
        Param::Text(self)
    }
}
impl ToParam for String {
    fn param(&self) -> Param<'_> {
        Param::Text(self)
    }
}
impl ToParam for [u8] {
    fn param(&self) -> Param<'_> {
        Param::Blob(self)
    }
}
impl ToParam for Vec<u8> {
    fn param(&self) -> Param<'_> {
        Param::Blob(self)
    }
}
impl ToParam for Timestamp {
    fn param(&self) -> Param<'_> {
        Param::Int(i64::try_from(self.0).unwrap_or(i64::MAX))
    }
}
impl<T: ToParam + ?Sized> ToParam for &T {
    fn param(&self) -> Param<'_> {
        (**self).param()
    }
}
impl<T: ToParam> ToParam for Option<T> {
    fn param(&self) -> Param<'_> {
        match self {
            Some(v) => v.param(),
            None => Param::Null,
        }
    }
}

/// The parameters of one statement: `params![a, b]`.
macro_rules! params {
    ($($e:expr),* $(,)?) => {
        &[$($crate::journal::sql::ToParam::param(&$e)),*][..]
    };
}
pub(crate) use params;

/// A value read from a column, borrowed from the row.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ValueRef<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// Anything a column can be read as.
pub(crate) trait FromValue: Sized {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String>;
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
                match v {
                    ValueRef::Int(i) => <$t>::try_from(i).map_err(|e| format!("{i}: {e}")),
                    other => Err(format!("expected an integer, found {other:?}")),
                }
            }
        }
    )*};
}
int_value!(i64, i32, u32, u16, u64, usize);

impl FromValue for bool {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        i64::from_value(v).map(|i| i != 0)
    }
}
impl FromValue for String {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Text(s) => Ok(s.to_owned()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}
impl FromValue for Vec<u8> {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Blob(b) => Ok(b.to_vec()),
            ValueRef::Text(s) => Ok(s.as_bytes().to_vec()),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}
impl FromValue for Timestamp {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        u64::from_value(v).map(Timestamp)
    }
}
impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One result row of either backend.
pub(crate) enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Postgres(&'r postgres::Row),
}

impl Row<'_> {
    /// Column `i` (from 0) as a `T`.
    pub(crate) fn get<T: FromValue>(&self, i: usize) -> Result<T, JournalError> {
        let value = match self {
            Row::Sqlite(row) => match row.get_ref(i)? {
                rusqlite::types::ValueRef::Null => ValueRef::Null,
                rusqlite::types::ValueRef::Integer(v) => ValueRef::Int(v),
                rusqlite::types::ValueRef::Real(v) => ValueRef::Int(v as i64),
                rusqlite::types::ValueRef::Text(t) => ValueRef::Text(
                    std::str::from_utf8(t).map_err(|e| JournalError::Corrupt(e.to_string()))?,
                ),
                rusqlite::types::ValueRef::Blob(b) => ValueRef::Blob(b),
            },
            Row::Postgres(row) => pg_value(row, i)?,
        };
        T::from_value(value).map_err(|e| JournalError::Corrupt(format!("column {i}: {e}")))
    }
}

fn pg_value<'r>(row: &'r postgres::Row, i: usize) -> Result<ValueRef<'r>, JournalError> {
    use postgres::types::Type;
    let column = row
        .columns()
        .get(i)
        .ok_or_else(|| JournalError::Corrupt(format!("no column {i}")))?;
    let ty = column.type_().clone();
    let value = if ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(i)?.map(ValueRef::Int)
    } else if ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(i)?
            .map(|v| ValueRef::Int(v.into()))
    } else if ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(i)?
            .map(|v| ValueRef::Int(v.into()))
    } else if ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(i)?
            .map(|v| ValueRef::Int(v.into()))
    } else if ty == Type::BYTEA {
        row.try_get::<_, Option<&[u8]>>(i)?.map(ValueRef::Blob)
    } else if ty == Type::NUMERIC {
        return Err(JournalError::Corrupt(format!(
            "column {i} is NUMERIC; the query must cast it to BIGINT"
        )));
    } else {
        row.try_get::<_, Option<&str>>(i)?.map(ValueRef::Text)
    };
    Ok(value.unwrap_or(ValueRef::Null))
}

impl From<postgres::Error> for JournalError {
    fn from(e: postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => JournalError::Storage(format!(
                "{}: {}{}",
                db.code().code(),
                db.message(),
                db.detail().map(|d| format!(" ({d})")).unwrap_or_default()
            )),
            None => JournalError::Storage(e.to_string()),
        }
    }
}

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value, ValueRef as R};
        Ok(match *self {
            Param::Null => ToSqlOutput::Owned(Value::Null),
            Param::Int(i) => ToSqlOutput::Owned(Value::Integer(i)),
            Param::Text(s) => ToSqlOutput::Borrowed(R::Text(s.as_bytes())),
            Param::Blob(b) => ToSqlOutput::Borrowed(R::Blob(b)),
        })
    }
}

impl postgres::types::ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::Type;
        let text = *ty == Type::TEXT || *ty == Type::VARCHAR || *ty == Type::NAME;
        match *self {
            Param::Null => Ok(postgres::types::IsNull::Yes),
            Param::Int(i) if *ty == Type::INT8 => i.to_sql(ty, out),
            Param::Int(i) if *ty == Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
            Param::Int(i) if *ty == Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
            Param::Int(i) if *ty == Type::BOOL => (i != 0).to_sql(ty, out),
            Param::Int(i) if text => i.to_string().as_str().to_sql(ty, out),
            Param::Text(s) if text => s.to_sql(ty, out),
            Param::Blob(b) if *ty == Type::BYTEA => b.to_sql(ty, out),
            // Anything else is a statement written against a column of another type: an
            // error, not bytes the server would read as something else.
            other => {
                let kind = match other {
                    Param::Null => "null",
                    Param::Int(_) => "an integer",
                    Param::Text(_) => "a text",
                    Param::Blob(_) => "a byte string",
                };
                Err(format!("{kind} cannot be bound to a {ty} parameter").into())
            }
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A PostgreSQL connection with its prepared statements, by the journal's SQL text.
pub(crate) struct PgConn {
    pub(crate) client: postgres::Client,
    statements: HashMap<String, postgres::Statement>,
    /// Rows this transaction has locked (and leases it has checked) so far, by key: each
    /// is taken once per batch, not once per write.
    taken: std::collections::HashSet<String>,
}

impl PgConn {
    /// Connects as `host`: the server knows the connection by that name
    /// (`application_name`), and the rows it writes say so.
    pub(crate) fn connect_as(url: &str, host: &str) -> Result<PgConn, JournalError> {
        let fail = |e: postgres::Error| {
            JournalError::Storage(format!(
                "cannot connect to PostgreSQL at {}: {e}",
                redact(url)
            ))
        };
        let mut config: postgres::Config = url.parse().map_err(fail)?;
        config.application_name(host);
        if config.get_connect_timeout().is_none() {
            // A database that does not answer is a failed read or write, not a hang.
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        let client = config.connect(postgres::NoTls).map_err(fail)?;
        Ok(PgConn {
            client,
            statements: HashMap::new(),
            taken: std::collections::HashSet::new(),
        })
    }

    fn statement(&mut self, sql: &str) -> Result<postgres::Statement, JournalError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(&to_postgres(sql))?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

/// A connection string without its password, for messages: the `user:password@` of a
/// URL, and any `password=` (a URL's query or a key=value string).
pub fn redact(url: &str) -> String {
    let mut out = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    };
    let mut from = 0;
    while let Some(found) = out[from..].find("password=") {
        let value = from + found + "password=".len();
        let end = out[value..]
            .find(['&', ' '])
            .map_or(out.len(), |n| value + n);
        out.replace_range(value..end, "***");
        from = value + 3;
    }
    out
}

/// `?N` placeholders as PostgreSQL's `$N`, outside string literals; a bare `?` is one more
/// than the largest index so far, as SQLite numbers it.
fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut in_string = false;
    let mut largest = 0u32;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_string = !in_string;
                out.push(c);
            }
            '?' if !in_string => {
                out.push('$');
                let mut digits = String::new();
                while let Some(d) = chars.next_if(char::is_ascii_digit) {
                    digits.push(d);
                }
                let index = match digits.parse::<u32>() {
                    Ok(index) => index,
                    Err(_) => largest + 1,
                };
                largest = largest.max(index);
                out.push_str(&index.to_string());
            }
            _ => out.push(c),
        }
    }
    out
}

/// A connection of either backend, as the journal's statements see it.
pub(crate) enum Db<'c> {
    Sqlite(&'c rusqlite::Connection),
    Postgres(RefCell<&'c mut PgConn>),
}

impl Db<'_> {
    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Whether `key` (a row lock, a lease check) is new to this transaction, noting it:
    /// what a transaction locked stays locked until it ends. Always true on SQLite, whose
    /// one writer needs no row locks (the statements that take them are PostgreSQL's).
    pub(crate) fn first_in_transaction(&self, key: &str) -> bool {
        match self {
            Db::Sqlite(_) => true,
            Db::Postgres(conn) => conn.borrow_mut().taken.insert(key.to_owned()),
        }
    }

    /// Forgets what [`Db::first_in_transaction`] noted: a new transaction, or a savepoint
    /// rolled back (which releases the locks taken since).
    pub(crate) fn forget_taken(&self) {
        if let Db::Postgres(conn) = self {
            conn.borrow_mut().taken.clear();
        }
    }

    /// Runs a statement; returns the rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, JournalError> {
        match self {
            Db::Sqlite(conn) => {
                let n = conn
                    .prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(params.iter()))?;
                Ok(n as u64)
            }
            Db::Postgres(conn) => {
                let mut conn = conn.borrow_mut();
                let statement = conn.statement(sql)?;
                Ok(conn.client.execute(&statement, &pg_params(params))?)
            }
        }
    }

    /// Runs statements with no parameters and no rows (DDL, transaction control).
    pub(crate) fn batch(&self, sql: &str) -> Result<(), JournalError> {
        match self {
            Db::Sqlite(conn) => Ok(conn.execute_batch(sql)?),
            Db::Postgres(conn) => Ok(conn.borrow_mut().client.batch_execute(sql)?),
        }
    }

    /// Runs one statement with no parameters and no rows, kept prepared on SQLite (the
    /// writer's savepoints and transaction control, several per batch).
    pub(crate) fn control(&self, sql: &str) -> Result<(), JournalError> {
        match self {
            Db::Sqlite(conn) => {
                conn.prepare_cached(sql)?.raw_execute()?;
                Ok(())
            }
            Db::Postgres(conn) => Ok(conn.borrow_mut().client.batch_execute(sql)?),
        }
    }

    /// Calls `each` with every row until it returns `false`.
    pub(crate) fn for_each(
        &self,
        sql: &str,
        params: &[Param<'_>],
        mut each: impl FnMut(&Row<'_>) -> Result<bool, JournalError>,
    ) -> Result<(), JournalError> {
        match self {
            Db::Sqlite(conn) => {
                let mut statement = conn.prepare_cached(sql)?;
                let mut rows = statement.query(rusqlite::params_from_iter(params.iter()))?;
                while let Some(row) = rows.next()? {
                    if !each(&Row::Sqlite(row))? {
                        break;
                    }
                }
                Ok(())
            }
            Db::Postgres(conn) => {
                use postgres::fallible_iterator::FallibleIterator as _;
                let mut conn = conn.borrow_mut();
                let statement = conn.statement(sql)?;
                let mut rows = conn
                    .client
                    .query_raw(&statement, pg_params(params).iter().copied())?;
                while let Some(row) = rows.next()? {
                    if !each(&Row::Postgres(&row))? {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    /// Every row, each read by `f`.
    pub(crate) fn query_map<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        mut f: impl FnMut(&Row<'_>) -> Result<T, JournalError>,
    ) -> Result<Vec<T>, JournalError> {
        let mut out = Vec::new();
        self.for_each(sql, params, |row| {
            out.push(f(row)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// The first row, if any, read by `f`.
    pub(crate) fn query_opt<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        f: impl FnOnce(&Row<'_>) -> Result<T, JournalError>,
    ) -> Result<Option<T>, JournalError> {
        let mut f = Some(f);
        let mut out = None;
        self.for_each(sql, params, |row| {
            if let Some(f) = f.take() {
                out = Some(f(row)?);
            }
            Ok(false)
        })?;
        Ok(out)
    }

    /// The first row, read by `f`; a statement that returns none is an error.
    pub(crate) fn query_one<T>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        f: impl FnOnce(&Row<'_>) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        self.query_opt(sql, params, f)?
            .ok_or_else(|| JournalError::Storage(format!("no row from: {sql}")))
    }
}

fn pg_params<'p>(params: &'p [Param<'p>]) -> Vec<&'p (dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_postgres_ones_outside_strings() {
        assert_eq!(
            to_postgres("SELECT '?1' WHERE a = ?1 AND b = ?12 AND c = ?"),
            "SELECT '?1' WHERE a = $1 AND b = $12 AND c = $13"
        );
        assert_eq!(to_postgres("a = ? AND b = ?"), "a = $1 AND b = $2");
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://me:secret@db:5432/x"),
            "postgres://me:***@db:5432/x"
        );
        assert_eq!(redact("postgres://db/x"), "postgres://db/x");
        assert_eq!(
            redact("postgres://db/x?user=me&password=secret&sslmode=disable"),
            "postgres://db/x?user=me&password=***&sslmode=disable"
        );
        assert_eq!(
            redact("host=db user=me password=secret dbname=x"),
            "host=db user=me password=*** dbname=x"
        );
    }
}
