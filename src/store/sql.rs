//! One transaction on either engine ([`SqlTx`]) and the statement builder ([`Sql`]) every aggregate's
//! SQL is written with.
//!
//! A statement is text with `$n` placeholders and its arguments, built together: [`Sql::bind`]
//! appends the next placeholder and its value, [`Sql::arg`] supplies the value of a placeholder
//! already in the text. Reads go out at once; plain writes are held and sent together
//! ([`SqlTx::write`], see [`super::held`]), so a read always sees the writes before it.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{Arguments, error::BoxDynError};
use uuid::Uuid;

use super::{
    Tx,
    dialect::{Bind, Dialect, Execute, Read, RowsAffected},
    held::Held,
};
use crate::{
    error::{Error, Result},
    sealing::{DataKeys, Place},
};

use super::sealed::SealedColumn;

/// A statement being built: its text and its arguments, in placeholder order.
pub(super) struct Sql<A> {
    text: String,
    args: A,
    /// The first argument that failed to encode: the statement is not sent.
    error: Option<BoxDynError>,
    /// Whether the statement is worth a place in the connection's prepared-statement cache.
    persistent: bool,
}

impl<A: Arguments> Sql<A> {
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            args: A::default(),
            error: None,
            persistent: true,
        }
    }

    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends the next placeholder and binds `value` to it.
    pub fn bind<T>(&mut self, value: T) -> &mut Self
    where
        A: Bind<T>,
    {
        self.add(value);
        self.text.push('$');
        self.text.push_str(&self.args.len().to_string());
        self
    }

    /// Supplies the value of the next placeholder already written in the text.
    pub fn arg<T>(mut self, value: T) -> Self
    where
        A: Bind<T>,
    {
        self.add(value);
        self
    }

    /// Binds `values` as a comma-separated list in parentheses: `(…)`. A list is kept in the
    /// statement cache only when short (see [`cacheable`]): its text differs with every length.
    pub fn list<T>(&mut self, values: impl IntoIterator<Item = T>) -> &mut Self
    where
        A: Bind<T>,
    {
        self.push("(");
        let mut count = 0;
        for value in values {
            if count > 0 {
                self.push(", ");
            }
            self.bind(value);
            count += 1;
        }
        self.persistent &= cacheable(count);
        self.push(")")
    }

    fn add<T>(&mut self, value: T)
    where
        A: Bind<T>,
    {
        if let Err(e) = self.args.bind(value) {
            self.error.get_or_insert(e);
        }
    }

    /// The statement, ready to run on `D`; the first argument that failed to encode, if any.
    fn into_query<D: Dialect<Arguments = A>>(self) -> Result<sqlx::query::Query<'static, D::Db, A>>
    where
        D::Db: sqlx::database::HasStatementCache,
        A: sqlx::IntoArguments<D::Db>,
    {
        match self.error {
            Some(e) => Err(Error::internal(e)),
            None => Ok(sqlx::query_with(
                sqlx::AssertSqlSafe(placeholders::<D>(self.text)),
                self.args,
            )
            .persistent(self.persistent)),
        }
    }
}

/// `sql` as `D` takes it best: on SQLite with anonymous `?` placeholders when its `$n` are
/// `$1, $2, …` in the order written, each once (every statement the builder makes, and most written
/// by hand), otherwise as it is.
///
/// sqlx binds a SQLite argument by asking for its placeholder's name, which SQLite finds by walking
/// the statement's list of names, and SQLite's parser looks each `$n` up the same way: both
/// quadratic in a statement's placeholders, 10.7 % of the server's time in a SQLite create at 32
/// clients (bench/RESULTS.md). Anonymous placeholders have no names: sqlx binds them in order, and
/// across the statements of a command (held writes) it carries on where the last one stopped.
fn placeholders<D: Dialect>(sql: String) -> String {
    if D::ANONYMOUS_PLACEHOLDERS {
        anonymous(&sql).unwrap_or(sql)
    } else {
        sql
    }
}

