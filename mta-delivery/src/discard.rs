//! The `discard` agent: reports every recipient delivered and keeps
//! nothing, as Postfix's `discard(8)`, which serves `DISCARD` actions and
//! `transport_maps` entries such as `example.net discard:silently`.
//!
//! The next hop is the reason, logged as `status=sent (REASON)`; without
//! one the text is `discarded`.

use mta_core::delivery::{
    DeliveryAgent, DeliveryFuture, DeliveryReport, DeliveryRequest, DeliveryStatus, Relay,
    StatusDetail,
};
use mta_core::reply::EnhancedStatus;

/// The `discard` agent.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use std::time::{Duration, SystemTime};
/// use mta_core::address::ReversePath;
/// use mta_core::delivery::*;
/// use mta_core::queue_id::QueueId;
/// use mta_delivery::discard::Discard;
///
/// let envelope = Envelope::new(QueueId::from_parts(1, 0, 1), ReversePath::Null, SystemTime::UNIX_EPOCH, 3);
/// let rcpt = Recipient::new("spam@example.net".parse().unwrap(), 7);
/// let request = DeliveryRequest::new(envelope, vec![rcpt], "silently", Duration::from_secs(9),
///                                    Arc::new(MemoryContent::new(b"x\n".to_vec())));
/// let report = tokio::runtime::Builder::new_current_thread().build()?.block_on(Discard.deliver(request));
/// let detail = report.results[0].status.detail().unwrap();
/// assert_eq!((report.results[0].status.status_word(), detail.text.as_str()), (Some("sent"), "silently"));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Discard;

impl DeliveryAgent for Discard {
    fn deliver(&self, request: DeliveryRequest) -> DeliveryFuture<'_> {
        Box::pin(async move {
            let text = match request.nexthop.trim() {
                "" => "discarded",
                reason => reason,
            };
            let status =
                DeliveryStatus::Delivered(StatusDetail::new(EnhancedStatus::OK, text, Relay::None));
            DeliveryReport::uniform(&request.recipients, &status)
        })
    }
}
