//! The `error` and `retry` agents: fail every recipient with the reason
//! the next hop gives, as Postfix's `error(8)`.
//!
//! The next hop is `[X.Y.Z ]text`, as in the address class default
//! `error:5.1.1 User unknown in virtual alias table` or a `transport_maps`
//! entry `example.net error:mail for example.net is not accepted`. The
//! `error` service bounces (`5.0.0` when no code is given); the same
//! program under the service name `retry` defers instead (`4.0.0`), as
//! Postfix's `retry` entry in `master.cf` does. A code of the other class
//! is given this one's class: a bounce always carries `5.X.X`, a deferral
//! `4.X.X`.

use mta_core::delivery::{
    DeliveryAgent, DeliveryFuture, DeliveryReport, DeliveryRequest, DeliveryStatus, Relay,
    StatusDetail,
};
use mta_core::reply::{EnhancedStatus, StatusClass};

/// The `error` agent (or `retry`, which defers).
#[derive(Debug, Clone, Copy)]
pub struct ErrorAgent {
    defer: bool,
}

impl ErrorAgent {
    /// The agent that bounces (`error`).
    pub fn bounce() -> ErrorAgent {
        ErrorAgent { defer: false }
    }

    /// The agent that defers (`retry`).
    pub fn retry() -> ErrorAgent {
        ErrorAgent { defer: true }
    }

    /// The status for next hop `nexthop`.
    ///
    /// # Example
    ///
    /// ```
    /// use mta_delivery::error::ErrorAgent;
    /// let s = ErrorAgent::bounce().status("5.1.1 User unknown in virtual alias table");
    /// let d = s.detail().unwrap();
    /// assert_eq!((s.status_word(), d.dsn.to_string().as_str(), d.text.as_str()),
    ///            (Some("bounced"), "5.1.1", "User unknown in virtual alias table"));
    /// let s = ErrorAgent::retry().status("try again later");
    /// assert_eq!((s.status_word(), s.detail().unwrap().dsn.to_string().as_str()), (Some("deferred"), "4.0.0"));
    /// ```
    pub fn status(&self, nexthop: &str) -> DeliveryStatus {
        let class = if self.defer {
            StatusClass::PersistentTransient
        } else {
            StatusClass::Permanent
        };
        let nexthop = nexthop.trim();
        let (code, text) = match nexthop.split_once(' ') {
            Some((first, rest)) => match EnhancedStatus::parse(first) {
                Ok(code) => (Some(code), rest.trim_start()),
                Err(_) => (None, nexthop),
            },
            None => match EnhancedStatus::parse(nexthop) {
                Ok(code) => (Some(code), ""),
                Err(_) => (None, nexthop),
            },
        };
        let code = code
            .and_then(|c| EnhancedStatus::new(class, c.subject(), c.detail()).ok())
            .unwrap_or_else(|| EnhancedStatus::new(class, 0, 0).expect("a valid code"));
        let detail = StatusDetail::new(code, text, Relay::None);
        if self.defer {
            DeliveryStatus::Deferred(detail)
        } else {
            DeliveryStatus::Bounced(detail)
        }
    }
}

impl DeliveryAgent for ErrorAgent {
    fn deliver(&self, request: DeliveryRequest) -> DeliveryFuture<'_> {
        Box::pin(async move {
            DeliveryReport::uniform(&request.recipients, &self.status(&request.nexthop))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_take_the_agents_class() {
        let s = ErrorAgent::bounce().status("4.7.1 go away");
        assert_eq!(s.detail().unwrap().dsn.to_string(), "5.7.1");
        let s = ErrorAgent::retry().status("5.7.1 later");
        assert_eq!(s.detail().unwrap().dsn.to_string(), "4.7.1");
        let s = ErrorAgent::bounce().status("5.1.1");
        assert_eq!(s.detail().unwrap().text, "");
        let s = ErrorAgent::bounce().status("no code here");
        let d = s.detail().unwrap();
        assert_eq!(
            (d.dsn.to_string().as_str(), d.text.as_str()),
            ("5.0.0", "no code here")
        );
        let s = ErrorAgent::bounce().status("9.9.9 odd");
        assert_eq!(s.detail().unwrap().text, "9.9.9 odd");
    }
}