/// `sql` with `$1, $2, …` turned into `?`, if they come in that order, each once; `None` if not, or
/// if there are none. A `$` in a quoted literal or name is left alone.
fn anonymous(sql: &str) -> Option<String> {
    let mut out = String::with_capacity(sql.len());
    let mut expected = 1usize;
    let mut quote: Option<char> = None;
    let mut chars = sql.char_indices();
    while let Some((at, c)) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '$') => {
                let digits = sql[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
                if digits == 0 || sql[at + 1..at + 1 + digits].parse::<usize>().ok()? != expected {
                    return None;
                }
                expected += 1;
                out.push('?');
                for _ in 0..digits {
                    chars.next();
                }
                continue;
            }
            (None, _) => {}
        }
        out.push(c);
    }
    (expected > 1).then_some(out)
}

/// Whether a statement with a list of `n` values is worth a place in the prepared-statement cache.
/// Only short lists, the common ones (a pull of one or a few messages), are kept: a PostgreSQL
/// statement that is not cached costs a second round trip (parse, then execute).
fn cacheable(n: usize) -> bool {
    n <= 8
}

/// One transaction on engine `D`. Dropping it without [`Tx::commit`] rolls everything back.
pub(super) struct SqlTx<D: Dialect> {
    tx: sqlx::Transaction<'static, D::Db>,
    held: Held<D::Arguments>,
    /// The keys personal content is sealed with (`crate::sealing`); `None` for a store opened only
    /// to migrate, which reads and writes no content.
    keys: Option<Arc<DataKeys>>,
    /// Open from BEGIN until commit or rollback: the transaction's span in the trace.
    _span: tracing::Span,
}

impl<D: Dialect> SqlTx<D> {
    pub fn new(
        tx: sqlx::Transaction<'static, D::Db>,
        span: tracing::Span,
        keys: Option<Arc<DataKeys>>,
    ) -> Self {
        Self {
            tx,
            held: Held::default(),
            keys,
            _span: span,
        }
    }

    /// The data keys; an internal error for a store opened without them.
    pub fn keys(&self) -> Result<&DataKeys> {
        self.keys
            .as_deref()
            .ok_or_else(|| Error::internal("this store was opened without data keys"))
    }

    /// `plaintext` sealed for its column and row.
    pub fn seal(&self, column: SealedColumn, row: &[u8], plaintext: &str) -> Result<String> {
        Ok(self.keys()?.seal(Place::new(column.place, row), plaintext))
    }

    pub fn seal_opt(
        &self,
        column: SealedColumn,
        row: &[u8],
        plaintext: Option<&str>,
    ) -> Result<Option<String>> {
        plaintext.map(|p| self.seal(column, row, p)).transpose()
    }

    /// Starts a statement for this engine.
    pub fn sql(text: impl Into<String>) -> Sql<D::Arguments> {
        Sql::new(text)
    }

    /// The connection, once the held writes have gone ahead: what follows reads their effects.
    async fn conn(&mut self) -> Result<&mut D::Connection> {
        if let Some((sql, args)) = self.held.take(D::SENDING)? {
            sqlx::query_with(sqlx::AssertSqlSafe(placeholders::<D>(sql)), args)
                .execute((*self.tx).executor())
                .await?;
        }
        Ok(&mut *self.tx)
    }

    /// Holds back a write whose result nobody reads: `sql` with `$n` placeholders, `bind` adding
    /// its arguments in order. It goes with the next read, flush or commit.
    pub async fn write(
        &mut self,
        sql: &'static str,
        bind: impl FnOnce(&mut D::Arguments) -> std::result::Result<(), BoxDynError>,
    ) -> Result<()> {
        if self.held.must_send_before(sql, D::SENDING) {
            self.conn().await?;
        }
        self.held.add(sql, bind)?;
        if self.held.is_full() {
            self.conn().await?;
        }
        Ok(())
    }

    /// Runs a statement now; how many rows it changed.
    pub async fn execute(&mut self, sql: Sql<D::Arguments>) -> Result<u64> {
        let done = sql
            .into_query::<D>()?
            .execute(self.conn().await?.executor())
            .await?;
        Ok(done.rows_affected())
    }

    /// Runs a query; its rows as `T`.
    pub async fn fetch_all<T>(&mut self, sql: Sql<D::Arguments>) -> Result<Vec<T>>
    where
        D::Row: Read<T>,
    {
        let rows = sql
            .into_query::<D>()?
            .fetch_all(self.conn().await?.executor())
            .await?;
        rows.iter()
            .map(|row| row.read().map_err(Error::from))
            .collect()
    }

