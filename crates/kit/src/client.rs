//! The one way a service calls another: a lazily connected channel per peer, a deadline
//! on every call, the caller's trace context in the metadata, and the peer's failures
//! turned into ours (`UNAVAILABLE` when it is down, `DEADLINE_EXCEEDED` when it is slow),
//! never a hang and never `INTERNAL`.

use std::{future::Future, time::Duration};

use tonic::{
    Code, Request, Response, Status,
    transport::{Channel, Endpoint},
};

use crate::{
    config::ConfigError,
    error::Error,
    telemetry::{self, MetadataInjector},
};

/// A peer service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Peer {
    name: &'static str,
    channel: Channel,
    timeout: Duration,
    /// Presented to the peer's internal RPCs (`x-service-token`).
    credential: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Peer {
    /// A peer at `url` (e.g. `http://user:50051`); connects on first use, reconnects on
    /// its own after failures.
    pub fn new(
        name: &'static str,
        url_var: &str,
        url: &str,
        timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| ConfigError {
            var: url_var.into(),
            value: url.into(),
            reason: e.to_string(),
        })?;
        // No channel-wide timeout: every call carries its own deadline ([`Peer::call`]),
        // which [`Peer::with_timeout`] may lengthen.
        let channel = endpoint
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self {
            name,
            channel,
            timeout,
            credential: None,
        })
    }

    /// The same peer, presenting `token` to its internal RPCs.
    pub fn with_credential(self, token: &str) -> Result<Self, ConfigError> {
        let value = token.parse().map_err(|_| ConfigError {
            var: "SERVICE_TOKEN".into(),
            value: "<redacted>".into(),
            reason: "must be printable ASCII".into(),
        })?;
        Ok(Self {
            credential: Some(value),
            ..self
        })
    }

    /// The same peer without the service credential: for a caller that is not a service
    /// (the gateway), so that it cannot reach internal RPCs.
    pub fn without_credential(self) -> Self {
        Self {
            credential: None,
            ..self
        }
    }

    /// The peer from environment variable `url_var`, or `default_url`; `PEER_TIMEOUT_MS`
    /// (default 2000) bounds every call.
    pub fn from_env(
        name: &'static str,
        url_var: &str,
        default_url: &str,
    ) -> Result<Self, ConfigError> {
        let url = crate::config::optional(url_var).unwrap_or_else(|| default_url.to_owned());
        let timeout = crate::config::millis_or("PEER_TIMEOUT_MS", 2000)?;
        let peer = Self::new(name, url_var, &url, timeout)?;
        // Without a credential, the peer's internal RPCs answer PERMISSION_DENIED.
        let development = crate::config::parse_or("DEVELOPMENT_KEYS", false)?;
        match crate::config::secret("SERVICE_TOKEN")? {
            Some(token) => peer.with_credential(&token),
            None if development => peer.with_credential(crate::auth::DEV_SERVICE_TOKEN),
            None => Ok(peer),
        }
    }

    /// The same peer with another deadline (e.g. longer, for an operator's command).
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// The channel, for building a generated client.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// `message` with the deadline and the current trace context.
    pub fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        if let Some(credential) = &self.credential {
            request
                .metadata_mut()
                .insert(crate::serve::SERVICE_TOKEN_HEADER, credential.clone());
        }
        telemetry::inject(
            &tracing::Span::current(),
            &mut MetadataInjector(request.metadata_mut()),
        );
        request
    }

    /// Awaits a call under the deadline. The error is the peer's status (or ours for a
    /// deadline) so that the caller can handle the codes it expects (`NOT_FOUND`, ...)
    /// and pass the rest to [`Peer::error`].
    pub async fn call<R>(
        &self,
        call: impl Future<Output = Result<Response<R>, Status>>,
    ) -> Result<R, Status> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "{} did not answer in time",
                self.name
            ))),
        }
    }

    /// An unexpected answer from the peer as our error.
    pub fn error(&self, status: Status) -> Error {
        let peer = self.name;
        match status.code() {
            Code::DeadlineExceeded => {
                Error::DeadlineExceeded(format!("{peer} did not answer in time"))
            }
            // The channel's own timeout surfaces as CANCELLED.
            Code::Cancelled if status.message().contains("Timeout") => {
                Error::DeadlineExceeded(format!("{peer} did not answer in time"))
            }
            Code::Unavailable
            | Code::Cancelled
            | Code::Unknown
            | Code::ResourceExhausted
            | Code::Aborted => {
                tracing::warn!(peer, status = %status, "peer unavailable");
                Error::Unavailable(format!("{peer} is unavailable; retry later"))
            }
            _ => Error::internal(anyhow::anyhow!(
                "{peer} answered {:?}: {}",
                status.code(),
                status.message()
            )),
        }
    }
}
