//! The SSRF guard: outgoing HTTP may only reach public internet addresses.
//!
//! Webhook URLs are chosen by users, so without a guard a user could make the server POST to
//! `http://169.254.169.254/` (cloud metadata), `http://127.0.0.1:5432/` or an intranet host.
//! The guard works where the address is actually chosen, in two places:
//!
//! * [`GuardedResolver`], installed as reqwest's DNS resolver, drops every non-public address
//!   from each lookup and fails the lookup when none is left. The check therefore applies to
//!   the very addresses the connection uses, so DNS rebinding (public at validation time,
//!   private at connect time) cannot get past it.
//! * [`check_url`] refuses literal-IP hosts (`http://10.0.0.1/`, `http://[::1]/`, and
//!   `http://0x7f000001/`, which the URL parser normalises to `127.0.0.1`), because hyper
//!   connects to literal IPs without asking the resolver.
//!
//! Redirects are never followed (see [`crate::http`]) and proxies are disabled, so neither can
//! route around the resolver. Rejected: validating the URL's host once when the webhook is
//! registered (defeated by DNS rebinding) and a deny-list on host names (`localhost`,
//! `*.internal`: endless and still bypassable by any name that resolves privately).
//!
//! Policy: IPv4 is public unless it is in a special-purpose range; IPv6 is public only inside
//! global unicast `2000::/3`, minus documentation/Teredo/benchmarking blocks, and addresses that
//! embed an IPv4 address (v4-mapped, NAT64, 6to4) are judged by the embedded address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::ChannelError;

/// `true` when `ip` is a public unicast address that outgoing HTTP may connect to.
///
/// Refused (IPv4): `0.0.0.0/8`, loopback `127/8`, private `10/8`, `172.16/12`, `192.168/16`,
/// CGNAT `100.64/10`, link-local `169.254/16` (incl. cloud metadata), `192.0.0/24`,
/// documentation (`192.0.2/24`, `198.51.100/24`, `203.0.113/24`), benchmarking `198.18/15`,
/// multicast `224/4`, reserved `240/4` and broadcast.
///
/// Refused (IPv6): everything outside `2000::/3` (so `::`, `::1`, `fc00::/7`, `fe80::/10`,
/// `fec0::/10`, `ff00::/8`, `100::/64`), plus `2001:db8::/32` and `3fff::/20` (documentation),
/// `2001::/32` (Teredo), `2001:2::/48` (benchmarking), `2001:10::/28` (ORCHID). `::ffff:a.b.c.d`,
/// `64:ff9b::a.b.c.d` and `2002:aabb:ccdd::/48` are judged by the IPv4 address inside.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let special = a == 0 // "this network", includes 0.0.0.0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (b & 0xc0) == 64) // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || ip.is_documentation()
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18/15
        || ip.is_multicast()
        || a >= 240; // reserved 240/4 and broadcast
    !special
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // NAT64 well-known prefix 64:ff9b::/96: the last 32 bits are the IPv4 destination.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(embedded_v4(s[6], s[7]));
    }
    // Only global unicast 2000::/3; this drops ::, ::1, ::/96 (v4-compatible), fc00::/7,
    // fe80::/10, fec0::/10, ff00::/8 and 100::/64 in one test.
    if (s[0] & 0xe000) != 0x2000 {
        return false;
    }
    // 6to4 2002::/16 tunnels to the IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        return is_public_v4(embedded_v4(s[1], s[2]));
    }
    let special = (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x3fff && (s[1] & 0xf000) == 0) // documentation 3fff::/20
        || (s[0] == 0x2001 && s[1] == 0) // Teredo 2001::/32
        || (s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0) // benchmarking 2001:2::/48
        || (s[0] == 0x2001 && (s[1] & 0xfff0) == 0x0010); // ORCHID 2001:10::/28
    !special
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    let [a, b] = high.to_be_bytes();
    let [c, d] = low.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

/// Refuses a URL whose host is a literal IP that is not public (`allow_private` = tests and
/// deliberately internal deployments). Host names are left to [`GuardedResolver`].
pub fn check_url(url: &Url, allow_private: bool) -> Result<(), ChannelError> {
    if allow_private {
        return Ok(());
    }
    let host = url
        .host_str()
        .ok_or_else(|| ChannelError::permanent("URL has no host"))?;
    // The URL parser has already normalised every IPv4 spelling (`0x7f.1`, `2130706433`) to
    // dotted decimal and wraps IPv6 in brackets; anything else that parses here is a domain.
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let Ok(ip) = literal.parse::<IpAddr>() else {
        return Ok(());
    };
    if is_public_ip(ip) {
        Ok(())
    } else {
        Err(ChannelError::permanent(format!(
            "refused by SSRF guard: {ip} is not a public address"
        )))
    }
}

