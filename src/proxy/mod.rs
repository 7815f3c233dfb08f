//! Forwarding to upstreams: one pooled hyper client for all routes (http and https, rustls
//! with the public web roots plus `server.upstream_ca_file`), bodies streamed both ways
//! without buffering, and a deadline on the upstream's response headers.

pub mod headers;

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use rustls_pki_types::CertificateDer;

use http::{Request, Response, Uri};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::Error;
use crate::response::Body;
use crate::routes::{Route, Upstream};

/// The shared upstream client.
#[derive(Clone)]
pub struct Forwarder {
    client: Client<HttpsConnector<HttpConnector>, Incoming>,
}

impl Forwarder {
    /// `extra_roots`: CA certificates trusted for https upstreams besides the web roots.
    pub fn new(
        connect_timeout: Duration,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Self, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in extra_roots {
            roots.add(cert.clone())?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        Ok(Self { client })
    }

    /// Sends `req` (headers already prepared) to the route's upstream, keeping its path and query.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        route: &Route,
        upstream: &Upstream,
    ) -> Result<Response<Body>, Error> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(upstream.scheme.clone());
        parts.authority = Some(upstream.authority.clone());
        parts.path_and_query = req.uri().path_and_query().cloned();
        *req.uri_mut() = Uri::from_parts(parts).map_err(|e| Error::UpstreamUnavailable {
            upstream: upstream.authority.to_string(),
            detail: e.to_string(),
        })?;
        *req.version_mut() = http::Version::HTTP_11;

        let response = match tokio::time::timeout(route.timeout, self.client.request(req)).await {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => {
                return Err(Error::UpstreamUnavailable {
                    upstream: upstream.authority.to_string(),
                    detail: crate::oidc::error_chain(&e),
                });
            }
            Err(_) => {
                return Err(Error::UpstreamTimeout {
                    upstream: upstream.authority.to_string(),
                    seconds: route.timeout.as_secs(),
                });
            }
        };
        let (mut parts, body) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Either::Left(body)))
    }
}
