//! Held writes: a transaction's plain writes (inserts, updates by key, the audit event: statements
//! whose results nobody reads) wait and go to the database together, before the transaction's next
//! read and at the latest when it flushes or commits.
//!
//! Every statement costs a round trip besides its execution: on SQLite a hand-off to sqlx's
//! connection thread and back, on PostgreSQL a message exchange and the backend's per-statement work.
//! A create's seven writes go as one: on SQLite as one multi-statement command, on PostgreSQL as one
//! statement of data-modifying `WITH` clauses ([`Sending`]). `SqlTx::write` and `SqlTx::conn`, written once
//! for both engines in `sql.rs`, hold and send them.
//!
//! The statements share one argument list, so each statement's `$n` becomes `$(n + offset)`.
//! A held write's error surfaces where it is sent, and fails the call that made it; a rollback to a
//! savepoint forgets what is held (all of it came after the savepoint: a savepoint is only set once
//! everything held before it was sent).

use sqlx::{Arguments, error::BoxDynError};

use crate::error::{Error, Result};

/// At most this many statements are held; a larger write set goes in several parts.
const MAX_HELD_STATEMENTS: usize = 32;

/// How an engine takes several held writes at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    /// SQLite: one command of `;`-separated statements, run in order: each sees those before it.
    Commands,
    /// PostgreSQL, whose protocol takes one statement per query: the last write, with the others
    /// as data-modifying `WITH` clauses. All parts of one statement see the data as it was before
    /// it, so a write to a table that a held write already writes goes only after what is held (an
    /// update would not see a row inserted in the same statement; of two updates of one row, only
    /// one would happen).
    OneStatement,
}

/// The writes a transaction holds, with their arguments.
pub(super) struct Held<A> {
    statements: Vec<Statement>,
    args: A,
    /// A write's arguments failed to encode half-way: the list no longer matches the statements.
    broken: bool,
}

struct Statement {
    /// The statement with its placeholders renumbered into the shared argument list.
    sql: String,
    /// The table it writes.
    table: &'static str,
}

impl<A: Arguments> Default for Held<A> {
    fn default() -> Self {
        Self {
            statements: Vec::new(),
            args: A::default(),
            broken: false,
        }
    }
}

impl<A: Arguments> Held<A> {
    /// Adds a write: `sql` with `$n` placeholders, `bind` adding its arguments in order.
    pub fn add(
        &mut self,
        sql: &'static str,
        bind: impl FnOnce(&mut A) -> std::result::Result<(), BoxDynError>,
    ) -> Result<()> {
        let offset = self.args.len();
        if let Err(e) = bind(&mut self.args) {
            self.broken = true;
            return Err(Error::internal(e));
        }
        let mut renumbered = String::with_capacity(sql.len() + 16);
        renumber(sql, offset, &mut renumbered);
        self.statements.push(Statement {
            sql: renumbered,
            table: target_table(sql),
        });
        Ok(())
    }

    /// Whether what is held must be sent before `sql` is held, sent as `sending` does.
    pub fn must_send_before(&self, sql: &str, sending: Sending) -> bool {
        let table = target_table(sql);
        sending == Sending::OneStatement && self.statements.iter().any(|s| s.table == table)
    }

    pub fn is_full(&self) -> bool {
        self.statements.len() >= MAX_HELD_STATEMENTS
    }

    /// Takes what is held, leaving nothing: the SQL to send it with, as `sending` says, and its
    /// arguments; `None` when nothing is held.
    pub fn take(&mut self, sending: Sending) -> Result<Option<(String, A)>> {
        let held = std::mem::take(self);
        if held.broken {
            return Err(Error::internal(
                "a held write could not encode its arguments",
            ));
        }
        let sql = match (sending, held.statements.split_last()) {
            (_, None) => return Ok(None),
            (_, Some((last, []))) => last.sql.clone(),
            (Sending::Commands, Some(_)) => held
                .statements
                .iter()
                .map(|s| s.sql.as_str())
                .collect::<Vec<_>>()
                .join(";\n"),
            (Sending::OneStatement, Some((last, before))) => {
                let clauses: Vec<String> = before
                    .iter()
                    .enumerate()
                    .map(|(i, s)| format!("w{i} AS ({})", s.sql))
                    .collect();
                format!("WITH {} {}", clauses.join(", "), last.sql)
            }
        };
        Ok(Some((sql, held.args)))
    }
}