/// The resolver error that marks a refusal, found again in reqwest's error chain by
/// [`crate::http`] to classify the failure as permanent.
#[derive(Debug, thiserror::Error)]
#[error("refused by SSRF guard: {host} resolves only to non-public addresses")]
pub(crate) struct SsrfRefused {
    host: String,
}

/// A reqwest DNS resolver that keeps only public addresses (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| is_public_ip(addr.ip()))
                .collect();
            if public.is_empty() {
                tracing::warn!(host = %host, "SSRF guard refused a host with no public address");
                return Err(
                    Box::new(SsrfRefused { host }) as Box<dyn std::error::Error + Send + Sync>
                );
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_table() {
        let cases: &[(&str, bool)] = &[
            // IPv4 public
            ("8.8.8.8", true),
            ("1.1.1.1", true),
            ("93.184.216.34", true),
            ("172.15.255.255", true),
            ("172.32.0.1", true),
            ("100.63.255.255", true),
            ("100.128.0.1", true),
            ("169.253.0.1", true),
            ("192.0.1.1", true),
            ("198.17.0.1", true),
            ("198.20.0.1", true),
            ("223.255.255.255", true),
            // IPv4 refused
            ("0.0.0.0", false),
            ("0.1.2.3", false),
            ("127.0.0.1", false),
            ("127.255.255.254", false),
            ("10.0.0.1", false),
            ("10.255.255.255", false),
            ("172.16.0.1", false),
            ("172.31.255.255", false),
            ("192.168.1.1", false),
            ("169.254.169.254", false),
            ("169.254.0.1", false),
            ("100.64.0.1", false),
            ("100.127.255.255", false),
            ("192.0.0.8", false),
            ("192.0.2.1", false),
            ("198.51.100.7", false),
            ("203.0.113.9", false),
            ("198.18.0.1", false),
            ("198.19.255.255", false),
            ("224.0.0.1", false),
            ("239.255.255.250", false),
            ("240.0.0.1", false),
            ("255.255.255.255", false),
            // IPv6 public
            ("2606:4700:4700::1111", true),
            ("2a00:1450:4001:82a::200e", true),
            ("::ffff:8.8.8.8", true),
            ("64:ff9b::808:808", true),
            ("2002:0808:0808::1", true),
            ("3ffe::1", true),
            // IPv6 refused
            ("::", false),
            ("::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:10.0.0.1", false),
            ("::ffff:169.254.169.254", false),
            ("::127.0.0.1", false),
            ("64:ff9b::7f00:1", false),
            ("64:ff9b:1::1", false),
            ("2002:7f00:0001::1", false),
            ("2002:c0a8:0101::1", false),
            ("fc00::1", false),
            ("fd12:3456:789a::1", false),
            ("fe80::1", false),
            ("febf::1", false),
            ("fec0::1", false),
            ("ff02::1", false),
            ("ff0e::1", false),
            ("100::1", false),
            ("2001:db8::1", false),
            ("3fff::1", false),
            ("3fff:0fff::1", false),
            ("2001::1", false),
            ("2001:0:4136:e378::1", false),
            ("2001:2::1", false),
            ("2001:10::1", false),
            ("2001:1f::1", false),
        ];
        for (text, public) in cases {
            let ip: IpAddr = text.parse().expect("test address parses");
            assert_eq!(is_public_ip(ip), *public, "{text}");
        }
    }

    #[test]
    fn literal_hosts_are_checked_names_are_left_to_the_resolver() {
        let cases: &[(&str, bool)] = &[
            ("http://127.0.0.1:8080/hook", false),
            ("http://0x7f000001/hook", false),
            ("http://2130706433/hook", false),
            ("http://127.1/hook", false),
            ("http://[::1]/hook", false),
            ("http://[::ffff:7f00:1]/hook", false),
            ("https://169.254.169.254/latest/meta-data/", false),
            ("https://10.1.2.3/", false),
            ("https://[fe80::1]/", false),
            ("https://8.8.8.8/hook", true),
            ("https://[2606:4700:4700::1111]/", true),
            ("https://localhost/hook", true),
            ("https://hooks.example.com/hook", true),
        ];
        for (text, ok) in cases {
            let url = Url::parse(text).expect("test URL parses");
            let got = check_url(&url, false);
            assert_eq!(got.is_ok(), *ok, "{text}: {got:?}");
            if let Err(e) = got {
                assert!(e.is_permanent() && e.reason().contains("SSRF"), "{e}");
            }
            assert!(check_url(&url, true).is_ok());
        }
    }

    #[tokio::test]
    async fn resolver_drops_loopback_names() {
        let name: Name = "localhost".parse().expect("valid name");
        let err = match GuardedResolver.resolve(name).await {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e,
        };
        assert!(err.downcast_ref::<SsrfRefused>().is_some(), "{err}");
    }
}
