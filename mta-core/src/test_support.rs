//! Helpers shared by this crate's unit tests.

use std::future::Future;
use std::task::{Context, Poll, Waker};

/// Runs a future that completes without waiting, as the stub resolver's
/// and the test agents' futures do; panics if it would wait.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a test future had to wait"),
    }
}
