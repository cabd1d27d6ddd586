//! `check_policy_service` for the daemon: mta-restrictions' blocking
//! policy client, run on tokio's blocking threads so that a slow policy
//! server never stalls the sessions sharing a worker.

use std::sync::Arc;

use mta_restrictions::policy::{
    PolicyClient, PolicyError, PolicyFuture, PolicyRequest, PolicyService, StdPolicyClient,
};

/// The blocking client behind `spawn_blocking`.
pub(crate) struct OffRuntime(pub(crate) Arc<StdPolicyClient>);

impl PolicyClient for OffRuntime {
    fn query<'a>(
        &'a self,
        service: &'a PolicyService,
        request: &'a PolicyRequest,
    ) -> PolicyFuture<'a> {
        let client = Arc::clone(&self.0);
        let (service, request) = (service.clone(), request.clone());
        Box::pin(async move {
            let endpoint = service.endpoint.to_string();
            tokio::task::spawn_blocking(move || client.query_blocking(&service, &request))
                .await
                .unwrap_or_else(|e| {
                    Err(PolicyError::Io {
                        endpoint,
                        source: std::io::Error::other(e),
                    })
                })
        })
    }
}
