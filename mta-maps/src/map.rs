//! The [`Map`] trait, its three outcomes, and the lookup future.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use thiserror::Error;

/// Why a lookup gave no answer. The two kinds call for different actions,
/// which is why they are kept apart all the way up.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MapError {
    /// The table could not answer now (a database is down, a file is
    /// being replaced): the caller answers 4xx or defers, and tries again.
    #[error("{table}: table lookup problem: {reason}")]
    Temporary {
        /// The table, as `type:name`.
        table: String,
        /// What went wrong.
        reason: String,
    },
    /// The table is unusable as configured: a source file with a bad
    /// line, an unknown table type, a missing file. Fatal for the program
    /// that needs the table.
    #[error("{location}: {reason}")]
    Config {
        /// `FILE, line N`, or the table as `type:name` when there is no
        /// line to blame.
        location: String,
        /// What is wrong and what to do.
        reason: String,
    },
}

impl MapError {
    /// A temporary failure of `table`.
    pub fn temporary(table: impl Into<String>, reason: impl Into<String>) -> MapError {
        MapError::Temporary {
            table: table.into(),
            reason: reason.into(),
        }
    }

    /// A configuration error at `location`.
    pub fn config(location: impl Into<String>, reason: impl Into<String>) -> MapError {
        MapError::Config {
            location: location.into(),
            reason: reason.into(),
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(self, MapError::Temporary { .. })
    }
}

/// The answer to one lookup: the value, `None` when the key is not in the
/// table, or an error.
pub type LookupResult<'a> = Result<Option<Cow<'a, str>>, MapError>;

/// A lookup in progress. Tables held in memory or mapped from a file answer
/// at once ([`Lookup::ready`]), without allocating; network tables answer
/// later ([`Lookup::pending`]). Either way the caller `.await`s it, so the
/// same code serves both and an async caller is never blocked by a slow
/// database. Synchronous callers use [`Lookup::now`].
pub struct Lookup<'a> {
    state: LookupState<'a>,
}

enum LookupState<'a> {
    Ready(Option<LookupResult<'a>>),
    Pending(Pin<Box<dyn Future<Output = LookupResult<'a>> + Send + 'a>>),
}

impl<'a> Lookup<'a> {
    /// An answer available now.
    pub fn ready(result: LookupResult<'a>) -> Lookup<'a> {
        Lookup {
            state: LookupState::Ready(Some(result)),
        }
    }

    /// An answer that a future will give.
    pub fn pending(future: impl Future<Output = LookupResult<'a>> + Send + 'a) -> Lookup<'a> {
        Lookup {
            state: LookupState::Pending(Box::pin(future)),
        }
    }

    /// The answer, if it is available without waiting; a table that must
    /// wait (a network table) gives a temporary error naming `table`,
    /// for callers that cannot wait (a command-line tool without a
    /// runtime should use one instead).
    pub fn now(self, table: &str) -> LookupResult<'a> {
        match self.state {
            LookupState::Ready(Some(result)) => result,
            LookupState::Ready(None) => Err(MapError::temporary(table, "lookup polled twice")),
            LookupState::Pending(mut future) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                match future.as_mut().poll(&mut cx) {
                    Poll::Ready(result) => result,
                    Poll::Pending => Err(MapError::temporary(
                        table,
                        "this table answers asynchronously; it cannot be queried here",
                    )),
                }
            }
        }
    }
}

impl<'a> Future for Lookup<'a> {
    type Output = LookupResult<'a>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            LookupState::Ready(result) => {
                Poll::Ready(result.take().unwrap_or_else(|| {
                    Err(MapError::temporary("lookup", "polled after completion"))
                }))
            }
            LookupState::Pending(future) => future.as_mut().poll(cx),
        }
    }
}

impl std::fmt::Debug for Lookup<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            LookupState::Ready(r) => f.debug_tuple("Lookup::Ready").field(r).finish(),
            LookupState::Pending(_) => f.write_str("Lookup::Pending"),
        }
    }
}

/// How a table's keys are matched, which decides how callers search it:
/// Postfix gives pattern tables the whole address only, and fixed-string
/// tables the address, then its parts (see [`crate::search`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyKind {
    /// Exact strings (`hash`, `texthash`, `inline`, database tables).
    Fixed,
    /// Patterns matched against the whole key (`regexp`, `pcre`, `cidr`).
    Pattern,
    /// Every key matches (`static`).
    Any,
}

/// A lookup table.
///
/// Implementations are cheap to query from many tasks at once (`Send +
/// Sync`, `&self`). Keys are given as the caller has them; a table that
/// folds case (Postfix's default for fixed-string tables) folds them
/// itself.
pub trait Map: Send + Sync + std::fmt::Debug {
    /// Looks `key` up.
    fn lookup<'a>(&'a self, key: &'a str) -> Lookup<'a>;

    /// The table as `type:name`, for messages.
    fn name(&self) -> &str;

    /// How keys are matched.
    fn key_kind(&self) -> KeyKind;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lookups_answer_now_and_when_awaited() {
        let found: Lookup<'_> = Lookup::ready(Ok(Some(Cow::Borrowed("v"))));
        assert_eq!(found.now("t").unwrap().as_deref(), Some("v"));
        let pending = Lookup::pending(async { Ok(None) });
        assert_eq!(
            pending.now("t").unwrap(),
            None,
            "a future that is ready at once"
        );
        let waits = Lookup::pending(std::future::pending());
        assert!(
            waits
                .now("pgsql:/etc/mta/users.cf")
                .unwrap_err()
                .is_temporary()
        );
    }
}
