//! Held writes: a transaction's plain writes (inserts, updates by key, the audit event: statements
//! whose results nobody reads) wait and go to the database together, before the transaction's next
//! read and at the latest when it flushes or commits.
//!
//! Every statement costs a round trip besides its execution: on SQLite a hand-off to sqlx's
//! connection thread and back, on PostgreSQL a message exchange and the backend's per-statement work.
//! A create's seven writes go as one: on SQLite as one multi-statement command, on PostgreSQL as one
//! statement of data-modifying `WITH` clauses. Each engine's adapter decides how to send them
//! (`sqlite.rs`, `postgres.rs`); this file only collects them.
//!
//! The statements share one argument list, so each statement's `$n` becomes `$(n + offset)`.
//! A held write's error surfaces where it is sent, and fails the call that made it; a rollback to a
//! savepoint forgets what is held (all of it came after the savepoint: a savepoint is only set once
//! everything held before it was sent).

use sqlx::{Arguments, error::BoxDynError};

use crate::error::{Error, Result};

/// At most this many statements are held; a larger write set goes in several parts.
pub(super) const MAX_HELD_STATEMENTS: usize = 32;

/// The writes a transaction holds, with their arguments.
pub(super) struct Held<A> {
    statements: Vec<Statement>,
    args: A,
    /// A write's arguments failed to encode half-way: the list no longer matches the statements.
    broken: bool,
}

pub(super) struct Statement {
    /// The statement with its placeholders renumbered into the shared argument list.
    pub sql: String,
    /// The table it writes.
    pub table: &'static str,
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

    pub fn len(&self) -> usize {
        self.statements.len()
    }

    /// Whether a held write already writes the table `sql` writes.
    pub fn writes_table_of(&self, sql: &str) -> bool {
        let table = target_table(sql);
        self.statements.iter().any(|s| s.table == table)
    }

    /// Takes what is held, leaving nothing; `None` when nothing is.
    pub fn take(&mut self) -> Result<Option<(Vec<Statement>, A)>> {
        let held = std::mem::take(self);
        if held.broken {
            return Err(Error::internal(
                "a held write could not encode its arguments",
            ));
        }
        Ok((!held.statements.is_empty()).then_some((held.statements, held.args)))
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
    use super::{renumber, target_table};

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