/// The table of an `INSERT INTO t …` or `UPDATE t …`.
fn target_table(sql: &str) -> &str {
    let mut words = sql.split_whitespace();
    let table = match words.next() {
        Some(w) if w.eq_ignore_ascii_case("INSERT") => words.nth(1),
        Some(w) if w.eq_ignore_ascii_case("UPDATE") => words.next(),
        _ => None,
    };
    table.map_or("", |t| t.split('(').next().unwrap_or(t))
}

/// Appends `sql` to `out` with each `$n` turned into `$(n + offset)`. (On SQLite not `?NNN`: that
/// fixes SQLite's slot number, and sqlx would fill the empty slots below it in order.)
fn renumber(sql: &str, offset: usize, out: &mut String) {
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        match rest[at + 1..at + 1 + digits].parse::<usize>() {
            Ok(n) => {
                out.push('$');
                out.push_str(&(n + offset).to_string());
            }
            // A `$` that is not a placeholder stays as it is.
            Err(_) => out.push('$'),
        }
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use sqlx::{Arguments, postgres::PgArguments};

    use super::{Held, Sending, renumber, target_table};

    fn held() -> Held<PgArguments> {
        let mut held = Held::default();
        held.add(
            "UPDATE consents SET version = $2 WHERE id = $1",
            |a: &mut PgArguments| {
                a.add(1_i64)?;
                a.add(2_i64)
            },
        )
        .expect("add");
        held.add(
            "INSERT INTO referrals (id) VALUES ($1)",
            |a: &mut PgArguments| a.add(3_i64),
        )
        .expect("add");
        held
    }

    #[test]
    fn held_writes_go_as_commands_or_as_one_statement() {
        let (sql, args) = held().take(Sending::Commands).expect("take").expect("held");
        assert_eq!(
            sql,
            "UPDATE consents SET version = $2 WHERE id = $1;\nINSERT INTO referrals (id) VALUES ($3)"
        );
        assert_eq!(args.len(), 3);
        let (sql, _) = held()
            .take(Sending::OneStatement)
            .expect("take")
            .expect("held");
        assert_eq!(
            sql,
            "WITH w0 AS (UPDATE consents SET version = $2 WHERE id = $1) \
             INSERT INTO referrals (id) VALUES ($3)"
        );
        assert!(
            Held::<PgArguments>::default()
                .take(Sending::Commands)
                .expect("take")
                .is_none()
        );
    }

    #[test]
    fn one_statement_never_writes_a_table_twice() {
        let held = held();
        assert!(held.must_send_before("UPDATE referrals SET a = $1", Sending::OneStatement));
        assert!(!held.must_send_before(
            "INSERT INTO messages (id) VALUES ($1)",
            Sending::OneStatement
        ));
        assert!(!held.must_send_before("UPDATE referrals SET a = $1", Sending::Commands));
    }

    #[test]
    fn placeholders_are_renumbered_past_the_arguments_already_held() {
        let mut out = String::new();
        renumber("UPDATE t SET a = $2 WHERE id = $1", 0, &mut out);
        out.push(';');
        renumber("INSERT INTO u VALUES ($1, $10, '$x', '$')", 2, &mut out);
        assert_eq!(
            out,
            "UPDATE t SET a = $2 WHERE id = $1;INSERT INTO u VALUES ($3, $12, '$x', '$')"
        );
    }

    #[test]
    fn the_table_a_write_writes_is_read_from_its_statement() {
        assert_eq!(
            target_table("INSERT INTO messages (id) VALUES ($1)"),
            "messages"
        );
        assert_eq!(
            target_table("INSERT INTO consent_events(id) VALUES ($1)"),
            "consent_events"
        );
        assert_eq!(
            target_table("UPDATE referrals SET a = $2 WHERE id = $1"),
            "referrals"
        );
        assert_eq!(target_table("SELECT 1"), "");
    }
}
