//! Looking up where a domain's mail goes: MX records (RFC 5321 §5.1), null MX (RFC 7505),
//! implicit MX, and host addresses — through hickory-resolver.
//!
//! [`MxLookup`] is a trait so the dispatcher's caching and routing can be tested with a fake;
//! the engine itself always uses [`HickoryLookup`], pointed at the system resolver or at an
//! explicit nameserver (the load-test DNS server in tests).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};

/// A boxed future, as trait methods return (lookups are rare: results are cached).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One mail exchanger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// Lower is tried first.
    pub preference: u16,
    /// Host name without the trailing dot, lower case.
    pub host: String,
}

/// What DNS says about a domain's mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// Exchangers, sorted by preference (equal preferences in random order).
    Hosts(Vec<MxHost>),
    /// The domain takes no mail: NXDOMAIN, null MX, or neither MX nor address records.
    NoDomain(String),
}

/// A temporary DNS failure (SERVFAIL, timeout, network): try again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dns: {0}")]
pub struct DnsTemporary(pub String);

/// MX and address lookups.
pub trait MxLookup: Send + Sync + std::fmt::Debug + 'static {
    /// The domain's exchangers and how long the answer may be cached.
    fn mx<'a>(
        &'a self,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<(MxAnswer, Duration), DnsTemporary>>;
    /// A host's addresses (IPv4 first).
    fn addresses<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsTemporary>>;
}

/// The real resolver.
#[derive(Debug, Clone)]
pub struct HickoryLookup {
    resolver: TokioResolver,
}

impl HickoryLookup {
    /// A resolver using `nameserver` if given, else the system configuration.
    pub fn new(nameserver: Option<SocketAddr>, timeout: Duration) -> Result<Self, ResolveError> {
        let provider = TokioConnectionProvider::default();
        let mut builder = match nameserver {
            Some(addr) => {
                let mut config = ResolverConfig::new();
                config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                let mut b = TokioResolver::builder_with_config(config, provider);
                b.options_mut().use_hosts_file = ResolveHosts::Never;
                b
            }
            None => TokioResolver::builder(provider)?,
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = 2;
        opts.cache_size = 32_768;
        opts.ndots = 0;
        Ok(HickoryLookup {
            resolver: builder.build(),
        })
    }

    async fn lookup_mx(&self, domain: &str) -> Result<(MxAnswer, Duration), DnsTemporary> {
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let ttl = lookup
                    .as_lookup()
                    .records()
                    .iter()
                    .map(|r| r.ttl())
                    .min()
                    .unwrap_or(300);
                let mut hosts: Vec<MxHost> = lookup
                    .iter()
                    .map(|mx| MxHost {
                        preference: mx.preference(),
                        host: mx
                            .exchange()
                            .to_ascii()
                            .trim_end_matches('.')
                            .to_ascii_lowercase(),
                    })
                    .collect();
                let ttl = Duration::from_secs(u64::from(ttl));
                // RFC 7505: a single MX of "." means the domain accepts no mail.
                if hosts.len() == 1 && hosts[0].host.is_empty() {
                    return Ok((MxAnswer::NoDomain("null MX (RFC 7505)".into()), ttl));
                }
                hosts.retain(|h| !h.host.is_empty());
                if hosts.is_empty() {
                    return Ok((MxAnswer::NoDomain("no usable MX".into()), ttl));
                }
                fastrand::shuffle(&mut hosts);
                hosts.sort_by_key(|h| h.preference);
                Ok((MxAnswer::Hosts(hosts), ttl))
            }
            Err(e) => match negative(&e) {
                Some(Negative::NxDomain(ttl)) => Ok((MxAnswer::NoDomain("NXDOMAIN".into()), ttl)),
                Some(Negative::NoData(ttl)) => self.implicit_mx(domain, ttl).await,
                None => Err(DnsTemporary(format!("MX {domain}: {e}"))),
            },
        }
    }

    /// RFC 5321 §5.1: no MX records → the domain itself, if it has an address.
    async fn implicit_mx(
        &self,
        domain: &str,
        ttl: Duration,
    ) -> Result<(MxAnswer, Duration), DnsTemporary> {
        match self.lookup_addresses(domain).await {
            Ok(addrs) if !addrs.is_empty() => Ok((
                MxAnswer::Hosts(vec![MxHost {
                    preference: 0,
                    host: domain.trim_end_matches('.').to_ascii_lowercase(),
                }]),
                ttl,
            )),
            Ok(_) => Ok((MxAnswer::NoDomain("no MX and no address".into()), ttl)),
            Err(e) => Err(e),
        }
    }

    async fn lookup_addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsTemporary> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        match self.resolver.lookup_ip(fqdn.as_str()).await {
            Ok(ips) => {
                let mut v: Vec<IpAddr> = ips.iter().collect();
                v.sort_by_key(|ip| ip.is_ipv6());
                Ok(v)
            }
            Err(e) if negative(&e).is_some() => Ok(Vec::new()),
            Err(e) => Err(DnsTemporary(format!("address of {host}: {e}"))),
        }
    }
}

enum Negative {
    NxDomain(Duration),
    NoData(Duration),
}

/// NXDOMAIN or NODATA (with the negative TTL), or `None` for a temporary failure.
fn negative(e: &ResolveError) -> Option<Negative> {
    let proto = e.proto()?;
    if let ProtoErrorKind::NoRecordsFound {
        response_code,
        negative_ttl,
        ..
    } = proto.kind()
    {
        let ttl = Duration::from_secs(u64::from(negative_ttl.unwrap_or(60)));
        return match *response_code {
            ResponseCode::NXDomain => Some(Negative::NxDomain(ttl)),
            ResponseCode::NoError => Some(Negative::NoData(ttl)),
            _ => None,
        };
    }
    None
}

impl MxLookup for HickoryLookup {
    fn mx<'a>(
        &'a self,
        domain: &'a str,
    ) -> BoxFuture<'a, Result<(MxAnswer, Duration), DnsTemporary>> {
        Box::pin(self.lookup_mx(domain))
    }

    fn addresses<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsTemporary>> {
        Box::pin(self.lookup_addresses(host))
    }
}