    /// Runs a query that returns at most one row.
    pub async fn fetch_optional<T>(&mut self, sql: Sql<D::Arguments>) -> Result<Option<T>>
    where
        D::Row: Read<T>,
    {
        let row = sql
            .into_query::<D>()?
            .fetch_optional(self.conn().await?.executor())
            .await?;
        row.map(|row| row.read().map_err(Error::from)).transpose()
    }

    /// Runs a query that returns exactly one row.
    pub async fn fetch_one<T>(&mut self, sql: Sql<D::Arguments>) -> Result<T>
    where
        D::Row: Read<T>,
    {
        self.fetch_optional(sql)
            .await?
            .ok_or_else(|| Error::from(sqlx::Error::RowNotFound))
    }

    /// The row of `table` whose `id` is `id`; with `lock`, locked until the transaction ends.
    pub async fn by_id<T>(&mut self, table: &str, id: Uuid, lock: bool) -> Result<Option<T>>
    where
        D::Row: Read<T>,
    {
        let lock = if lock { D::LOCK } else { "" };
        let select = Self::sql(format!("SELECT * FROM {table} WHERE id = $1{lock}")).arg(id);
        self.fetch_optional(select).await
    }

    /// The rows of `table` whose `id` is among `ids`, unlocked, in no particular order: one
    /// statement however many.
    pub async fn by_ids<T>(&mut self, table: &str, ids: &[Uuid]) -> Result<Vec<T>>
    where
        D::Row: Read<T>,
    {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut select = Self::sql(format!("SELECT * FROM {table} WHERE id IN "));
        select.list(ids.iter().copied());
        self.fetch_all(select).await
    }

    /// Runs a statement by the simple protocol: one round trip, and its text (one per member of a
    /// group-commit batch, for savepoints) does not crowd the prepared-statement cache.
    async fn execute_simple(&mut self, text: String) -> Result<()> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(text))
            .execute(self.conn().await?.executor())
            .await?;
        Ok(())
    }
}

#[async_trait]
impl<D: Dialect> Tx for SqlTx<D> {
    async fn flush(&mut self) -> Result<()> {
        self.conn().await.map(|_| ())
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        self.conn().await?;
        self.tx.commit().await?;
        Ok(())
    }

    async fn savepoint(&mut self, n: u64) -> Result<()> {
        self.execute_simple(format!("SAVEPOINT sp{n}")).await
    }

    async fn rollback_to_savepoint(&mut self, n: u64) -> Result<()> {
        // Writes held back since the savepoint are undone by not sending them.
        self.held = Held::default();
        self.execute_simple(format!("ROLLBACK TO SAVEPOINT sp{n}"))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::anonymous;

    #[test]
    fn placeholders_in_order_become_anonymous() {
        assert_eq!(
            anonymous("INSERT INTO t (a, b) VALUES ($1, $2); UPDATE u SET c = $3 WHERE d = $4")
                .as_deref(),
            Some("INSERT INTO t (a, b) VALUES (?, ?); UPDATE u SET c = ? WHERE d = ?")
        );
        assert_eq!(
            anonymous("SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11").as_deref(),
            Some("SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?")
        );
        // Literals and quoted names keep their `$`; so does a `$` without digits.
        assert_eq!(
            anonymous("SELECT json_extract(x, '$[1]'), \"a$2\", $1 FROM t WHERE y = $2").as_deref(),
            Some("SELECT json_extract(x, '$[1]'), \"a$2\", ? FROM t WHERE y = ?")
        );
        assert_eq!(
            anonymous("SELECT 'it''s $3', $1").as_deref(),
            Some("SELECT 'it''s $3', ?")
        );
    }

    /// Anything else keeps its numbers: a placeholder used twice, out of order, or skipped would
    /// bind the wrong value if made anonymous.
    #[test]
    fn placeholders_out_of_order_or_repeated_keep_their_numbers() {
        for sql in [
            "SELECT 1",
            "SELECT $1 WHERE a = $1",
            "SELECT $2, $1",
            "SELECT $1, $3",
            "SELECT $0",
            "SELECT $1, $",
        ] {
            let anonymous = anonymous(sql);
            assert!(anonymous.is_none(), "{sql} became {anonymous:?}");
        }
    }
}
