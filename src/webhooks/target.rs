//! Which webhook targets the daemon may call: a guard against server-side
//! request forgery. Loopback, private, link-local (cloud metadata lives
//! there), shared, unspecified, multicast and documentation addresses are
//! refused unless the operator allows private targets. Names are resolved
//! here and the connection is pinned to the checked address, so a DNS
//! answer that changes between check and connect cannot slip through.

use std::net::{IpAddr, SocketAddr};

/// Why a target is refused (one sentence, for the API and delivery records).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not an http(s) URL with a host.
    #[error("{0} is not an http:// or https:// URL with a host")]
    Malformed(String),
    /// The name does not resolve.
    #[error("cannot resolve {0}: {1}")]
    Unresolved(String, String),
    /// An address the guard refuses.
    #[error("{host} resolves to {addr}, a loopback, private, link-local or metadata address; the daemon refuses such webhook targets unless it runs with --webhook-allow-private")]
    Private {
        /// The URL's host.
        host: String,
        /// The refused address.
        addr: IpAddr,
    },
}

/// A checked target: the URL, its host, and the address to connect to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: reqwest::Url,
    /// The host name (for pinning).
    pub host: String,
    /// The address the connection goes to.
    pub addr: SocketAddr,
}

/// Parses `url`, resolves its host and checks every address.
pub async fn check(url: &str, allow_private: bool) -> Result<Target, TargetError> {
    let malformed = || TargetError::Malformed(url.to_string());
    let parsed = reqwest::Url::parse(url).map_err(|_| malformed())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(malformed());
    }
    let host = parsed.host_str().ok_or_else(malformed)?.to_string();
    let port = parsed.port_or_known_default().ok_or_else(malformed)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| TargetError::Unresolved(host.clone(), e.to_string()))?
            .collect(),
    };
    let first = *addrs
        .first()
        .ok_or_else(|| TargetError::Unresolved(host.clone(), "no addresses".into()))?;
    if !allow_private {
        if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
            return Err(TargetError::Private {
                host,
                addr: bad.ip(),
            });
        }
    }
    Ok(Target {
        url: parsed,
        host: bare.to_string(),
        addr: first,
    })
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || first == 0x0064)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_metadata_addresses_are_not_public() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::",
        ] {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
        for a in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
    }

    #[tokio::test]
    async fn loopback_targets_need_the_operators_consent() {
        let refused = check("http://127.0.0.1:9/hook", false).await.unwrap_err();
        assert!(matches!(refused, TargetError::Private { .. }), "{refused}");
        let metadata = check("http://169.254.169.254/latest", false).await;
        assert!(matches!(metadata, Err(TargetError::Private { .. })));
        let allowed = check("http://127.0.0.1:9/hook", true).await.unwrap();
        assert_eq!(allowed.addr, "127.0.0.1:9".parse().unwrap());
        assert!(matches!(
            check("ftp://example.com/", true).await,
            Err(TargetError::Malformed(_))
        ));
    }
}
